"""Webhook ingress: signed deliveries from the CRM in, raw events out to Kafka, fast.

POST /ingress/bottlecrm, in this order:
1. body larger than BOTTLECRM_WEBHOOK_MAX_BYTES -> 413 (a declared length is refused before
   anything is read; an undeclared one stops reading at the limit)
2. X-BottleCRM-Signature missing -> 401; malformed -> 400; HMAC mismatch -> 401 (forged);
   timestamp outside BOTTLECRM_WEBHOOK_TOLERANCE_SECONDS -> 401 (expired)
3. the same signature accepted before (within the tolerance window) -> 401 (replayed)
4. body not a JSON object with `event` and `id` -> 400
5. publish to bottlecrm.webhook.raw in the standard envelope, event_id = uuid5(delivery id)
   (BottleCRM's retries of one delivery keep that id: the ledger drops a second copy), key =
   the CRM record id; Kafka not taking it within BOTTLECRM_PUBLISH_TIMEOUT_SECONDS -> 503, and
   BottleCRM retries the delivery later (its own backoff)
6. only then the signature is remembered, so a retry after our 503 is not taken for a replay
-> 202. Every outcome is counted in crmhub_ingress_requests_total{system, outcome}.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from connectors.bottlecrm import webhooks
from connectors.bottlecrm.models import Webhook
from connectors.bottlecrm.settings import BottleCrmSettings
from crmhub import topics
from crmhub.errors import TransientError
from crmhub.hub import Hub
from schemas.envelope import Event, Source
from schemas.state import utcnow

log = logging.getLogger(__name__)

SYSTEM = "bottlecrm"
TOPIC = topics.raw(SYSTEM, "webhook")
_NAMESPACE = uuid.UUID("3d7f9a52-6c1e-4b8e-9f0a-2b5c8e1d4a67")
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


class Refused(Exception):
    def __init__(self, status: int, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.outcome, self.reason = status, outcome, reason


def event_id_for(delivery: str) -> uuid.UUID:
    """The envelope id of one BottleCRM delivery: the same for every retry of it."""
    return uuid.uuid5(_NAMESPACE, f"{SYSTEM}:{delivery}")


def create_router(hub: Hub, settings: BottleCrmSettings | None = None) -> APIRouter:
    crm = settings or BottleCrmSettings()
    router = APIRouter()
    kafka_down = False  # since our last 503: the next accepted delivery marks Kafka up

    @router.post("/ingress/bottlecrm", status_code=202)
    async def bottlecrm_webhook(request: Request) -> JSONResponse:
        """A signed BottleCRM webhook delivery (see the module docstring)."""
        nonlocal kafka_down
        try:
            outcome, answer = await _accept(hub, crm, request)
        except Refused as exc:
            hub.metrics.ingress.labels(SYSTEM, exc.outcome).inc()
            log.warning("bottlecrm webhook refused (%s): %s", exc.outcome, exc.reason)
            kafka_down = kafka_down or exc.outcome == "unavailable"
            return JSONResponse({"accepted": False, "reason": exc.reason},
                                status_code=exc.status)
        hub.metrics.ingress.labels(SYSTEM, outcome).inc()
        if kafka_down and outcome == "accepted":
            kafka_down = False
            await hub.target_up("kafka")
        return JSONResponse({"accepted": True, **answer}, status_code=202)

    return router


async def _accept(hub: Hub, crm: BottleCrmSettings, request: Request
                  ) -> tuple[str, dict[str, str]]:
    body = await _read_body(request, crm.webhook_max_bytes)
    try:
        signature = webhooks.verify(
            crm.webhook_secret.get_secret_value(),
            request.headers.get(webhooks.SIGNATURE_HEADER), body, now=time.time(),
            tolerance=crm.webhook_tolerance_seconds)
    except webhooks.SignatureError as exc:
        outcome = ("malformed" if exc.status == 400 else "expired" if "expired" in exc.reason
                   else "missing_signature" if "missing" in exc.reason else "forged")
        raise Refused(exc.status, outcome, exc.reason) from None
    if await hub.db(hub.store.signature_seen, SYSTEM, signature.key):
        raise Refused(401, "replayed", "signature already used (a replayed delivery)")
    hook = _parse(body, request.headers.get(webhooks.DELIVERY_HEADER))
    if hook.event == "ping":  # the CRM's "send test" button: nothing to publish
        await _remember(hub, crm, signature)
        return "ping", {"event": "ping"}
    event = _envelope(hook)
    headers = [("content-type", b"application/json"), ("x-crmhub-type", event.type.encode()),
               ("x-crmhub-origin", SYSTEM.encode()),
               ("x-crmhub-delivery", hook.delivery.encode())]
    try:
        await hub.publish_within(TOPIC, event.to_bytes(), event.key, headers,
                                 crm.publish_timeout_seconds)
    except TransientError as exc:
        await hub.target_down("kafka", hub.redact(str(exc)))
        raise Refused(503, "unavailable", "the hub's broker is unavailable; retry later"
                      ) from None
    await _remember(hub, crm, signature)
    log.info("bottlecrm %s %s accepted", hook.event, event.entity_id,
             extra={"event_id": str(event.event_id)})
    return "accepted", {"event_id": str(event.event_id), "event": hook.event}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "malformed", "Content-Length is not a number")
        if int(declared) > limit:
            raise Refused(413, "too_large", f"body of {declared} bytes exceeds the "
                                            f"{limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, "too_large", f"body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes, delivery: str | None) -> Webhook:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refused(400, "malformed", f"body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Refused(400, "malformed", "body must be a JSON object")
    try:
        hook = Webhook.model_validate({**document, "delivery": delivery or document.get("id")})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_url=False)[:3])
        raise Refused(400, "malformed", f"not a BottleCRM webhook: {problems}") from None
    if hook.event != "ping" and not _EVENT_NAME.fullmatch(hook.event):
        raise Refused(400, "malformed", f"unknown event name {hook.event[:64]!r}")
    return hook


def _envelope(hook: Webhook) -> Event[Webhook]:
    record = hook.record_id
    return Event[Webhook](
        event_id=event_id_for(hook.delivery), type=hook.event,
        entity=hook.event.split(".", 1)[0], entity_id=record,
        occurred_at=hook.created_at or utcnow(), source=Source(system=SYSTEM, id=record),
        origin=SYSTEM, source_updated_at=hook.updated_at, data=hook)


async def _remember(hub: Hub, crm: BottleCrmSettings, signature: webhooks.Signature) -> None:
    # kept past the tolerance: a copy signed at the edge of the window is refused either way
    expires = utcnow() + timedelta(seconds=2 * crm.webhook_tolerance_seconds)
    await hub.db(hub.store.remember_signature, SYSTEM, signature.key, expires)
