"""A real Matrix Synapse for tests and the demo: cached venv, template database, server by PID.

Layout under ``SANDBOX_ROOT`` (``$CRMHUB_SANDBOX_DIR`` or ``<repo>/.sandbox``, git-ignored)::

    synapse-<version>/venv/          matrix-synapse, pinned (stamp: .crmhub-stamp.json)
    synapse-<version>/template/      signing key, homeserver.db with the users and the approval
                                     room already made (stamp.json: room id, user ids)
    synapse-<version>/*.lock, *.log  build lock and the logs of the last install / build

The template is built once: ``--generate-config`` for the keys, our own config (JSON, which
is YAML) bound to 127.0.0.1 with ``trusted_key_servers: []`` and raised rc_* limits, then the
users are made with ``register_new_matrix_user`` and the bot creates the room and the others
join it. Each ``SynapseServer`` copies the template to its own temp dir and listens on a free
port, so runs never share data.

    python -m crmhub.dev.sandbox.synapse prepare     # build, print timings
    python -m crmhub.dev.sandbox.synapse serve       # url, room and users until Ctrl-C
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from crmhub.dev.sandbox.common import (
    SANDBOX_ROOT,
    Venv,
    child_env,
    http_ok,
    kill_group,
    locked,
    read_json,
    run,
    spawn,
    wait_ready,
    write_json,
)
from crmhub.embedded import free_port

VERSION = "1.163.2"
HOME = SANDBOX_ROOT / f"synapse-{VERSION}"
SERVER_NAME = "hub.local"
REQUIREMENTS: tuple[str, ...] = (f"matrix-synapse=={VERSION}",)
#: Bump when the template build changes: the template is rebuilt on the next start.
TEMPLATE_VERSION = 1
START_TIMEOUT = 60.0
STOP_GRACE = 5.0

#: The sandbox's people. Approvers may decide; mallory is in the room but may not.
PASSWORD = "crmhub-sandbox-matrix"
BOT = "crmhub-bot"
APPROVERS = ("alice", "bob")
NON_APPROVER = "mallory"
USERS = (BOT, *APPROVERS, NON_APPROVER)
ROOM_NAME = "Order approvals"

TIMINGS: dict[str, float] = {}
VENV = Venv(HOME / "venv", REQUIREMENTS, (3, 10), "the Synapse sandbox", ("synctl",),
            timings=TIMINGS)


def user_id(localpart: str) -> str:
    return f"@{localpart}:{SERVER_NAME}"


def config(directory: Path, port: int, secrets: dict[str, str]) -> dict[str, Any]:
    """homeserver.yaml for a server living in ``directory`` (JSON is YAML)."""
    lots = {"per_second": 1000, "burst_count": 1000}
    return {
        "server_name": SERVER_NAME,
        "pid_file": str(directory / "homeserver.pid"),
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http",
                       "tls": False, "x_forwarded": False,
                       "resources": [{"names": ["client"], "compress": False}]}],
        "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
        "log_config": str(directory / "log.config"),
        "media_store_path": str(directory / "media_store"),
        "signing_key_path": str(directory / f"{SERVER_NAME}.signing.key"),
        "registration_shared_secret": secrets["registration_shared_secret"],
        "macaroon_secret_key": secrets["macaroon_secret_key"],
        "form_secret": secrets["form_secret"],
        "report_stats": False,
        "enable_registration": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "presence": {"enabled": False},
        "url_preview_enabled": False,
        "rc_message": lots, "rc_registration": lots, "rc_joins": {"local": lots, "remote": lots},
        "rc_login": {"address": lots, "account": lots, "failed_attempts": lots},
        "rc_invites": {"per_room": lots, "per_user": lots, "per_issuer": lots},
        "rc_admin_redaction": lots, "rc_3pid_validation": lots,
        "rc_room_creation": lots,
    }


LOG_CONFIG = {
    "version": 1,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"file": {"class": "logging.FileHandler", "formatter": "plain",
                          "filename": "LOGFILE", "encoding": "utf8"}},
    "root": {"level": "WARNING", "handlers": ["file"]},
    "disable_existing_loggers": False,
}


def _write_config(directory: Path, port: int, secrets: dict[str, str]) -> Path:
    log_config = json.loads(json.dumps(LOG_CONFIG).replace(
        "LOGFILE", str(directory / "homeserver.log")))
    (directory / "log.config").write_text(json.dumps(log_config, indent=2))
    path = directory / "homeserver.yaml"
    path.write_text(json.dumps(config(directory, port, secrets), indent=2))
    return path


def _template_key() -> str:
    stamp = VENV.stamp() or {}
    material = {"freeze": stamp.get("freeze", []), "template": TEMPLATE_VERSION,
                "users": list(USERS), "password": hashlib.sha256(PASSWORD.encode()).hexdigest()}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def template_dir() -> Path:
    return HOME / "template"


def template_info() -> dict[str, Any]:
    stamp = read_json(template_dir() / "stamp.json")
    if stamp is None:
        raise RuntimeError("the Synapse template is not built; call ensure_template()")
    return stamp


def ensure_template() -> dict[str, Any]:
    """Build the venv and the template (once); return its stamp (room id, users, secrets)."""
    started = time.monotonic()
    VENV.ensure()
    key = _template_key()
    stamp = read_json(template_dir() / "stamp.json")
    cached = stamp is not None and stamp.get("key") == key
    if not cached:
        with locked(HOME / "template.lock"):
            stamp = read_json(template_dir() / "stamp.json")
            cached = stamp is not None and stamp.get("key") == key
            if not cached:
                build_started = time.monotonic()
                stamp = _build_template(key)
                TIMINGS["cold_template_seconds"] = time.monotonic() - build_started
    TIMINGS["template_cached"] = 1.0 if cached else 0.0
    TIMINGS["prepare_seconds"] = time.monotonic() - started
    assert stamp is not None
    return stamp


def _build_template(key: str) -> dict[str, Any]:
    target = template_dir()
    work = Path(tempfile.mkdtemp(prefix="template-", dir=HOME))
    log = HOME / "template-build.log"
    log.write_text("")
    try:
        run([VENV.bin("python"), "-m", "synapse.app.homeserver", "--server-name", SERVER_NAME,
             "--config-path", work / "generated.yaml", "--generate-config",
             "--report-stats=no", "--data-directory", work], log, timeout=120,
            env=child_env(), cwd=work)
        generated = (work / "generated.yaml").read_text()
        secrets = {}
        for name in ("registration_shared_secret", "macaroon_secret_key", "form_secret"):
            line = next(line for line in generated.splitlines() if line.startswith(name + ":"))
            secrets[name] = json.loads(line.split(":", 1)[1].strip())
        (work / "generated.yaml").unlink()
        with SynapseServer(directory=work, secrets=secrets, log=log) as server:
            for name in USERS:
                run([VENV.bin("register_new_matrix_user"), "-u", name, "-p", PASSWORD,
                     "--no-admin", "-c", work / "homeserver.yaml", server.url], log,
                    timeout=60, env=child_env(), cwd=work)
            tokens = {name: server.login(name) for name in USERS}
            room = _call(server.url, "POST", "/_matrix/client/v3/createRoom", tokens[BOT], {
                "name": ROOM_NAME, "preset": "private_chat",
                "invite": [user_id(name) for name in USERS if name != BOT]})["room_id"]
            for name in USERS:
                if name != BOT:
                    quoted = urllib.parse.quote(room, safe="")
                    _call(server.url, "POST", f"/_matrix/client/v3/join/{quoted}",
                          tokens[name], {})
            for name, token in tokens.items():  # logins of the build only
                _call(server.url, "POST", "/_matrix/client/v3/logout", token, {})
                del name
        stamp = {"key": key, "room_id": room, "secrets": secrets, "server_name": SERVER_NAME,
                 "bot": user_id(BOT), "approvers": [user_id(n) for n in APPROVERS],
                 "non_approver": user_id(NON_APPROVER), "password": PASSWORD}
        for leftover in ("homeserver.log", "homeserver.pid", "homeserver.yaml", "log.config"):
            (work / leftover).unlink(missing_ok=True)
        write_json(work / "stamp.json", stamp)
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
        return stamp
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _call(url: str, method: str, path: str, token: str | None, body: Any,
          timeout: float = 30.0) -> Any:
    request = urllib.request.Request(url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"synapse {method} {path}: HTTP {exc.code} "
                           f"{exc.read()[:300]!r}") from None


@dataclass
class SynapseServer:
    """One Synapse on 127.0.0.1:<free port>, from a copy of the template (or, during the
    template build, from ``directory`` as it is)."""

    directory: Path | None = None
    secrets: dict[str, str] | None = None
    log: Path | None = None
    port: int | None = None
    start_timeout: float = START_TIMEOUT
    stop_grace: float = STOP_GRACE
    room_id: str = ""
    start_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = None
    _own_directory: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.directory is not None
        return self.log or self.directory / "server.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> Self:
        started = time.monotonic()
        if self.directory is None:
            self.info = ensure_template()
            self.secrets, self.room_id = self.info["secrets"], self.info["room_id"]
            HOME.mkdir(parents=True, exist_ok=True)
            self.directory = Path(tempfile.mkdtemp(prefix="run-", dir=HOME))
            self._own_directory = True
            for item in template_dir().iterdir():
                if item.is_file():
                    shutil.copy2(item, self.directory / item.name)
        assert self.secrets is not None
        try:
            for attempt in range(3):
                self.port = self.port or free_port()
                conf = _write_config(self.directory, self.port, self.secrets)
                if self._spawn(conf, last_attempt=attempt == 2):
                    break
                self.port = None
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        self.start_seconds = time.monotonic() - started
        return self

    def _spawn(self, conf: Path, last_attempt: bool) -> bool:
        assert self.directory is not None
        cmd: list[str | Path] = [VENV.bin("python"), "-m", "synapse.app.homeserver", "-c", conf]
        with self.log_path.open("ab") as out:
            self._proc = spawn(cmd, out, child_env(), cwd=self.directory)
        if wait_ready(self._proc, cmd, self.log_path,
                      functools.partial(http_ok, f"{self.url}/_matrix/client/versions"),
                      self.start_timeout, self.stop_grace, "synapse", last_attempt=last_attempt,
                      server_log=self.directory / "homeserver.log"):
            return True
        self._proc = None
        return False

    def login(self, localpart: str, device_id: str | None = None) -> str:
        """An access token for one of the sandbox's users."""
        body: dict[str, Any] = {"type": "m.login.password", "password": PASSWORD,
                                "identifier": {"type": "m.id.user", "user": localpart}}
        if device_id:
            body["device_id"] = device_id
        return str(_call(self.url, "POST", "/_matrix/client/v3/login", None, body)
                   ["access_token"])

    def stop(self) -> None:
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_group(proc, self.stop_grace)
        if self._own_directory and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crmhub.dev.sandbox.synapse",
                                     description="Matrix Synapse sandbox")
    parser.add_argument("command", choices=["prepare", "serve"])
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            ensure_template()
            state = "cached (warm)" if TIMINGS.get("template_cached") else "built now (cold)"
            print(f"venv:     {VENV.path} ({TIMINGS.get('venv_seconds', 0):.2f} s)")
            print(f"template: {template_dir()} ({state}, this call "
                  f"{TIMINGS['prepare_seconds']:.2f} s)")
            return 0
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        with SynapseServer() as server:
            print(f"url:       {server.url}\nroom:      {server.room_id}")
            print(f"bot:       {user_id(BOT)} / {PASSWORD}")
            print(f"approvers: {', '.join(map(user_id, APPROVERS))}; not: "
                  f"{user_id(NON_APPROVER)}")
            print(f"pid:       {server.pid} (started in {server.start_seconds:.2f} s)",
                  flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while server._proc is not None and server._proc.poll() is None:
                    time.sleep(0.5)
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
