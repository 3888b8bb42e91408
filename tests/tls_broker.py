"""A Tansu broker behind a TLS endpoint on loopback: Debian's stunnel in front of it.

Tansu listens on plain TCP and advertises the stunnel port, so every connection a client
makes after bootstrap (metadata, fetch, produce, group coordination) goes through TLS too.
Each `TlsBroker` is its own pair of processes in their own sessions, stopped by PID.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crmhub.embedded import broker_binary, free_port
from tests.pki import Issued

STUNNEL_HINT = ("Debian's stunnel4 is needed for the Kafka TLS tests: `make test` installs it "
                "(make system-deps), or run `apt-get install -y stunnel4`")


def stunnel_binary() -> str:
    found = shutil.which("stunnel4") or shutil.which("stunnel")
    if found is None:
        pytest.fail(f"no stunnel on PATH. {STUNNEL_HINT}")
    return found


@dataclass
class Endpoint:
    """One TLS listener of the stunnel process, forwarding to the broker."""

    name: str
    server: Issued
    client_ca: Path | None = None  # set: mutual TLS, a client certificate of this CA required
    port: int = field(default_factory=free_port)


@dataclass
class TlsBroker:
    directory: Path
    endpoints: list[Endpoint]
    authentication: bool = False  # Tansu's --authentication: SASL (SCRAM) required
    broker_port: int = field(default_factory=free_port)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def bootstrap_servers(self) -> str:
        """The first endpoint: the one Tansu advertises in its metadata."""
        return f"127.0.0.1:{self.endpoints[0].port}"

    def endpoint(self, name: str) -> str:
        return next(f"127.0.0.1:{e.port}" for e in self.endpoints if e.name == name)

    def start(self) -> TlsBroker:
        advertised = f"tcp://127.0.0.1:{self.endpoints[0].port}"
        broker = [broker_binary(), "broker", "--listener-url",
                  f"tcp://127.0.0.1:{self.broker_port}", "--advertised-listener-url", advertised]
        if self.authentication:
            broker.append("--authentication")
        self._spawn(broker, "tansu.log")
        config = self.directory / "stunnel.conf"
        config.write_text(self._config())
        self._spawn([stunnel_binary(), str(config)], "stunnel.log")
        try:
            for port in (self.broker_port, *(e.port for e in self.endpoints)):
                _wait_for_port(port, self._procs)
        except BaseException:
            self.stop()
            raise
        return self

    def _config(self) -> str:
        lines = ["foreground = yes", "pid =", "debug = notice", f"output = "
                 f"{self.directory / 'stunnel-detail.log'}"]
        for endpoint in self.endpoints:
            lines += [f"[{endpoint.name}]", f"accept = 127.0.0.1:{endpoint.port}",
                      f"connect = 127.0.0.1:{self.broker_port}",
                      f"cert = {endpoint.server.cert}", f"key = {endpoint.server.key}"]
            if endpoint.client_ca is not None:
                lines += [f"CAfile = {endpoint.client_ca}", "verifyChain = yes"]
        return "\n".join(lines) + "\n"

    def _spawn(self, cmd: list[str], log: str) -> None:
        with (self.directory / log).open("ab") as out:
            self._procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL,
                                                start_new_session=True))

    def stop(self) -> None:
        for proc in reversed(self._procs):  # stunnel first, then the broker
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self._procs.clear()


def _wait_for_port(port: int, procs: list[subprocess.Popen[bytes]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"`{' '.join(map(str, proc.args))}` exited with {proc.returncode} "
                            "during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nothing listens on 127.0.0.1:{port} after {timeout}s")
            time.sleep(0.02)
