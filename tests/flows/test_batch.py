"""The step on whole batches: one precheck per batch, outcomes of several messages in one
transaction, and what happens when one message's part of that transaction is refused.

The messages are on the topic before the hub starts, so its first fetch takes them together
(the assertions hold however the broker splits them). Every test runs on SQLite and on
PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from crmhub import topics
from crmhub.embedded import EmbeddedBroker
from crmhub.errors import TransientError
from crmhub.step import Run
from schemas.canonical import Customer
from schemas.envelope import Event
from tests.conftest import HubFactory, eventually, publish
from tests.flows.support import Ledgerbook, customer_event, customer_flow
from tests.flows.test_step import ledger_rows


async def test_mixed_duplicates_stale_and_new_in_one_batch(broker: EmbeddedBroker,
                                                           make_hub: HubFactory) -> None:
    book = Ledgerbook()
    a, b, c = customer_event("a"), customer_event("b"), customer_event("c")
    newer = customer_event("d", "newer").model_copy(update={"entity_version": 5})
    older = customer_event("d", "older").model_copy(update={"entity_version": 4})
    await publish(broker.bootstrap_servers, topics.CUSTOMER, a, b, a, c, newer, b, older, c)
    hub = await make_hub([customer_flow(book)])
    flow = "customer_to_book"
    await eventually(lambda: hub.metrics.duplicates.labels(flow)._value.get() == 3
                     and hub.metrics.stale.labels(flow)._value.get() == 1,
                     message="three duplicates and one stale update recognised")
    assert sorted(book.calls) == ["customer:a", "customer:b", "customer:c", "customer:d"]
    statuses = {r.event_id: r.status for r in ledger_rows(hub, flow)}
    assert statuses == {str(a.event_id): "done", str(b.event_id): "done",
                        str(c.event_id): "done", str(newer.event_id): "done",
                        str(older.event_id): "skipped"}
    assert hub.store.last_version("customer", "d", "book") == newer.version_key()
    assert hub.store.list_dead_letters() == []


async def test_one_refused_bind_dead_letters_only_its_own_message(
        broker: EmbeddedBroker, make_hub: HubFactory) -> None:
    """x and y both claim the ERP record "SHARED": they finish together and their outcomes go
    into one transaction, which the database refuses. Written one by one, the first wins and
    only the second is dead-lettered; the others in the batch are done."""
    book = Ledgerbook()

    async def on_customer(event: Event[Customer], s: Run, sink: Ledgerbook) -> None:
        await s.call(sink.upsert, f"customer:{event.data.id}", event.data.name)
        external = "SHARED" if event.data.id in ("x", "y") else f"E-{event.data.id}"
        s.bind("customer", event.data.id, "book", external)

    events = [customer_event(name) for name in ("p", "x", "q", "y", "r")]
    await publish(broker.bootstrap_servers, topics.CUSTOMER, *events)
    hub = await make_hub([replace(customer_flow(book), handler=on_customer)],
                         workers_per_flow=8)
    [letter] = await eventually(hub.store.list_dead_letters, message="one dead letter")
    await eventually(lambda: len(ledger_rows(hub, "customer_to_book")) == 5,
                     message="every message has an outcome")
    assert letter.error_class == "PermanentError"
    assert "'SHARED' is already bound to" in letter.error_message
    winner = hub.store.canonical_id("customer", "book", "SHARED")
    assert winner in ("x", "y")
    loser = "y" if winner == "x" else "x"
    assert letter.entity_id == loser
    statuses = {r.entity_id: r.status for r in ledger_rows(hub, "customer_to_book")}
    assert statuses == {"p": "done", "q": "done", "r": "done", winner: "done", loser: "dead"}
    for name in ("p", "q", "r"):
        assert hub.store.external_id("customer", name, "book") == f"E-{name}"
    assert hub.store.external_id("customer", loser, "book") is None


async def test_a_failed_group_commit_runs_the_handlers_again_and_loses_nothing(
        broker: EmbeddedBroker, make_hub: HubFactory) -> None:
    book = Ledgerbook()
    events = [customer_event(f"k{i}") for i in range(6)]
    await publish(broker.bootstrap_servers, topics.CUSTOMER, *events)
    hub = await make_hub([customer_flow(book)])
    real_record, refusals = hub.store.record, []

    def flaky_record(outcomes: Any) -> None:
        if len(refusals) < 2:
            refusals.append(len(outcomes))
            raise TransientError("state store unavailable: connection reset", system="state")
        real_record(outcomes)

    hub.store.record = flaky_record  # type: ignore[method-assign]
    await eventually(lambda: len(ledger_rows(hub, "customer_to_book")) == 6, timeout=30,
                     message="every message recorded after the store came back")
    assert refusals, "the store refused at least one write"
    assert sorted(book.created) == sorted(f"customer:k{i}" for i in range(6))
    assert hub.store.list_dead_letters() == []
    assert {r.status for r in ledger_rows(hub, "customer_to_book")} == {"done"}
    assert hub.metrics.retried.labels("customer_to_book")._value.get() >= 1
