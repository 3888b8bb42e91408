"""The hub's HTTP side: /healthz, /readyz, /metrics and /status (served by uvicorn)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from crmhub.hub import Hub


def create_app(hub: Hub) -> FastAPI:
    app = FastAPI(title="crmhub", version="0.1.0", docs_url=None, redoc_url=None)
    started = time.monotonic()

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """The process is alive and serving."""
        return {"status": "ok", "uptime_seconds": round(time.monotonic() - started, 1)}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready to work: broker wired, state store reachable, sweeper running."""
        checks = await asyncio.to_thread(hub.readiness)
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(hub.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/status")
    async def status() -> JSONResponse:
        """What `crmhub status` prints: per-flow counts, parked, dead letters, target outages."""
        summary = await asyncio.to_thread(hub.store.summary)
        for target in summary["targets"]:
            since = target["down_since"]
            target["down_since"] = since.isoformat() if since else None
        return JSONResponse(summary)

    return app


class HttpServer:
    """uvicorn in the hub's event loop; port 0 picks a free port (see .port after start)."""

    def __init__(self, hub: Hub, host: str, port: int) -> None:
        # log_config=None: logging is configured once, by crmhub.logs, not again by uvicorn.
        config = uvicorn.Config(create_app(hub), host=host, port=port, log_config=None,
                                access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None
        self.port = port

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(), name="crmhub-http")
        while not self.server.started:
            if self.task.done():
                await self.task  # raises the bind error
                raise RuntimeError("HTTP server stopped during startup")
            await asyncio.sleep(0.01)
        sockets = self.server.servers[0].sockets
        self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.task is not None:
            self.server.should_exit = True
            await self.task
