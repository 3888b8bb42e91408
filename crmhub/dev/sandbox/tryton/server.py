"""A trytond on 127.0.0.1 serving a private copy of a sandbox template, and what it takes to
have one: prepare() builds, template_info() reads the seed's ids."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from connectors.tryton.client import TrytonClient
from connectors.tryton.settings import TrytonSettings
from crmhub.dev.sandbox.common import failure, kill_group, read_json, spawn, wait_ready
from crmhub.dev.sandbox.tryton.config import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    DATABASE,
    HOME,
    START_TIMEOUT,
    STOP_GRACE,
    TIMINGS,
    ensure_venv,
    trytond_env,
    venv_bin,
    write_conf,
)
from crmhub.dev.sandbox.tryton.postgres import (
    PG_RUN_PREFIX,
    create_run_database,
    drop_run_database,
    ensure_pg_template,
    pg_template_info,
)
from crmhub.dev.sandbox.tryton.sqlite import ensure_template, template_dir
from crmhub.embedded import free_port
from crmhub.errors import PermanentError, TransientError


def template_info(seed: bool = True, backend: str = "sqlite",
                  pg_url: str | None = None) -> dict[str, Any]:
    """The stamp of the built template: key, timings and ``seeded`` (ids the seed created).

    ``{}`` if that template is not built (for PostgreSQL: not in the server of ``pg_url``).
    """
    if backend == "postgresql":
        return pg_template_info(seed, pg_url)
    return read_json(template_dir(seed) / "stamp.json") or {}


@dataclass(frozen=True)
class Prepared:
    venv: Path
    #: the SQLite template file, or the name of the PostgreSQL template database
    template: Path | str
    timings: dict[str, float]


def prepare(seed: bool = True, backend: str = "sqlite", pg_url: str | None = None
            ) -> Prepared:
    """ensure_venv() + the template of ``backend`` ("sqlite" or "postgresql"), with the
    timings of this call and (``cold_*``) of the build that made the template."""
    started = time.monotonic()
    venv = ensure_venv()
    venv_timings = {k: v for k, v in TIMINGS.items() if k.startswith("venv_")}
    template: Path | str
    if backend == "postgresql":
        template = ensure_pg_template(seed, pg_url)
    elif backend == "sqlite":
        template = ensure_template(seed)
    else:
        raise RuntimeError(f"unknown sandbox backend {backend!r}")
    timings = {**TIMINGS, **venv_timings}  # ensure_*_template re-ran ensure_venv (cached)
    timings["prepare_seconds"] = time.monotonic() - started
    return Prepared(venv=venv, template=template, timings=timings)


@dataclass
class TrytonServer:
    """A trytond on 127.0.0.1 serving a private copy of the template database.

    ``with TrytonServer() as erp: ...`` or ``start()`` / ``stop()``. After start: ``url``
    (``http://127.0.0.1:PORT``), ``rpc_url`` (``url/<database>/rpc/``), ``database``,
    ``user``, ``password``, ``pid``, ``port``, ``directory`` (the temp dir), ``log_path``,
    ``seeded`` (the ids the seed created).
    """

    seed: bool = True
    #: "sqlite" (a copied file; sequential writes) or "postgresql" (``CREATE DATABASE
    #: crmhub_tryton_run_... TEMPLATE`` the PostgreSQL template, dropped by stop(); for
    #: concurrency tests and benchmarks: SQLite loses concurrent writes).
    backend: str = "sqlite"
    #: PostgreSQL admin url (backend "postgresql"); None: $CRMHUB_SANDBOX_PG or DEFAULT_PG_URL.
    pg_url: str | None = None
    #: None: a free port is picked (retried if taken); after start() the port it listens on.
    port: int | None = None
    start_timeout: float = START_TIMEOUT
    stop_grace: float = STOP_GRACE
    #: idle seconds before a session expires (trytond's default is 300).
    session_timeout: int = 3600
    #: -v: warnings and errors in the log; 2: also every RPC call.
    verbose: int = 1
    keep_directory: bool = False
    #: "crmhub" (SQLite), or after start() the run database's name (PostgreSQL).
    database: str = DATABASE
    user: str = ADMIN_USER
    password: str = ADMIN_PASSWORD
    directory: Path | None = field(default=None, init=False)
    start_seconds: float = field(default=0.0, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    # -- properties
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the Tryton server is not started")
        return self._proc.pid

    @property
    def url(self) -> str:
        if self._proc is None or self.port is None:
            raise RuntimeError("the Tryton server is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def rpc_url(self) -> str:
        return f"{self.url}/{self.database}/rpc/"

    @property
    def log_path(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the Tryton server is not started")
        return self.directory / "trytond.log"

    @property
    def seeded(self) -> dict[str, Any]:
        """What the seed of this server's template created: ids by name, counts."""
        info = template_info(self.seed, self.backend, self.pg_url)
        seeded: dict[str, Any] = info.get("seeded", {})
        return seeded

    # -- lifecycle
    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError(f"the Tryton server is already started (pid {self._proc.pid})")
        started = time.monotonic()
        if self.backend not in ("sqlite", "postgresql"):
            raise RuntimeError(f"unknown sandbox backend {self.backend!r}")
        self.directory = Path(tempfile.mkdtemp(prefix="crmhub-tryton-"))
        db_dir: Path | None = self.directory / "db"
        if self.backend == "postgresql":
            db_dir = None
            try:
                self.database = create_run_database(self.seed, self.pg_url)
            except BaseException:
                self.stop()
                raise
        else:
            assert db_dir is not None
            template = ensure_template(self.seed)
            db_dir.mkdir()
            shutil.copyfile(template, db_dir / f"{self.database}.sqlite")
        attempts = 1 if self.port is not None else 3
        try:
            for attempt in range(1, attempts + 1):
                port = self.port if self.port is not None else free_port()
                if self._spawn(db_dir, port, last_attempt=attempt == attempts):
                    self.port = port
                    break
        except RuntimeError as exc:
            # the temp dir goes away with stop(): keep the log where the message points
            kept = HOME / "trytond-start-failure.log"
            message = str(exc)
            with contextlib.suppress(OSError):
                shutil.copyfile(self.log_path, kept)
                message = message.replace(str(self.log_path), str(kept))
            self.stop()
            raise RuntimeError(message) from exc
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        self.start_seconds = time.monotonic() - started
        return self

    def _spawn(self, db_dir: Path | None, port: int, last_attempt: bool) -> bool:
        """Start trytond on ``port`` and wait for a login; False if the port was taken."""
        assert self.directory is not None
        conf = self.directory / "trytond.conf"
        write_conf(conf, db_dir, port, pg_url=self.pg_url,
                   session=f"timeout = {self.session_timeout}")
        cmd: list[str | Path] = [venv_bin("trytond"), "-c", conf, "-d", self.database]
        if self.verbose:
            cmd.append("-" + "v" * self.verbose)
        log = self.log_path
        with log.open("ab") as out:  # its own process group: stop() kills it whole
            self._proc = spawn(cmd, out, trytond_env(), cwd=self.directory)
        probe = self._settings(f"http://127.0.0.1:{port}", timeout_seconds=5.0,
                               connect_timeout_seconds=5.0)

        def logged_in() -> bool:
            try:
                return _logs_in(probe)
            except PermanentError as exc:
                raise RuntimeError(failure(cmd, None, log, f"login refused: {exc}")) from exc

        if wait_ready(self._proc, cmd, log, logged_in, self.start_timeout, self.stop_grace,
                      "trytond", last_attempt=last_attempt):
            return True
        self._proc = None
        return False

    def stop(self) -> None:
        """Terminate the server by PID (SIGTERM, SIGKILL after the grace) and remove its dir."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_group(proc, self.stop_grace)
        if self.directory is not None and not self.keep_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        if self.backend == "postgresql" and self.database.startswith(PG_RUN_PREFIX):
            drop_run_database(self.pg_url, self.database)
            self.database = DATABASE

    def halt(self) -> None:
        """Stop the server process but keep its database and port: an ERP outage."""
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_group(proc, self.stop_grace)

    def resume(self) -> None:
        """Start the halted server again on the same port with the same database."""
        if self._proc is not None or self.directory is None or self.port is None:
            raise RuntimeError("resume() needs a halted server")
        db_dir = None if self.backend == "postgresql" else self.directory / "db"
        self._spawn(db_dir, self.port, last_attempt=True)

    def settings(self, **overrides: Any) -> TrytonSettings:
        """The connector's settings that reach this server as its admin; ``overrides`` set
        other TrytonSettings fields (``timeout_seconds=60.0``, say)."""
        return self._settings(self.url, **overrides)

    def _settings(self, url: str, **overrides: Any) -> TrytonSettings:
        values: dict[str, Any] = {"url": url, "database": self.database, "user": self.user,
                                  "password": self.password, **overrides}
        return TrytonSettings(**values)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _logs_in(settings: TrytonSettings) -> bool:
    """True once the connector's client logs in to a starting trytond, False while it does not
    answer yet; PermanentError when it answers but refuses (a wrong password, no such
    database). The client is async and the caller may be inside an event loop (a test that
    halts and resumes the ERP), so it runs on a thread of its own."""

    async def login() -> None:
        async with TrytonClient(settings) as client:
            await client.search("res.user", [], limit=1)  # logs in first

    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(lambda: asyncio.run(login())).result()
    except TransientError as exc:
        if "credentials refused" in str(exc):  # connectors.http: the hub would pause; we stop
            raise PermanentError(str(exc), system=exc.system) from None
        return False
    return True
