"""The change-feed runtime on a real Tansu broker and a real state store (SQLite and
PostgreSQL). The polled system is a fake on purpose: these tests are about the cursor, the
overlap, the dedup, the lease and dead letters, not about a system (tests/connectors/tryton
polls the real Tryton)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from crmhub import topics
from crmhub.errors import MappingError, TransientError
from crmhub.feed import Change, Feed
from schemas.canonical import Shipment
from tests.conftest import HubFactory, eventually, read_topic

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class Record(BaseModel):
    id: int
    state: str
    changed_at: datetime


class FakeSystem:
    """Records with change stamps; read() answers like a system with a server clock."""

    def __init__(self) -> None:
        self.records: dict[int, Record] = {}
        self.reads: list[datetime | None] = []
        self.down = False

    def change(self, record_id: int, state: str, at: datetime) -> None:
        self.records[record_id] = Record(id=record_id, state=state, changed_at=at)

    async def read(self, since: datetime | None) -> list[Record]:
        self.reads.append(since)
        if self.down:
            raise TransientError("connection refused", system="fake")
        return [r for r in self.records.values() if since is None or r.changed_at >= since]


def changes(record: Record) -> list[Change]:
    if record.state == "lost":
        raise MappingError(f"record {record.id} is in an unknown state 'lost'")
    shipment = Shipment(id=f"s-{record.id}", order_id=f"o-{record.id}", state="delivered")
    return [Change("shipment.delivered", shipment.id, shipment, record.state)]


def make_feed(system: FakeSystem) -> Feed[FakeSystem, Record]:
    async def read(client: FakeSystem, since: datetime | None) -> list[Record]:
        return await client.read(since)

    return Feed(name="fake_shipments", system="fake", stream="shipments", model=Record,
                source=lambda: system, read=read, stamp=lambda r: r.changed_at,
                changes=changes, record_id=lambda r: str(r.id))


async def delivered(hub: Any, count: int) -> list[dict[str, Any]]:
    records = await read_topic(hub.bootstrap_servers, topics.SHIPMENT, count, timeout=3)
    return [json.loads(r.value) for r in records]


async def test_overlap_rereads_but_publishes_each_change_once(make_hub: HubFactory) -> None:
    system = FakeSystem()
    system.change(1, "done", T0)
    system.change(2, "done", T0 + timedelta(seconds=5))
    hub = await make_hub([], feeds=[make_feed(system)], poll_interval_seconds=3600,
                         poll_overlap_seconds=60)
    poller = hub.pollers["fake_shipments"]
    await eventually(lambda: hub.store.cursor("fake", "shipments"), message="first poll")
    assert system.reads == [None]  # no cursor yet: read everything
    # a change committed late with a stamp before the cursor is still inside the overlap
    system.change(3, "done", T0 + timedelta(seconds=1))
    assert await poller.poll() == 1
    assert system.reads[-1] == T0 + timedelta(seconds=5) - timedelta(seconds=60)
    assert await poller.poll() == 0  # everything re-read is a duplicate
    events = await delivered(hub, 4)
    assert sorted(e["entity_id"] for e in events) == ["s-1", "s-2", "s-3"]
    assert hub.store.cursor("fake", "shipments") == (T0 + timedelta(seconds=5)).isoformat()


async def test_cursor_survives_a_restart(make_hub: HubFactory) -> None:
    system = FakeSystem()
    system.change(1, "done", T0)
    first = await make_hub([], feeds=[make_feed(system)], poll_interval_seconds=3600,
                           poll_overlap_seconds=0)
    await eventually(lambda: first.store.cursor("fake", "shipments"), message="cursor stored")
    await first.stop()
    second = await make_hub([], feeds=[make_feed(system)], poll_interval_seconds=3600,
                            poll_overlap_seconds=0)
    await eventually(lambda: len(system.reads) >= 2, message="second hub polled")
    assert system.reads[-1] == T0
    assert len(await delivered(second, 2)) == 1


async def test_system_down_pauses_the_feed_and_marks_it(make_hub: HubFactory) -> None:
    system = FakeSystem()
    system.down = True
    system.change(1, "done", T0)
    hub = await make_hub([], feeds=[make_feed(system)], poll_interval_seconds=3600)
    await eventually(lambda: "fake" in {t.system for t in hub.store.targets()
                                        if t.down_since is not None},
                     message="fake marked down")
    system.down = False
    await eventually(lambda: hub.store.cursor("fake", "shipments"), message="resumed")
    assert len(await delivered(hub, 1)) == 1
    assert not [t for t in hub.store.targets() if t.down_since is not None]


async def test_refused_record_is_dead_lettered_once_and_the_feed_moves_on(
        make_hub: HubFactory) -> None:
    system = FakeSystem()
    system.change(1, "lost", T0)
    system.change(2, "done", T0 + timedelta(seconds=1))
    hub = await make_hub([], feeds=[make_feed(system)], poll_interval_seconds=3600,
                         poll_overlap_seconds=60)
    await eventually(lambda: hub.store.cursor("fake", "shipments"), message="first poll")
    await hub.pollers["fake_shipments"].poll()  # re-reads record 1: no second dead letter
    [letter] = hub.store.list_dead_letters()
    assert letter.error_class == "MappingError" and "unknown state 'lost'" in letter.error_message
    assert json.loads(letter.value or b"")["id"] == 1  # the record is kept
    assert [e["entity_id"] for e in await delivered(hub, 2)] == ["s-2"]
    # fixed mapping, replayed from the dead letter: the record goes through the feed again
    hub.pollers["fake_shipments"].feed = replace(make_feed(system), changes=lambda r: changes(
        r.model_copy(update={"state": "done"})))
    hub.store.request_replay(ids=[letter.id])
    hub.wake_sweeper()
    await eventually(lambda: hub.store.get_dead_letter(letter.id).status == "replayed",
                     message="replayed")
    assert sorted(e["entity_id"] for e in await delivered(hub, 3)) == ["s-1", "s-2"]


async def test_only_one_replica_polls_a_stream(make_hub: HubFactory) -> None:
    system = FakeSystem()
    system.change(1, "done", T0)
    first = await make_hub([], feeds=[make_feed(system)], poll_interval_seconds=3600)
    second = await make_hub([], feeds=[make_feed(system)], poll_interval_seconds=3600)
    await eventually(lambda: first.store.cursor("fake", "shipments"), message="polled")
    polled = [await first.pollers["fake_shipments"].poll() == 0,
              await second.pollers["fake_shipments"].poll() == 0]
    leases = {await hub.db(hub.store.lease_stream, "fake", "shipments",
                           hub.pollers["fake_shipments"].owner, timedelta(seconds=30))
              for hub in (first, second)}
    assert leases == {True, False}
    assert all(polled)
    assert len(await delivered(first, 2)) == 1
