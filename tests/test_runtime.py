"""The hub as ops see it: explicit topics, the embedded broker, the HTTP endpoints."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from crmhub import topics
from crmhub.http import HttpServer
from crmhub.hub import Hub
from tests.conftest import HubFactory, eventually, fast_settings, publish
from tests.flows.support import Ledgerbook, customer_event, customer_flow, order_flow


async def test_topics_are_created_explicitly_with_their_partition_counts(
        make_hub: HubFactory) -> None:
    book = Ledgerbook()
    hub = await make_hub([customer_flow(book), order_flow(book)], topic_partitions=3)
    admin = AIOKafkaAdminClient(bootstrap_servers=hub.bootstrap_servers)
    await admin.start()
    try:
        described = {t["topic"]: len(t["partitions"])
                     for t in await admin.describe_topics(list(await admin.list_topics()))}
    finally:
        await admin.close()
    for name in topics.CANONICAL:
        assert described[name] == 3, name
    assert described[topics.dlq(topics.CUSTOMER, "book-customers")] == 1
    assert described[topics.dlq(topics.ORDER, "book-orders")] == 1
    assert await hub.create_topics() == []  # creating again is a no-op


async def test_embedded_broker_restart_is_handled_as_a_fresh_broker(tmp_path: Path) -> None:
    book = Ledgerbook()
    settings = fast_settings(bootstrap_servers="",
                             database_url=f"sqlite:///{tmp_path / 'state.sqlite'}")
    hub = Hub(settings, [customer_flow(book)])
    await hub.start()
    try:
        assert hub.embedded is not None
        assert hub.started_in is not None and hub.started_in < 20
        await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event("before"))
        await eventually(lambda: book.created == ["customer:before"])
        await hub.embedded.kill()
        await eventually(lambda: hub.embedded.restarts == 1, message="broker restarted")
        assert hub.metrics.broker_restarts._value.get() == 1
        await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event("after"))
        await eventually(lambda: "customer:after" in book.created, timeout=30,
                         message="events flow on the fresh broker")
        assert book.created == ["customer:before", "customer:after"]
        assert hub.readiness()["broker"]
    finally:
        await hub.stop()


async def test_health_readiness_metrics_and_status_endpoints(make_hub: HubFactory) -> None:
    book = Ledgerbook()
    hub = await make_hub([customer_flow(book)])
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event("c-1"))
    # done = recorded in the ledger, a moment after the sink call (book.created)
    await eventually(lambda: hub.metrics.succeeded.labels("customer_to_book")._value.get() == 1)
    server = HttpServer(hub, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            health = await client.get("/healthz")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"ready": True,
                                    "checks": {"broker": True, "store": True, "sweeper": True,
                                               "feeds": True}}
            metrics = (await client.get("/metrics")).text
            assert 'crmhub_consumed_total{flow="customer_to_book"} 1.0' in metrics
            assert 'crmhub_succeeded_total{flow="customer_to_book"} 1.0' in metrics
            assert "crmhub_sink_latency_seconds_bucket" in metrics
            status = (await client.get("/status")).json()
            assert status["flows"] == {"customer_to_book": {"done": 1}}
    finally:
        await server.stop()


async def test_readiness_fails_when_the_hub_is_not_running(tmp_path: Path) -> None:
    hub = Hub(fast_settings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}"), [])
    server = HttpServer(hub, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"] is False
    finally:
        await server.stop()
        hub.store.close()


async def test_console_lists_inspects_replays_and_discards_dead_letters(
        make_hub: HubFactory) -> None:
    book = Ledgerbook(reject={"customer:a", "customer:b"})
    hub = await make_hub([customer_flow(book)], console_token="t0ken-for-tests")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event("a"), customer_event("b"))
    await eventually(lambda: len(hub.store.list_dead_letters()) == 2)
    server = HttpServer(hub, "127.0.0.1", 0)
    await server.start()
    try:
        auth = {"Authorization": "Bearer t0ken-for-tests"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}",
                                     headers=auth) as client:
            assert (await client.get("/dead-letters", headers={"Authorization": "Bearer no"})
                    ).status_code == 401
            listed = (await client.get("/dead-letters", params={"flow": "customer_to_book"})
                      ).json()
            assert [row["error_class"] for row in listed] == ["PermanentError"] * 2
            first, second = listed[0]["id"], listed[1]["id"]
            shown = (await client.get(f"/dead-letters/{first}")).json()
            assert shown["value"]["type"] == "customer.upserted"
            assert (await client.get("/dead-letters/999")).status_code == 404
            unauthorized = await client.post("/dead-letters/replay", json={"ids": [first]},
                                             headers={"Authorization": "Bearer wrong"})
            assert unauthorized.status_code == 401
            assert (await client.post("/dead-letters/replay", json={}, headers=auth)
                    ).status_code == 400
            book.reject.clear()
            replayed = await client.post("/dead-letters/replay", json={"ids": [first]},
                                         headers=auth)
            assert replayed.json() == {"queued": 1}
            discarded = await client.post(f"/dead-letters/{second}/discard",
                                          json={"reason": "duplicate account"}, headers=auth)
            assert discarded.json() == {"discarded": True}
            await eventually(lambda: len(book.created) == 1, message="replayed via the console")
            statuses = {r["id"]: r["status"] for r in (await client.get("/dead-letters")).json()}
            assert statuses == {first: "replayed", second: "discarded"}
            assert (await client.get("/parked")).json() == []
    finally:
        await server.stop()


async def test_console_is_off_without_a_token(make_hub: HubFactory) -> None:
    hub = await make_hub([customer_flow(Ledgerbook())])
    server = HttpServer(hub, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            refused = await client.post("/dead-letters/replay", json={"all": True},
                                        headers={"Authorization": "Bearer anything"})
            listing = await client.get("/dead-letters")
        assert refused.status_code == 403 and "CRMHUB_CONSOLE_TOKEN" in refused.text
        assert listing.status_code == 403
    finally:
        await server.stop()


def test_connector_secrets_from_the_environment_are_redacted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRYTON_PASSWORD", "erp-s3cret-pw")
    monkeypatch.setenv("BOTTLECRM_WEBHOOK_SECRET", "whsec-123456")
    monkeypatch.setenv("TRYTON_URL", "http://tryton:8000")  # not a secret: kept
    hub = Hub(fast_settings(database_url=f"sqlite:///{tmp_path / 's.sqlite'}"), [])
    text = hub.redact("login erp-s3cret-pw at http://tryton:8000 signed whsec-123456")
    assert text == "login *** at http://tryton:8000 signed ***"
    hub.store.close()
