"""POST /ingress/bottlecrm on a real hub (Tansu broker, SQLite and PostgreSQL state): signed
deliveries are published once per delivery id, everything else is refused with a reason and
counted, and a broker that does not answer makes it say 503 in seconds (the CRM retries)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from connectors.bottlecrm.models import Webhook
from connectors.bottlecrm.settings import BottleCrmSettings
from connectors.bottlecrm.webhooks import sign
from crmhub import ingress
from crmhub.embedded import EmbeddedBroker
from crmhub.http import HttpServer
from crmhub.hub import Hub
from schemas.envelope import decode_event
from tests.conftest import HubFactory, read_topic

SECRET = "whsec_ingress-test-secret"


def settings(**overrides: Any) -> BottleCrmSettings:
    values: dict[str, Any] = dict(webhook_secret=SECRET, webhook_max_bytes=64 * 1024,
                                  publish_timeout_seconds=1.5, webhook_tolerance_seconds=300)
    values.update(overrides)
    return BottleCrmSettings(**values)


def delivery(event: str = "deal.won", record: str | None = None) -> bytes:
    record = record or str(uuid.uuid4())
    return json.dumps({"id": str(uuid.uuid4()), "event": event,
                       "created_at": "2026-12-01T10:00:00+00:00", "org_id": "org-1",
                       "data": {"id": record, "name": "深圳 pumps", "stage": "CLOSED_WON",
                                "amount": "1234.50", "updated_at": "2026-12-01T10:00:00Z"}},
                      separators=(",", ":"), ensure_ascii=False).encode()


def headers(body: bytes, delivery_id: str, *, secret: str = SECRET, at: float | None = None
            ) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-BottleCRM-Event": "deal.won",
            "X-BottleCRM-Delivery": delivery_id,
            "X-BottleCRM-Signature": sign(secret, int(at or time.time()), body)}


class Ingress:
    def __init__(self, hub: Hub, http: HttpServer) -> None:
        self.hub, self.http = hub, http
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}", timeout=30)

    async def post(self, body: bytes, hdrs: dict[str, str]) -> httpx.Response:
        return await self.client.post("/ingress/bottlecrm", content=body, headers=hdrs)

    def count(self, outcome: str) -> float:
        return float(self.hub.metrics.ingress.labels("bottlecrm", outcome)._value.get())

    async def published(self, count: int, timeout: float = 3.0) -> list[Any]:
        return await read_topic(self.hub.bootstrap_servers, ingress.TOPIC, count, timeout)


@pytest.fixture
async def hub_ingress(make_hub: HubFactory) -> AsyncIterator[Ingress]:
    hub = await make_hub([])
    http = HttpServer(hub, "127.0.0.1", 0, bottlecrm=settings())
    await http.start()
    entry = Ingress(hub, http)
    yield entry
    await entry.client.aclose()
    await http.stop()


async def test_a_delivery_and_the_crms_retry_of_it_are_published_with_one_event_id(
        hub_ingress: Ingress) -> None:
    record, delivery_id = str(uuid.uuid4()), str(uuid.uuid4())
    body = delivery(record=record)
    first = await hub_ingress.post(body, headers(body, delivery_id))
    assert first.status_code == 202, first.text
    retry = await hub_ingress.post(body, headers(body, delivery_id, at=time.time() + 1))
    assert retry.status_code == 202, retry.text  # re-signed: a new signature, not a replay
    records = await hub_ingress.published(2)
    assert len(records) == 2
    events = [decode_event(r.value, Webhook) for r in records]
    assert {e.event_id for e in events} == {ingress.event_id_for(delivery_id)}
    assert {r.key for r in records} == {record.encode()}
    event = events[0]
    assert (event.type, event.entity, event.entity_id) == ("deal.won", "deal", record)
    assert event.data.data["name"] == "深圳 pumps" and event.data.delivery == delivery_id
    assert event.source.system == "bottlecrm" and event.source_updated_at is not None
    assert first.json()["event_id"] == str(ingress.event_id_for(delivery_id))
    assert hub_ingress.count("accepted") == 2


async def test_forged_expired_replayed_malformed_and_huge_deliveries_are_refused(
        hub_ingress: Ingress) -> None:
    body = delivery()
    good = headers(body, "d-1")
    assert (await hub_ingress.post(body, good)).status_code == 202
    cases = [
        ("forged", body, headers(body, "d-2", secret="whsec_guess"), 401, "does not match"),
        ("altered", body.replace(b"1234.50", b"1.00"), good, 401, "does not match"),
        ("expired", body, headers(body, "d-3", at=time.time() - 3600), 401, "expired"),
        ("replayed", body, good, 401, "replayed"),
        ("missing", body, {"Content-Type": "application/json"}, 401, "missing"),
        ("bad header", body, {**good, "X-BottleCRM-Signature": "t=now,v1=00"}, 400,
         "malformed"),
        ("not json", b"{not json", headers(b"{not json", "d-4"), 400, "not JSON"),
        ("not an object", b"[1,2]", headers(b"[1,2]", "d-5"), 400, "JSON object"),
        ("no event", b'{"id":"x"}', headers(b'{"id":"x"}', "d-6"), 400, "event"),
        ("huge", b"x" * 70_000, headers(b"x" * 70_000, "d-7"), 413, "exceeds"),
    ]
    for name, payload, hdrs, status, reason in cases:
        answer = await hub_ingress.post(payload, hdrs)
        assert answer.status_code == status, (name, answer.text)
        assert reason in answer.json()["reason"], (name, answer.text)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: stops at the limit
        for _ in range(100):
            yield b"y" * 1024

    streamed = await hub_ingress.client.post("/ingress/bottlecrm", content=chunks(),
                                             headers=headers(b"", "d-8"))
    assert streamed.status_code == 413
    assert len(await hub_ingress.published(5, timeout=1.0)) == 1  # only the good one
    for outcome, count in (("accepted", 1), ("forged", 2), ("expired", 1), ("replayed", 1),
                           ("missing_signature", 1), ("malformed", 4), ("too_large", 2)):
        assert hub_ingress.count(outcome) == count, outcome
    metrics = (await hub_ingress.client.get("/metrics")).text
    assert 'crmhub_ingress_requests_total{outcome="forged",system="bottlecrm"} 2.0' in metrics
    assert SECRET not in metrics


async def test_a_broker_that_does_not_answer_gets_503_in_seconds_and_the_retry_is_taken(
        hub_ingress: Ingress, broker: EmbeddedBroker) -> None:
    body, delivery_id = delivery(), str(uuid.uuid4())
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)  # the broker hangs: no answer, no refusal
    try:
        started = time.monotonic()
        answer = await hub_ingress.post(body, headers(body, delivery_id))
        took = time.monotonic() - started
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    assert answer.status_code == 503, answer.text
    assert took < 5, f"503 took {took:.1f}s"
    assert hub_ingress.count("unavailable") == 1
    assert [t.system for t in hub_ingress.hub.store.targets() if t.down_since] == ["kafka"]
    # the CRM retries later, signed anew (and even the same signature would not count as a
    # replay: it is remembered only once published)
    for _ in range(50):
        retry = await hub_ingress.post(body, headers(body, delivery_id))
        if retry.status_code == 202:
            break
        await asyncio.sleep(0.2)
    assert retry.status_code == 202, retry.text
    assert not [t for t in hub_ingress.hub.store.targets() if t.down_since]  # up again
    events = [decode_event(r.value, Webhook) for r in await hub_ingress.published(3)]
    assert {e.event_id for e in events} == {ingress.event_id_for(delivery_id)}


async def test_ping_from_the_crms_test_button_is_answered_and_not_published(
        hub_ingress: Ingress) -> None:
    body = json.dumps({"id": "p-1", "event": "ping", "data": {"endpoint_id": "e-1"}}).encode()
    answer = await hub_ingress.post(body, headers(body, "d-ping"))
    assert answer.status_code == 202 and answer.json()["event"] == "ping"
    assert not await hub_ingress.published(1, timeout=0.5)
