"""The hub's HTTP side (uvicorn): /healthz, /readyz, /metrics, /status, the webhook ingress
(POST /ingress/bottlecrm, see crmhub/ingress.py), and the console.

Console (GET /dead-letters, GET /dead-letters/{id}, GET /parked, POST /dead-letters/replay,
POST /dead-letters/{id}/discard) shows payloads and changes state, so every console call
needs `Authorization: Bearer $CRMHUB_CONSOLE_TOKEN`; with no token configured it is off.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from connectors.bottlecrm.settings import BottleCrmSettings
from crmhub import ingress, transport
from crmhub.hub import Hub
from crmhub.store import RawMessage, describe_bytes
from schemas.state import DeadLetter


def create_app(hub: Hub, *, bottlecrm: BottleCrmSettings | None = None) -> FastAPI:
    """`bottlecrm`: the webhook ingress's settings (default: BOTTLECRM_* from the env)."""
    app = FastAPI(title="crmhub", version="0.1.0", docs_url=None, redoc_url=None)
    app.include_router(ingress.create_router(hub, bottlecrm))
    started = time.monotonic()

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """The process is alive and serving."""
        return {"status": "ok", "uptime_seconds": round(time.monotonic() - started, 1)}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready to work: broker wired, state store reachable, sweeper and feeds running."""
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

    def authorize(authorization: str | None) -> None:
        token = hub.settings.console_token.get_secret_value()
        if not token:
            raise HTTPException(403, "the console is off: set CRMHUB_CONSOLE_TOKEN")
        given = (authorization or "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(given, token.encode()):
            raise HTTPException(401, "bad or missing bearer token")

    @app.get("/dead-letters")
    async def dead_letters(flow: str | None = None, status: str | None = None,
                           error_class: str | None = None, limit: int = 100,
                           authorization: str | None = Header(default=None)) -> list[Any]:
        authorize(authorization)
        rows = await asyncio.to_thread(hub.store.list_dead_letters, flow=flow, status=status,
                                       error_class=error_class, limit=min(limit, 1000))
        return [_letter(row) for row in rows]

    @app.get("/dead-letters/{dead_letter_id}")
    async def dead_letter(dead_letter_id: int,
                          authorization: str | None = Header(default=None)) -> dict[str, Any]:
        authorize(authorization)
        row = await asyncio.to_thread(hub.store.get_dead_letter, dead_letter_id)
        if row is None:
            raise HTTPException(404, f"no dead letter #{dead_letter_id}")
        return {**_letter(row), "key": describe_bytes(row.key),
                "value": describe_bytes(row.value),
                "headers": {k: describe_bytes(v)
                            for k, v in RawMessage.headers_from_json(row.headers)}}

    @app.post("/dead-letters/replay")
    async def replay(request: ReplayRequest,
                     authorization: str | None = Header(default=None)) -> dict[str, int]:
        authorize(authorization)
        try:
            count = await asyncio.to_thread(
                hub.store.request_replay, ids=request.ids, flow=request.flow,
                error_class=request.error_class, everything=request.all)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        hub.wake_sweeper()
        return {"queued": count}

    @app.post("/dead-letters/{dead_letter_id}/discard")
    async def discard(dead_letter_id: int, request: DiscardRequest,
                      authorization: str | None = Header(default=None)) -> dict[str, bool]:
        authorize(authorization)
        try:
            done = await asyncio.to_thread(hub.store.discard, dead_letter_id, request.reason)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if not done:
            raise HTTPException(404, f"no dead letter #{dead_letter_id} to discard")
        return {"discarded": True}

    @app.get("/parked")
    async def parked(flow: str | None = None, limit: int = 100,
                     authorization: str | None = Header(default=None)) -> list[dict[str, Any]]:
        authorize(authorization)
        rows = await asyncio.to_thread(hub.store.list_parked, flow=flow, limit=min(limit, 1000))
        return [row.model_dump(mode="json", exclude={"key", "value", "headers"}) for row in rows]

    return app


class ReplayRequest(BaseModel):
    ids: list[int] = []
    flow: str | None = None
    error_class: str | None = None
    all: bool = False


class DiscardRequest(BaseModel):
    reason: str


def _letter(row: DeadLetter) -> dict[str, Any]:
    return row.model_dump(mode="json", exclude={"key", "value", "headers"})


class HttpServer:
    """uvicorn in the hub's event loop; port 0 picks a free port (see .port after start)."""

    def __init__(self, hub: Hub, host: str, port: int, *,
                 bottlecrm: BottleCrmSettings | None = None) -> None:
        # log_config=None: logging is configured once, by crmhub.logs, not again by uvicorn.
        # HTTPS when CRMHUB_HTTP_TLS_CERT_FILE/_KEY_FILE are set (crmhub/transport.py).
        tls = transport.uvicorn_tls_args(hub.settings)
        config = uvicorn.Config(create_app(hub, bottlecrm=bottlecrm), host=host, port=port,
                                log_config=None, access_log=False, lifespan="off", **tls)
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None
        self.host = host
        self.port = port
        self.scheme = "https" if tls else "http"

    @property
    def url(self) -> str:
        """Where the server listens, e.g. https://0.0.0.0:8443 (the port once started)."""
        return f"{self.scheme}://{self.host}:{self.port}"

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
