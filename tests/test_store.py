"""The state store on SQLite and PostgreSQL: migrations, cross-references, dead-letter index."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from crmhub.errors import MissingDependency, PermanentError, TransientError
from crmhub.store import MIGRATIONS, Bind, Outcome, RawMessage, Store


@pytest.fixture
def store(database_url: str) -> Store:
    store = Store(database_url)
    store.migrate()
    yield store
    store.close()


def test_migrations_run_up_down_and_up_again(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    store.migrate()  # idempotent: replicas starting together all call it
    tables = set(inspect(store.engine).get_table_names())
    assert {"xref", "ledger", "cursor", "dead_letter", "parked", "target_status"} <= tables
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert "xref" not in inspect(store.engine).get_table_names()
    store.migrate()
    assert "xref" in inspect(store.engine).get_table_names()
    store.close()


def test_xref_is_unique_per_system_entity_and_external_id(store: Store) -> None:
    store.bind(Bind("customer", "c-1", "erp", "42"))
    store.bind(Bind("customer", "c-1", "erp", "42"))  # same binding again: no-op
    assert store.external_id("customer", "c-1", "erp") == "42"
    assert store.canonical_id("customer", "erp", "42") == "c-1"
    with pytest.raises(PermanentError, match="already bound to 'c-1'"):
        store.bind(Bind("customer", "c-2", "erp", "42"))
    store.bind(Bind("customer", "c-1", "crm", "42"))  # another system may use the same id
    store.bind(Bind("customer", "c-1", "erp", "43"))  # re-created in the ERP: rebinds
    assert store.external_id("customer", "c-1", "erp") == "43"


def test_ledger_and_binds_commit_together(store: Store) -> None:
    store.bind(Bind("customer", "c-9", "erp", "7"))
    with pytest.raises(PermanentError):
        store.commit_success("f", "e-1", "customer", "c-8", [Bind("customer", "c-8", "erp", "7")],
                             1)
    assert store.ledger_status("e-1", "f") is None  # the ledger row rolled back with the bind
    store.commit_success("f", "e-1", "customer", "c-8", [Bind("customer", "c-8", "erp", "8")], 1)
    assert store.ledger_status("e-1", "f") == "done"


def test_record_writes_several_outcomes_in_order_or_none(store: Store) -> None:
    store.bind(Bind("customer", "c-1", "erp", "41", "v01"))
    store.park(flow="f", group_id="g", message=RawMessage("t", 0, 1, b"k", b"v"),
               event_id="e-2", entity="customer", entity_id="c-2",
               waits=MissingDependency("customer", "c-0", "erp"), reason="waiting",
               ttl=timedelta(hours=1))
    store.record([
        Outcome("f", "e-1", "customer", "c-1", "done", (Bind("customer", "c-1", "erp", "42"),)),
        Outcome("f", "e-2", "customer", "c-2", "done", (
            Bind("customer", "c-2", "erp", "41", "v07"),  # 41 was freed by the rebind above
            Bind("customer", "c-2", "erp", "43", "v08"))),  # the last bind of c-2 wins
        Outcome("f", "e-3", "customer", "c-3", "skipped", error="stale"),
    ])
    assert store.external_id("customer", "c-1", "erp") == "42"
    assert store.last_version("customer", "c-1", "erp") == "v01"  # no version: kept
    assert store.external_id("customer", "c-2", "erp") == "43"
    assert store.last_version("customer", "c-2", "erp") == "v08"
    assert store.canonical_id("customer", "erp", "41") is None
    assert [store.ledger_status(e, "f") for e in ("e-1", "e-2", "e-3")] == [
        "done", "done", "skipped"]
    assert store.list_parked() == []  # e-2 is done: its parked row is gone
    with pytest.raises(PermanentError, match="'42' is already bound to 'c-1'"):
        store.record([Outcome("f", "e-4", "customer", "c-4", "done"),
                      Outcome("f", "e-5", "customer", "c-5", "done",
                              (Bind("customer", "c-5", "erp", "42"),))])
    assert store.ledger_status("e-4", "f") is None  # all or nothing


def test_record_keeps_the_content_hash_of_a_bind(store: Store) -> None:
    """Echo suppression reads xref.last_hash: the step's group commit must write it, and a
    later bind without a hash (e.g. a rebind) must keep it."""
    store.record([Outcome("f", "e-1", "customer", "c-1", "done",
                          (Bind("customer", "c-1", "crm", "acc-1", hash="h1"),))])
    assert store.last_hash("customer", "c-1", "crm") == "h1"
    store.record([Outcome("f", "e-2", "customer", "c-1", "done",
                          (Bind("customer", "c-1", "crm", "acc-1"),))])
    assert store.last_hash("customer", "c-1", "crm") == "h1"
    store.record([Outcome("f", "e-3", "customer", "c-1", "done",
                          (Bind("customer", "c-1", "crm", "acc-1", hash="h2"),))])
    assert store.last_hash("customer", "c-1", "crm") == "h2"


def test_inline_lookup_sees_other_writers_and_reopens_after_a_lost_connection(
        store: Store, database_url: str) -> None:
    """Mappings look xrefs up inline through one kept connection: it must hold no snapshot
    or transaction between lookups, and a lost connection must read as a store outage once
    (the step retries), then work again."""
    assert store.external_id("customer", "c-9", "erp") is None
    writer = Store(database_url)
    writer.bind(Bind("customer", "c-9", "erp", "99", hash="h9"))
    assert store.external_id("customer", "c-9", "erp") == "99"
    assert store.last_hash("customer", "c-9", "erp") == "h9"
    if store.engine.dialect.name == "postgresql":
        with writer.engine.connect() as connection:
            states = connection.execute(text(
                "SELECT state FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).scalars().all()
        assert "idle in transaction" not in states
    store._inline._connection.driver_connection.close()  # the server went away
    with pytest.raises(TransientError, match="state store unavailable"):
        store.external_id("customer", "c-9", "erp")
    assert store.external_id("customer", "c-9", "erp") == "99"  # on a new connection
    writer.close()


def test_batch_precheck_answers_like_the_single_one(store: Store) -> None:
    store.commit_success("f", "e-done", "customer", "c-1",
                         [Bind("customer", "c-1", "erp", "1", "v05")], 1)
    store.park(flow="f", group_id="g", message=RawMessage("t", 0, 1, b"k", b"v"),
               event_id="e-parked", entity="customer", entity_id="c-2",
               waits=MissingDependency("customer", "c-0", "erp"), reason="waiting",
               ttl=timedelta(hours=1))
    events = [("e-done", "customer", "c-1"), ("e-parked", "customer", "c-2"),
              ("e-behind", "customer", "c-2"), ("e-new", "customer", "c-3"),
              ("e-update", "customer", "c-1")]
    batch = store.prechecks("f", "erp", events)
    for event_id, entity, entity_id in events:
        assert batch[event_id] == store.precheck("f", event_id, entity, entity_id, "erp")
    assert batch["e-done"].status == "done" and batch["e-update"].last_version == "v05"
    assert batch["e-behind"].ahead is not None and batch["e-parked"].ahead is None


def test_park_claim_and_expire(store: Store) -> None:
    raw = RawMessage("t", 0, 5, b"k", b"v", (("h", b"1"),))
    store.park(flow="f", group_id="g", message=raw, event_id="e-1", entity="order",
               entity_id="o-1", waits=MissingDependency("customer", "c-1", "erp"),
               reason="waiting", ttl=timedelta(hours=1))
    assert store.claim_replayable() == []  # not bound yet
    store.bind(Bind("customer", "c-1", "erp", "1"))
    [claimed] = store.claim_replayable()
    assert claimed.event_id == "e-1" and RawMessage.headers_from_json(claimed.headers) == [
        ("h", b"1")]
    assert store.claim_replayable() == []  # claimed once, even with several replicas
    assert store.requeue_stale_replays(timedelta(0)) == 1
    store.park(flow="f", group_id="g", message=raw, event_id="e-2", entity="order",
               entity_id="o-2", waits=MissingDependency("customer", "c-2", "erp"),
               reason="waiting", ttl=timedelta(seconds=-1))
    assert [p.event_id for p in store.expired_parked()] == ["e-2"]


def test_dead_letter_replay_and_discard(store: Store) -> None:
    raw = RawMessage("t", 1, 9, None, b"{}")
    ids = [store.dead_letter(flow="f", group_id="g", message=raw, event_id=None, entity="",
                             entity_id=None, error=ValueError("bad"), error_text="bad",
                             attempts=1, first_failure_at=store_now()).id for _ in range(3)]
    with pytest.raises(ValueError, match="name dead-letter ids"):
        store.request_replay()
    assert store.request_replay(ids=[ids[0]]) == 1
    assert store.request_replay(ids=[ids[0]]) == 0  # already queued
    with pytest.raises(ValueError, match="needs a reason"):
        store.discard(ids[1], " ")
    assert store.discard(ids[1], "customer deleted in the CRM")
    assert store.get_dead_letter(ids[1]).note == "customer deleted in the CRM"
    assert [d.id for d in store.requested_replays()] == [ids[0]]
    store.mark_replayed(ids[0])
    assert store.requested_replays() == []
    assert store.request_replay(everything=True) == 1  # only ids[2] is still dead
    statuses = {d.id: d.status for d in store.list_dead_letters()}
    assert statuses == {ids[0]: "replayed", ids[1]: "discarded", ids[2]: "replay_requested"}


def test_cursor_and_target_status(store: Store) -> None:
    assert store.cursor("tryton", "invoices") is None
    store.set_cursor("tryton", "invoices", "2026-11-23T00:00:00")
    assert store.cursor("tryton", "invoices") == "2026-11-23T00:00:00"
    store.mark_down("erp", "connection refused")
    first = store.targets()[0].down_since
    store.mark_down("erp", "timeout")
    [target] = store.targets()
    assert target.down_since == first and target.last_error == "timeout"
    assert target.down_since.tzinfo is not None
    store.mark_up("erp")
    assert store.targets()[0].down_since is None


def store_now():  # type: ignore[no-untyped-def]
    from schemas.state import utcnow

    return utcnow()
