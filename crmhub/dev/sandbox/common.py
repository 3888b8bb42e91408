"""What every sandboxed system shares: cached virtualenvs, locked builds, processes by PID.

Each real system the tests and the demo run (Tryton, BottleCRM, Synapse, ...) gets its own
folder under ``SANDBOX_ROOT`` (``$CRMHUB_SANDBOX_DIR`` or ``<repo>/.sandbox``, git-ignored),
its own virtualenv built once from pinned requirements (``Venv``), and its server processes
started in their own process group and stopped by PID (``spawn`` / ``kill_group``).
Everything that fails raises ``RuntimeError`` naming the command, its exit code and the end of
its log; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[3]
SANDBOX_ROOT = Path(os.environ.get("CRMHUB_SANDBOX_DIR") or REPO_ROOT / ".sandbox")
#: The scripts the sandboxes copy next to a system and run with its venv's python.
SCRIPTS = Path(__file__).resolve().parent / "scripts"
LOG_TAIL_LINES = 40
INSTALL_TIMEOUT = 900.0

T = TypeVar("T")


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def failure(cmd: Sequence[str | Path], code: int | None, log: Path, why: str = "") -> str:
    shown = " ".join(str(part) for part in cmd)
    status = "was killed" if code is None else f"exited with code {code}"
    reason = f" ({why})" if why else ""
    return f"`{shown}` {status}{reason}; last lines of {log}:\n{tail(log)}"


def child_env(extra: Mapping[str, str] | None = None,
              drop_prefixes: Sequence[str] = ()) -> dict[str, str]:
    """The caller's environment for a sandboxed program: no PYTHONPATH (the child has its own
    venv), none of the variables starting with ``drop_prefixes``, TZ=UTC, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not (drop_prefixes and k.startswith(tuple(drop_prefixes)))}
    env.pop("PYTHONPATH", None)
    env["TZ"] = "UTC"
    env.update(extra or {})
    return env


def kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the child's process group (it leads its own), SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def spawn(cmd: Sequence[str | Path], out: IO[bytes], env: Mapping[str, str],
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (so kill_group stops it whole), output to ``out``."""
    out.write(f"\n$ {' '.join(str(p) for p in cmd)}\n".encode())
    out.flush()
    try:
        return subprocess.Popen([str(p) for p in cmd], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(env), cwd=cwd,
                                start_new_session=True)
    except OSError as exc:
        raise RuntimeError(f"cannot run `{cmd[0]}`: {exc}") from exc


def wait_until(check: Callable[[], T], timeout: float, expired: Callable[[], str],
               interval: float = 0.1) -> T:
    """Call ``check()`` every ``interval`` seconds until it returns something truthy, and
    return that; after ``timeout`` seconds raise RuntimeError(``expired()``). ``check()`` may
    raise to give up early. The one wait loop of the sandboxes: servers starting, databases
    still busy, locks held by another builder."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(expired())
        time.sleep(interval)


def wait_ready(proc: subprocess.Popen[bytes], cmd: Sequence[str | Path], log: Path,
               ready: Callable[[], bool], timeout: float, grace: float, what: str, *,
               last_attempt: bool = True, server_log: Path | None = None) -> bool:
    """Poll ``ready()`` until it is true (True), the server exits, or ``timeout`` passes.

    An exit whose log says "Address already in use" returns False unless this is the last
    attempt: the caller tries another free port. Every other exit, and the timeout (the
    process group is killed then), raises RuntimeError with the end of the log; a server
    that writes a log of its own names it as ``server_log``. ``ready()`` may raise
    RuntimeError itself to give up early (a refused login, say).
    """

    def started() -> str:
        code = proc.poll()
        if code is not None:
            own = tail(server_log) if server_log is not None else tail(log)
            if not last_attempt and "Address already in use" in own:
                return "port taken"
            extra = f"; its own log:\n{own}" if server_log is not None else ""
            raise RuntimeError(failure(cmd, code, log, f"{what} stopped during start-up{extra}"))
        return "ready" if ready() else ""

    try:
        return wait_until(started, timeout, lambda: failure(
            cmd, proc.returncode, log, f"{what}: no answer within {timeout:.1f} s")) == "ready"
    except RuntimeError:
        kill_group(proc, grace)  # a no-op when it already exited
        raise


def http_ok(url: str, timeout: float = 2.0, *, any_status: bool = False) -> bool:
    """True when ``url`` answers 2xx (or, with ``any_status``, any HTTP status at all)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return any_status
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False


def run(cmd: Sequence[str | Path], log: Path, timeout: float,
        env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
    """Run ``cmd`` to completion, output appended to ``log``; RuntimeError on failure/timeout."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = spawn(cmd, out, env if env is not None else child_env(), cwd)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc, grace=2.0)
            raise RuntimeError(failure(cmd, None, log, f"timed out after {timeout:.0f} s")
                               ) from None
        except BaseException:
            kill_group(proc, grace=2.0)
            raise
    if code != 0:
        raise RuntimeError(failure(cmd, code, log))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) so two processes never build the same thing at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def find_python(minimum: tuple[int, int], purpose: str,
                candidates: Sequence[str | None] = ()) -> str:
    """The real path of a Python >= ``minimum``: $CRMHUB_SANDBOX_PYTHON, the ``candidates``,
    python3 on PATH, this interpreter, then pyenv's versions (newest first)."""
    pyenv = sorted(Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
                   .glob("versions/3.*/bin/python3"), reverse=True)
    tried = [os.environ.get("CRMHUB_SANDBOX_PYTHON"), *candidates,
             *(shutil.which(f"python{minimum[0]}.{minor}") for minor in range(minimum[1], 20)),
             shutil.which("python3"), sys.executable, *map(str, pyenv)]
    probe = f"import sys; print(sys.executable if sys.version_info >= {minimum!r} else '')"
    for candidate in tried:
        if not candidate:
            continue
        try:
            out = subprocess.run([candidate, "-c", probe], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out:
            return out
    raise RuntimeError(
        f"no Python >= {'.'.join(map(str, minimum))} found for {purpose} (tried "
        "$CRMHUB_SANDBOX_PYTHON, python3.X and python3 on PATH, the running interpreter and "
        "pyenv's versions)")


@dataclass
class Venv:
    """A virtualenv at ``path`` with pinned ``requirements``, built once and stamped.

    The stamp (``.crmhub-stamp.json``) holds the requirement list and what pip resolved: a
    changed list wipes the venv and installs again. ``ensure()`` only reads the stamp when the
    venv is cached; ``timings`` records what the last ensure() cost.
    """

    path: Path
    requirements: tuple[str, ...]
    minimum_python: tuple[int, int] = (3, 11)
    purpose: str = "a sandbox"
    #: programs the venv must have (in bin/) to count as built
    programs: tuple[str, ...] = ()
    timeout: float = INSTALL_TIMEOUT
    timings: dict[str, float] = field(default_factory=dict)

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    @property
    def stamp_path(self) -> Path:
        return self.path / ".crmhub-stamp.json"

    def stamp(self) -> dict[str, Any] | None:
        stamp = read_json(self.stamp_path)
        if stamp is None or stamp.get("requirements") != list(self.requirements):
            return None
        if not all(self.bin(name).exists() for name in ("python", *self.programs)):
            return None
        return stamp

    def ensure(self) -> Path:
        started = time.monotonic()
        cached = self.stamp() is not None
        if not cached:
            with locked(self.path.with_name(self.path.name + ".lock")):
                cached = self.stamp() is not None  # another process built it meanwhile
                if not cached:
                    self._install()
        self.timings["venv_seconds"] = time.monotonic() - started
        self.timings["venv_cached"] = 1.0 if cached else 0.0
        return self.path

    def _install(self) -> None:
        log = self.path.with_name(self.path.name + "-install.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        if self.path.exists():
            shutil.rmtree(self.path)
        python = find_python(self.minimum_python, self.purpose)
        try:
            run([python, "-m", "venv", self.path], log, timeout=120)
            run([self.bin("python"), "-m", "pip", "install", "--disable-pip-version-check",
                 "--no-input", "--quiet", *self.requirements], log, timeout=self.timeout)
            freeze = subprocess.run(
                [str(self.bin("python")), "-m", "pip", "freeze", "--disable-pip-version-check"],
                capture_output=True, text=True, timeout=60, check=True, env=child_env(),
            ).stdout.split()
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)  # never leave a half venv that looks ok
            raise
        write_json(self.stamp_path, {"requirements": list(self.requirements), "python": python,
                                     "freeze": sorted(freeze)})
