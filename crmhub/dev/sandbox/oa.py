"""The small OA servers for tests and the demo: aiosmtpd (mail) and Radicale (CalDAV tasks).

Each has its own cached venv under ``SANDBOX_ROOT`` (``aiosmtpd-<v>/venv``,
``radicale-<v>/venv``), a temp dir per run and a free port of 127.0.0.1; they are started in
their own process group and stopped by PID, like the Tryton and Synapse sandboxes.

- ``MailServer``: ``aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Mailbox MAILDIR``;
  ``messages()`` reads what arrived back with ``mailbox.Maildir``.
- ``TaskServer``: Radicale with htpasswd auth (plain) and ``owner_only`` rights; one user
  per ``users`` entry. The caldav client makes its calendars itself.
"""

from __future__ import annotations

import atexit
import email.message
import email.policy
import mailbox
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from crmhub.dev.sandbox.common import (
    SANDBOX_ROOT,
    Venv,
    child_env,
    http_ok,
    kill_group,
    spawn,
    wait_ready,
)
from crmhub.embedded import free_port

AIOSMTPD_VERSION = "1.4.6"
RADICALE_VERSION = "3.9.0"
TIMINGS: dict[str, float] = {}
MAIL_VENV = Venv(SANDBOX_ROOT / f"aiosmtpd-{AIOSMTPD_VERSION}" / "venv",
                 (f"aiosmtpd=={AIOSMTPD_VERSION}",), (3, 9), "the mail sandbox",
                 ("aiosmtpd",), timings={})
TASK_VENV = Venv(SANDBOX_ROOT / f"radicale-{RADICALE_VERSION}" / "venv",
                 (f"radicale=={RADICALE_VERSION}",), (3, 9), "the CalDAV sandbox",
                 ("radicale",), timings={})
TASK_USER = "crmhub"
TASK_PASSWORD = "crmhub-sandbox-tasks"
START_TIMEOUT = 30.0


def _smtp_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.recv(64).startswith(b"220")
    except OSError:
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@dataclass
class _Server:
    """A process on 127.0.0.1:<port> from a venv, in a temp dir of its own."""

    venv: Venv = field(init=False)
    port: int | None = None
    directory: Path | None = None
    start_seconds: float = 0.0
    start_timeout: float = START_TIMEOUT
    #: certificate + key (PEM): the server speaks TLS (STARTTLS for mail, HTTPS for CalDAV)
    tls: tuple[Path, Path] | None = None
    _proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str | Path]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def prepare(self) -> None:
        """Files the server needs in self.directory before it starts."""

    @property
    def log_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "server.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> Self:
        started = time.monotonic()
        self.venv.ensure()
        self.directory = Path(tempfile.mkdtemp(prefix="run-", dir=self.venv.path.parent))
        try:
            self.port = self.port or free_port()
            self.prepare()
            cmd = self.command()
            with self.log_path.open("ab") as out:
                self._proc = spawn(cmd, out, child_env(), cwd=self.directory)
            wait_ready(self._proc, cmd, self.log_path, self.ready, self.start_timeout, 3.0,
                       type(self).__name__)
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_group(proc, 3.0)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@dataclass
class MailServer(_Server):
    """aiosmtpd writing every message it accepts into a Maildir."""

    def __post_init__(self) -> None:
        self.venv = MAIL_VENV

    @property
    def maildir(self) -> Path:
        assert self.directory is not None
        return self.directory / "maildir"

    def command(self) -> list[str | Path]:
        tls: list[str | Path] = ["--tlscert", self.tls[0], "--tlskey", self.tls[1]] \
            if self.tls else []  # STARTTLS offered and required before any mail
        return [self.venv.bin("aiosmtpd"), "-n", "-l", f"127.0.0.1:{self.port}", *tls,
                "-c", "aiosmtpd.handlers.Mailbox", self.maildir]

    def ready(self) -> bool:
        return self.port is not None and _smtp_banner(self.port)

    def messages(self) -> list[email.message.EmailMessage]:
        """Every message received so far, parsed with the modern email policy."""
        box = mailbox.Maildir(self.maildir, factory=None, create=False)
        parsed = []
        for key in box.keys():
            raw = box.get_bytes(key)
            message = email.message_from_bytes(raw, policy=email.policy.default)
            assert isinstance(message, email.message.EmailMessage)
            parsed.append(message)
        return parsed


@dataclass
class TaskServer(_Server):
    """Radicale: htpasswd (plain) auth, owner_only rights, storage in the run's temp dir."""

    user: str = TASK_USER
    password: str = TASK_PASSWORD

    def __post_init__(self) -> None:
        self.venv = TASK_VENV

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def prepare(self) -> None:
        assert self.directory is not None
        (self.directory / "users").write_text(f"{self.user}:{self.password}\n")
        (self.directory / "config").write_text(
            "[server]\n"
            f"hosts = 127.0.0.1:{self.port}\n"
            + (f"ssl = True\ncertificate = {self.tls[0]}\nkey = {self.tls[1]}\n" if self.tls
               else "") +
            "[auth]\n"
            "type = htpasswd\n"
            f"htpasswd_filename = {self.directory / 'users'}\n"
            "htpasswd_encryption = plain\n"
            "delay = 0\n"
            "[rights]\n"
            "type = owner_only\n"
            "[storage]\n"
            f"filesystem_folder = {self.directory / 'collections'}\n"
            "[logging]\n"
            "level = warning\n")

    def command(self) -> list[str | Path]:
        assert self.directory is not None
        return [self.venv.bin("radicale"), "--config", self.directory / "config"]

    def ready(self) -> bool:
        if self.tls:  # a certificate of a test CA: the port answering is enough here
            return self.port is not None and _port_open(self.port)
        return http_ok(self.url, any_status=True)
