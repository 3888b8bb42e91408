"""Change feeds: the pull side of the hub, for systems that cannot push their changes.

A feed polls one stream of one system (posted invoices, payments, shipments ...). Each poll:
1. take the lease on the stream (replicas share one state store; only the holder polls)
2. read the records changed since the stored cursor minus the overlap window, retrying
   TransientError with the hub's backoff while the system is down (status says so)
3. map each record to changes -- (event type, canonical data, version) -- with a pure mapping
4. publish each change whose event id the ledger does not know yet, then record it there
5. move the cursor to the newest change stamp seen (the system's own clock, never ours)

A system that hands out its own opaque position instead (Matrix /sync `next_batch`, a CalDAV
sync token) sets `opaque_cursor`: `read(client, position)` then returns a `Page` -- the records
and the position to read from next -- and the poller stores that position as it is (no overlap).

Re-reading the overlap is cheap and catches changes committed late with an earlier stamp;
event ids derive from (feed, type, entity id, version), so a re-read change gets the id it had
and the ledger drops it. A record the mapping refuses is dead-lettered once per version (the
raw record is kept) and the feed moves on. Publish-then-ledger keeps it at-least-once: a crash
between the two republishes the same id, which downstream ledgers drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from crmhub import topics
from crmhub.errors import PermanentError
from crmhub.store import RawMessage
from schemas.envelope import Event, Source

if TYPE_CHECKING:
    from crmhub.hub import Hub

log = logging.getLogger(__name__)

C = TypeVar("C")  # the connector client a feed reads with
R = TypeVar("R", bound=BaseModel)  # one record as the system gives it

_FEED_NAMESPACE = uuid.UUID("0b6f2d4e-51a3-4d8c-9a0e-7c2f5e8d1a94")


@dataclass(frozen=True)
class Change:
    """One event a record gives rise to. `version` makes it new: the same type, entity and
    version read again is the same event."""

    type: str
    entity_id: str
    data: BaseModel
    version: str


@dataclass(frozen=True)
class Page(Generic[R]):
    """What a feed with an opaque cursor read: the records, and where to read from next."""

    records: Sequence[R]
    position: str


@dataclass(frozen=True)
class Feed(Generic[C, R]):
    """A change feed: which system and stream, how to read changes, how to map a record.

    `read(client, since)` returns the records changed at or after `since` (None: all of them);
    `stamp(record)` is the record's newest change time on the system's clock; `changes` is the
    pure mapping from one record to the events it implies. With `opaque_cursor`,
    `read(client, position)` gets the stored position (None at first) and returns a `Page`.
    """

    name: str
    system: str
    stream: str
    model: type[R]
    source: Callable[[], C]
    read: Callable[[C, Any], Awaitable[Sequence[R] | Page[R]]]
    stamp: Callable[[R], datetime]
    changes: Callable[[R], list[Change]]
    record_id: Callable[[R], str]
    opaque_cursor: bool = False


def event_id_for(feed: str, change: Change) -> uuid.UUID:
    return uuid.uuid5(_FEED_NAMESPACE, f"{feed}:{change.type}:{change.entity_id}:{change.version}")


class Poller(Generic[C, R]):
    """Runs one feed for the hub: a loop of polls every `poll_interval_seconds`."""

    def __init__(self, hub: Hub, feed: Feed[C, R]) -> None:
        self.hub = hub
        self.feed = feed
        self.client = feed.source()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=f"crmhub-feed-{self.feed.name}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        with contextlib.suppress(Exception):  # a store outage: the lease simply expires
            await self.hub.db(self.hub.store.release_stream, self.feed.system,
                              self.feed.stream, self.owner)
        close = getattr(self.client, "aclose", None)
        if close is not None:
            await close()

    def wake(self) -> None:
        """Poll now instead of at the end of the interval (tests, `crmhub` operators)."""
        self._wake.set()

    async def _loop(self) -> None:
        interval = self.hub.settings.poll_interval_seconds
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or a store outage: log it, poll again next round
                log.exception("feed %s: poll failed", self.feed.name)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    async def poll(self) -> int:
        """One poll; returns how many events it published (0 when another replica holds the
        stream's lease)."""
        feed, hub, store = self.feed, self.hub, self.hub.store
        lease = timedelta(seconds=max(30.0, 3 * hub.settings.poll_interval_seconds))
        if not await hub.db(store.lease_stream, feed.system, feed.stream, self.owner, lease):
            return 0
        position = await hub.db(store.cursor, feed.system, feed.stream)
        if feed.opaque_cursor:
            return await self._poll_page(position)
        cursor = datetime.fromisoformat(position) if position else None
        since = cursor - timedelta(seconds=hub.settings.poll_overlap_seconds) if cursor else None
        records = await hub.retrying(feed.system, feed.name, feed.read, self.client, since)
        assert not isinstance(records, Page), f"feed {feed.name}: a Page needs opaque_cursor"
        published = 0
        newest = cursor
        for record in sorted(records, key=feed.stamp):
            published += await self._publish(record)
            stamp = feed.stamp(record)
            newest = stamp if newest is None or stamp > newest else newest
        if newest is not None and newest != cursor:
            await hub.db(store.set_cursor, feed.system, feed.stream, newest.isoformat())
        hub.metrics.feed_polls.labels(feed.name).inc()
        return published

    async def _poll_page(self, position: str | None) -> int:
        feed, hub, store = self.feed, self.hub, self.hub.store
        page = await hub.retrying(feed.system, feed.name, feed.read, self.client, position)
        assert isinstance(page, Page), f"feed {feed.name} has an opaque cursor: read -> Page"
        published = 0
        for record in sorted(page.records, key=feed.stamp):
            published += await self._publish(record)
        if page.position != position:
            await hub.db(store.set_cursor, feed.system, feed.stream, page.position)
        hub.metrics.feed_polls.labels(feed.name).inc()
        return published

    async def replay(self, value: bytes | None) -> int:
        """Map a dead-lettered record again (after a mapping fix): `crmhub dlq replay`."""
        record = self.feed.model.model_validate_json(value or b"")
        return await self._publish(record, replay=True)

    async def _publish(self, record: R, *, replay: bool = False) -> int:
        feed, hub, store = self.feed, self.hub, self.hub.store
        try:
            changes = feed.changes(record)
        except (PermanentError, ValidationError) as exc:
            await self._refuse(record, exc, again=replay)
            return 0
        events = [self._event(record, change) for change in changes]
        done = await hub.db(store.ledger_done, feed.name, [str(e.event_id) for e in events])
        published = 0
        for event in events:
            if str(event.event_id) in done:
                continue
            await hub.publish_event(event, feed.name)
            await hub.db(store.commit_success, feed.name, str(event.event_id), event.entity,
                         event.entity_id, [], 1)
            hub.metrics.succeeded.labels(feed.name).inc()
            log.info("published %s %s", event.type, event.entity_id,
                     extra={"flow": feed.name, "event_id": str(event.event_id)})
            published += 1
        return published

    def _event(self, record: R, change: Change) -> Event[Any]:
        feed = self.feed
        return Event[Any](
            event_id=event_id_for(feed.name, change), type=change.type,
            entity=change.type.split(".", 1)[0], entity_id=change.entity_id,
            source=Source(system=feed.system, id=feed.record_id(record)),
            origin=feed.system, source_updated_at=feed.stamp(record), data=change.data)

    async def _refuse(self, record: R, error: Exception, *, again: bool = False) -> None:
        """Dead-letter a record the mapping refuses, once per record version (a replay that
        fails again dead-letters `again`)."""
        feed, hub, store = self.feed, self.hub, self.hub.store
        record_id = feed.record_id(record)
        marker = Change("refused", record_id, record, feed.stamp(record).isoformat())
        marker_id = str(event_id_for(feed.name, marker))
        refused_before = await hub.db(store.ledger_done, feed.name, [marker_id])
        if marker_id in refused_before and not again:
            return
        raw = RawMessage(topic=topics.poll(feed.system, feed.stream), partition=0, offset=-1,
                         key=record_id.encode(),
                         value=json.dumps(record.model_dump(mode="json"),
                                          ensure_ascii=False).encode(),
                         headers=(("x-crmhub-feed", feed.name.encode()),))
        await hub.dead_letter(feed.name, feed.name, raw, error)
        await hub.db(store.mark_skipped, feed.name, marker_id, feed.stream, record_id,
                     f"refused: {type(error).__name__}")

