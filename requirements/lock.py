"""Regenerate the lock files (`make lock`): every dependency pinned, with its hashes.

    requirements/production.txt  the image: crmhub's dependencies + [oa]
    requirements/build.txt       the image's build stage: the build backend (setuptools)
    requirements/dev.txt         make install / test / demo: + [embedded] + [dev]

The resolution is universal (markers, not this machine's Python) for Python >= 3.11, so the
same files install on the developers' 3.11 and the image's 3.12. Each file starts with the
sha256 of what it was made from: pyproject.toml's dependency tables and the uv arguments.
tests/test_lock.py recomputes it and fails when pyproject.toml changed after the last
`make lock`. Installing needs only pip (`pip install --require-hashes -r ...`); uv is only
needed here, and comes with the dev lock.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = "3.11"
COMMON = ["--generate-hashes", "--universal", "--python-version", PYTHON,
          "--custom-compile-command", "make lock"]
#: lock file -> (source, extra uv arguments)
LOCKS: dict[str, tuple[str, list[str]]] = {
    "production.txt": ("pyproject.toml", ["--extra", "oa"]),
    "dev.txt": ("pyproject.toml", ["--extra", "oa", "--extra", "embedded", "--extra", "dev"]),
    "build.txt": ("build-system", []),
}
STAMP = "# inputs-sha256: "


def inputs_digest(name: str, pyproject: Path = ROOT / "pyproject.toml") -> str:
    """What a lock file depends on: the dependency tables it is made from and how."""
    project = tomllib.loads(pyproject.read_text())
    source, args = LOCKS[name]
    if source == "build-system":
        inputs: object = project["build-system"]["requires"]
    else:
        table = project["project"]
        inputs = {"requires-python": table["requires-python"],
                  "dependencies": table["dependencies"],
                  "optional-dependencies": table.get("optional-dependencies", {})}
    text = json.dumps({"inputs": inputs, "args": [*COMMON, *args]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(STAMP):
            return line[len(STAMP):].strip()
    return None


def compile_lock(name: str, uv: str) -> None:
    source, args = LOCKS[name]
    target = HERE / name
    with tempfile.TemporaryDirectory() as scratch:
        if source == "build-system":
            requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
            source_file = Path(scratch) / "build.in"
            source_file.write_text("\n".join(requires["requires"]) + "\n")
        else:
            source_file = ROOT / source
        subprocess.run([uv, "pip", "compile", str(source_file), *COMMON, *args,
                        "--output-file", str(target), "--quiet"], check=True, cwd=ROOT)
    body = target.read_text().replace(str(source_file.parent) + "/", "")
    target.write_text(f"{STAMP}{inputs_digest(name)}\n{body}")


def main() -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        sys.exit("uv is needed to regenerate the lock files: it comes with the dev lock "
                 "(make install), or pip install uv")
    for name in LOCKS:
        compile_lock(name, uv)
        print(f"wrote requirements/{name}")


if __name__ == "__main__":
    main()
