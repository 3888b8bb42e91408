"""The delivery contract of the shared step, on a real Tansu broker and a real state store
(every test runs on SQLite and on PostgreSQL). The target system is a fake on purpose: these
tests are about the step's logic, not about a system."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from crmhub import topics
from crmhub.errors import PermanentError, TransientError
from crmhub.step import Flow, Run
from schemas.canonical import Order
from schemas.envelope import Event
from schemas.state import DeadLetter, Ledger, Parked
from tests.conftest import HubFactory, eventually, publish, read_topic
from tests.flows.support import (
    Ledgerbook,
    customer_event,
    customer_flow,
    order_event,
    order_flow,
)


def ledger_rows(hub, flow: str) -> list[Ledger]:  # type: ignore[no-untyped-def]
    with Session(hub.store.engine) as s:
        return list(s.exec(select(Ledger).where(Ledger.flow == flow)).all())


async def test_duplicate_delivery_runs_the_sink_once(make_hub: HubFactory) -> None:
    book = Ledgerbook()
    hub = await make_hub([customer_flow(book)])
    event = customer_event("c-1")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, event, event, event)
    await eventually(lambda: hub.metrics.duplicates.labels("customer_to_book")._value.get() == 2,
                     message="two duplicates skipped")
    assert book.calls == ["customer:c-1"]
    assert [r.status for r in ledger_rows(hub, "customer_to_book")] == ["done"]
    assert hub.store.external_id("customer", "c-1", "book") == "B1"


class SimulatedCrash(BaseException):
    """Stands for the process dying between the sink's write and the ledger write."""


async def test_crash_between_sink_and_ledger_does_not_write_twice(make_hub: HubFactory) -> None:
    book = Ledgerbook()
    first = await make_hub([customer_flow(book)])
    real_commit = first.store.record  # where the step writes ledger rows and binds

    def crash(*args: object, **kwargs: object) -> None:
        raise SimulatedCrash()

    first.store.record = crash  # type: ignore[method-assign]
    await publish(first.bootstrap_servers, topics.CUSTOMER, customer_event("c-1"))
    await eventually(lambda: book.calls, message="the sink was called")
    await first.stop()  # the "crashed" hub never acked: the offset stays uncommitted
    first.store.record = real_commit  # type: ignore[method-assign]
    first.broker = first.producer = first._sweeper = first.embedded = None  # already stopped

    second = await make_hub([customer_flow(book)])
    await eventually(lambda: second.store.ledger_status(
        str(customer_event("c-1").event_id), "customer_to_book") or True, timeout=1)
    await eventually(lambda: [r.status for r in ledger_rows(second, "customer_to_book")]
                     == ["done"], message="redelivery finished")
    assert book.calls == ["customer:c-1", "customer:c-1"]  # redelivered and called again ...
    assert book.created == ["customer:c-1"]  # ... but found by reference: one record


async def test_transient_failure_pauses_and_recovers_without_dead_letter(
        make_hub: HubFactory) -> None:
    book = Ledgerbook(down=True)
    hub = await make_hub([customer_flow(book)])
    first, second = customer_event("c-1", "first"), customer_event("c-1", "second")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, first)
    await eventually(lambda: len(book.calls) >= 3, message="retries while the target is down")
    targets = {t.system: t for t in hub.store.targets()}
    assert targets["book"].down_since is not None, "status must say since when it is down"
    assert "refused the connection" in (targets["book"].last_error or "")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, second)
    assert book.created == []  # the partition is paused behind the failing message
    book.down = False
    await eventually(lambda: len(book.created) == 1 and len(ledger_rows(hub, "customer_to_book"))
                     == 2, message="both events processed after recovery")
    assert hub.store.list_dead_letters() == []
    assert hub.metrics.retried.labels("customer_to_book")._value.get() >= 3
    assert {t.system: t for t in hub.store.targets()}["book"].down_since is None
    assert hub.metrics.target_up.labels("book")._value.get() == 1


async def test_retry_after_is_honoured(make_hub: HubFactory) -> None:
    class SlowDown(Ledgerbook):
        async def upsert(self, reference: str, payload: object) -> str:
            self.calls.append(reference)
            if len(self.calls) == 1:
                raise TransientError("429 Too Many Requests", system="book", retry_after=0.6)
            return "B1"

    book = SlowDown()
    hub = await make_hub([customer_flow(book)])
    import time

    started = time.monotonic()
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event("c-1"))
    await eventually(lambda: len(ledger_rows(hub, "customer_to_book")) == 1)
    # Backoff alone would retry after ~0.05 s; Retry-After asked for 0.6 s.
    assert time.monotonic() - started >= 0.6
    assert len(book.calls) == 2


async def test_permanent_failure_dead_letters_with_context_and_next_flows(
        make_hub: HubFactory) -> None:
    book = Ledgerbook(reject={"customer:bad"})
    hub = await make_hub([customer_flow(book)])
    bad, good = customer_event("bad"), customer_event("good")
    # Same key would be needed for the same partition; use one raw key for both.
    await publish(hub.bootstrap_servers, topics.CUSTOMER, bad.to_bytes(), good.to_bytes(),
                  key=b"same-partition")
    await eventually(lambda: "customer:good" in book.created, message="next message flowed")
    [letter] = hub.store.list_dead_letters()
    assert letter.flow == "customer_to_book" and letter.group_id == "book-customers"
    assert letter.topic == topics.CUSTOMER and letter.offset == 0 and letter.partition >= 0
    assert letter.value == bad.to_bytes() and letter.key == b"same-partition"
    assert letter.error_class == "PermanentError"
    assert "quantity must be positive" in letter.error_message
    assert letter.attempts == 1 and letter.event_id == str(bad.event_id)
    assert letter.first_failure_at <= letter.last_failure_at
    assert hub.store.ledger_status(str(bad.event_id), "customer_to_book") == "dead"
    [record] = await read_topic(hub.bootstrap_servers,
                                topics.dlq(topics.CUSTOMER, "book-customers"), 1)
    headers = {k: v.decode() for k, v in record.headers}
    assert record.value == bad.to_bytes()
    assert headers["x-crmhub-error-class"] == "PermanentError"
    assert headers["x-crmhub-source-topic"] == topics.CUSTOMER
    assert headers["x-crmhub-source-offset"] == "0"
    assert headers["x-crmhub-flow"] == "customer_to_book"
    assert headers["x-crmhub-dead-letter-id"] == str(letter.id)


async def test_parked_message_replays_when_its_dependency_is_bound(make_hub: HubFactory) -> None:
    book = Ledgerbook()
    hub = await make_hub([customer_flow(book), order_flow(book)])
    won = order_event("o-1", "c-9", notes="first")
    amended = order_event("o-1", "c-9", notes="second")
    await publish(hub.bootstrap_servers, topics.ORDER, won, amended)
    await eventually(lambda: len(hub.store.list_parked()) == 2, message="both orders parked")
    parked = hub.store.list_parked()
    assert parked[0].waits_entity == "customer" and parked[0].waits_id == "c-9"
    assert "behind parked event" in parked[1].reason  # per-key order: waits behind the first
    assert book.calls == []

    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event("c-9"))
    await eventually(lambda: book.records.get("order:o-1"), message="order replayed")
    await eventually(lambda: hub.store.list_parked() == [], message="parked rows cleared")
    assert book.created == ["customer:c-9", "order:o-1"]
    assert [c for c in book.calls if c.startswith("order")] == ["order:o-1", "order:o-1"]
    statuses = {r.event_id: r.status for r in ledger_rows(hub, "order_to_book")}
    assert statuses == {str(won.event_id): "done", str(amended.event_id): "done"}
    # The follow-up event went out once per order event, with ids derived from the cause.
    accepted = await read_topic(hub.bootstrap_servers, topics.ORDER, 4)
    types = [json.loads(r.value)["type"] for r in accepted]
    assert types.count("order.accepted") == 2


async def test_parked_message_expires_into_the_dead_letters(make_hub: HubFactory) -> None:
    book = Ledgerbook()
    hub = await make_hub([order_flow(book)], park_ttl_seconds=0.3)
    await publish(hub.bootstrap_servers, topics.ORDER, order_event("o-1", "nobody"))
    [letter] = await eventually(hub.store.list_dead_letters, message="expired park dead-lettered")
    assert letter.error_class == "ParkExpired"
    assert "customer 'nobody' is not yet bound in book" in letter.error_message
    assert hub.store.list_parked() == []
    assert book.calls == []


async def test_parked_message_whose_dependency_was_dead_lettered_is_dead_lettered_naming_it(
        make_hub: HubFactory) -> None:
    book = Ledgerbook(reject={"customer:c-bad"})
    hub = await make_hub([customer_flow(book), order_flow(book)], park_ttl_seconds=3600)
    doomed = order_event("o-1", "c-bad")
    await publish(hub.bootstrap_servers, topics.ORDER, doomed, order_event("o-2", "c-good"))
    await eventually(lambda: len(hub.store.list_parked()) == 2, message="both orders parked")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event("c-bad"))
    letters = await eventually(lambda: len(hub.store.list_dead_letters()) == 2
                               and hub.store.list_dead_letters(), message="two dead letters")
    [customer, order] = sorted(letters, key=lambda letter: letter.flow)
    assert (customer.flow, customer.error_class) == ("customer_to_book", "PermanentError")
    assert (order.flow, order.error_class, order.event_id) == (
        "order_to_book", "DependencyDead", str(doomed.event_id))
    assert (f"waited for customer 'c-bad' in book, whose message customer_to_book "
            f"dead-lettered (dead letter #{customer.id}): PermanentError: ledgerbook refused "
            "customer:c-bad") in order.error_message
    # an order waiting for a customer whose message is fine keeps waiting, and goes on
    [waiting] = hub.store.list_parked()
    assert waiting.entity_id == "o-2"
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event("c-good"))
    await eventually(lambda: book.records.get("order:o-2"), message="o-2 replayed and placed")
    assert "order:o-1" not in book.calls


async def test_a_refusal_carries_its_follow_up_with_the_dead_letter(
        make_hub: HubFactory) -> None:
    async def refuse(event: Event[Order], s: Run, book: Ledgerbook) -> None:
        refusal = PermanentError("the target cannot hold 2900.00, it computed 2900.01")
        refusal.telling(s.follow_up("order.refused", event.data.model_copy(
            update={"refusal": str(refusal)})))
        raise refusal

    flow = Flow(name="order_refuser", topic=topics.ORDER, group="refuser",
                accepts=frozenset({"order.won"}), model=Order, handler=refuse,
                sink=Ledgerbook, target="book")
    hub = await make_hub([flow])
    won = order_event("o-1", "c-1")
    await publish(hub.bootstrap_servers, topics.ORDER, won)
    [letter] = await eventually(hub.store.list_dead_letters, message="refusal dead-lettered")
    assert "it computed 2900.01" in letter.error_message
    records = await read_topic(hub.bootstrap_servers, topics.ORDER, 2)
    [refused] = [json.loads(r.value) for r in records if json.loads(r.value)["type"]
                 == "order.refused"]
    assert refused["causation_id"] == str(won.event_id)
    assert refused["data"]["refusal"] == "the target cannot hold 2900.00, it computed 2900.01"


async def test_dlq_replay_reprocesses_exactly_the_chosen_messages(make_hub: HubFactory) -> None:
    book = Ledgerbook(reject={"customer:a", "customer:b", "customer:c"})
    hub = await make_hub([customer_flow(book)])
    events = [customer_event(name) for name in ("a", "b", "c")]
    await publish(hub.bootstrap_servers, topics.CUSTOMER, *events)
    letters = await eventually(lambda: len(hub.store.list_dead_letters()) == 3
                               and hub.store.list_dead_letters(), message="three dead letters")
    book.reject.clear()  # the target was fixed; replay only "b"
    chosen = next(letter for letter in letters if letter.event_id == str(events[1].event_id))
    assert hub.store.request_replay(ids=[chosen.id]) == 1
    await eventually(lambda: book.created == ["customer:b"], message="b re-processed")
    await eventually(lambda: hub.store.get_dead_letter(chosen.id).status == "replayed")
    # Give any wrong replay time to show up, then check nothing else moved.
    await eventually(lambda: hub.metrics.replayed.labels("customer_to_book", "dlq")._value.get()
                     == 1)
    others = [hub.store.get_dead_letter(letter.id) for letter in letters if letter != chosen]
    assert [o.status for o in others] == ["dead", "dead"]
    assert book.created == ["customer:b"]
    await eventually(lambda: hub.store.ledger_status(str(events[1].event_id), "customer_to_book")
                     == "done", message="the replayed event's ledger row is done")
    # Replay by filter takes the rest.
    assert hub.store.request_replay(flow="customer_to_book") == 2
    await eventually(lambda: sorted(book.created) == ["customer:a", "customer:b", "customer:c"])


async def test_per_key_order_is_kept_under_concurrency(make_hub: HubFactory) -> None:
    book = Ledgerbook(delay=0.01)
    seen: dict[str, list[str]] = {}

    async def upsert(reference: str, payload: object) -> str:
        await Ledgerbook.upsert(book, f"{reference}:{payload}", payload)
        seen.setdefault(reference, []).append(str(payload))
        return reference

    flow = customer_flow(book)
    from dataclasses import replace

    async def on_customer(event, s, sink):  # type: ignore[no-untyped-def]
        await s.call(upsert, event.data.id, event.data.name)

    hub = await make_hub([replace(flow, handler=on_customer)], workers_per_flow=4)
    keys = [f"k{i}" for i in range(12)]
    events = [customer_event(key, f"{n:02d}") for n in range(8) for key in keys]
    await publish(hub.bootstrap_servers, topics.CUSTOMER, *events)
    await eventually(lambda: sum(len(v) for v in seen.values()) == len(events), timeout=30,
                     message="all events handled")
    for key in keys:
        assert seen[key] == [f"{n:02d}" for n in range(8)], f"order broken for {key}"
    assert book.max_active > 1, "partitions should be handled side by side"
    assert book.max_active <= 4, "bounded by workers_per_flow"


@pytest.mark.parametrize("count", [1])
async def test_replayed_message_is_not_reprocessed_by_other_flows(
        make_hub: HubFactory, count: int) -> None:
    """A DLQ replay for one flow must not make a second flow on the same topic act again."""
    book, other = Ledgerbook(reject={"customer:x"}), Ledgerbook()
    from dataclasses import replace

    second = replace(customer_flow(other), name="customer_to_other", group="other-customers",
                     target="other")
    hub = await make_hub([customer_flow(book), second])
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event("x"))
    [letter] = await eventually(hub.store.list_dead_letters)
    await eventually(lambda: other.created == ["customer:x"])
    book.reject.clear()
    hub.store.request_replay(ids=[letter.id])
    await eventually(lambda: book.created == ["customer:x"])
    await eventually(lambda: hub.metrics.duplicates.labels("customer_to_other")._value.get()
                     + hub.metrics.consumed.labels("customer_to_other")._value.get() >= 2)
    assert other.calls == ["customer:x"] * count


async def test_parked_rows_survive_in_the_store(make_hub: HubFactory) -> None:
    book = Ledgerbook()
    hub = await make_hub([order_flow(book)])
    await publish(hub.bootstrap_servers, topics.ORDER, order_event("o-7", "c-7"))
    [row] = await eventually(hub.store.list_parked)
    assert isinstance(row, Parked) and row.state == "waiting" and row.value
    with Session(hub.store.engine) as s:
        assert s.exec(select(DeadLetter)).all() == []


async def test_stale_update_is_skipped(make_hub: HubFactory) -> None:
    book = Ledgerbook()
    hub = await make_hub([customer_flow(book)])
    newer = customer_event("c-1", "newer").model_copy(update={"entity_version": 5})
    older = customer_event("c-1", "older").model_copy(update={"entity_version": 4})
    await publish(hub.bootstrap_servers, topics.CUSTOMER, newer, older)
    await eventually(lambda: hub.metrics.stale.labels("customer_to_book")._value.get() == 1,
                     message="older update recognised as stale")
    assert book.calls == ["customer:c-1"]
    assert hub.store.ledger_status(str(older.event_id), "customer_to_book") == "skipped"
    assert hub.store.last_version("customer", "c-1", "book") == newer.version_key()


async def test_an_outcome_the_store_cannot_record_pauses_instead_of_losing_it(
        make_hub: HubFactory) -> None:
    book = Ledgerbook(reject={"customer:bad"})
    hub = await make_hub([customer_flow(book)])
    real_dead_letter, failures = hub.store.dead_letter, []

    def flaky_dead_letter(**kwargs):  # type: ignore[no-untyped-def]
        if len(failures) < 2:
            failures.append(1)
            raise RuntimeError("state store refused the write")
        return real_dead_letter(**kwargs)

    hub.store.dead_letter = flaky_dead_letter  # type: ignore[method-assign]
    bad, good = customer_event("bad"), customer_event("good")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, bad.to_bytes(), good.to_bytes(),
                  key=b"one-lane")
    [letter] = await eventually(hub.store.list_dead_letters, message="dead letter recorded")
    assert letter.event_id == str(bad.event_id) and len(failures) == 2
    await eventually(lambda: "customer:good" in book.created, message="lane moved on after")
