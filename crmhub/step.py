"""The one shared flow step: every flow's handler runs inside it.

For each consumed message, in this order:
1. decode the envelope (not JSON / invalid / unknown schema_version -> dead letter)
2. ledger check: (event_id, flow) already done -> skip (a redelivery)
3. if an earlier message of the same entity is parked in this flow, park behind it
4. run the flow's handler; connector calls go through `Run.call`, which retries
   TransientError with exponential backoff and jitter (honouring Retry-After) for as long as
   the target is down -- the partition pauses, nothing is dead-lettered
5. publish the events the handler emitted (ids derived from the cause, so a redelivery
   re-emits the same ids and downstream ledgers drop them) and wait for the broker's acks
6. write ledger row + cross-references in one transaction
7. commit the Kafka offset (manual ack; never nack, which seeks back and spins)

A fetched batch is decoded and prechecked at once (a few queries for the whole batch), and the
ledger rows and cross-references of messages that finish together are written in one
transaction (group commit, `Recorder`); each message still waits for its own outcome to be
written before its lane moves on, and the offset is committed after all of them.

MissingDependency parks the message (replayed when the awaited xref is bound, dead-lettered
when the park expires); PermanentError, MappingError and any unexpected exception
dead-letter at once with full context, so the partition never stalls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from aiokafka.errors import CommitFailedError, IllegalStateError
from pydantic import BaseModel, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_base, wait_exponential, wait_random

from crmhub.errors import DecodeError, MissingDependency, PermanentError, TransientError
from crmhub.store import Bind, Outcome, Precheck, RawMessage
from schemas.envelope import Event, Source, decode_event
from schemas.state import LedgerStatus, utcnow

if TYPE_CHECKING:
    from faststream.kafka.message import KafkaMessage

    from crmhub.hub import Hub

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
S = TypeVar("S")

# Header set on replayed messages: only the named flow re-processes a message it has seen.
REPLAY_FOR = "x-crmhub-replay-for"
REPLAY_KIND = "x-crmhub-replay"


@dataclass(frozen=True)
class Flow(Generic[M, S]):
    """A synchronizer: which topic and events it takes, and what it does with each one.

    `sink` builds the connector client the handler receives (tests swap it for a fake only
    where the test is about the flow); `target` names the system for status and metrics.
    """

    name: str
    topic: str
    group: str
    accepts: frozenset[str]
    model: type[M]
    handler: Callable[[Event[M], Run, S], Awaitable[None]]
    sink: Callable[[], S]
    target: str


class WaitRetryAfterOrBackoff(wait_base):
    """Retry-After when the target said so, else exponential backoff with jitter."""

    def __init__(self, initial: float, maximum: float, jitter: float) -> None:
        self.maximum = maximum
        self.backoff = wait_exponential(multiplier=initial, max=maximum) + wait_random(0, jitter)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return float(min(max(retry_after, 0.0), 3600.0))
        return float(self.backoff(retry_state))


class Xrefs:
    """The one lookup a mapping may do: canonical id -> external id, or MissingDependency."""

    def __init__(self, run: Run) -> None:
        self._run = run

    def get(self, entity: str, canonical_id: str, system: str) -> str | None:
        for bind in self._run.binds:
            if (bind.entity, bind.canonical_id, bind.system) == (entity, canonical_id, system):
                return bind.external_id
        return self._run.step.hub.store.external_id(entity, canonical_id, system)

    def last_hash(self, entity: str, canonical_id: str, system: str) -> str | None:
        """The content hash last bound for this entity in `system` (see Run.bind)."""
        for bind in reversed(self._run.binds):
            if (bind.entity, bind.canonical_id, bind.system) == (entity, canonical_id, system):
                if bind.hash is not None:
                    return bind.hash
        return self._run.step.hub.store.last_hash(entity, canonical_id, system)

    def require(self, entity: str, canonical_id: str, system: str) -> str:
        external = self.get(entity, canonical_id, system)
        if external is None:
            raise MissingDependency(entity, canonical_id, system)
        return external


@dataclass
class Run:
    """What a handler gets besides the event: xref lookups, retried calls, binds and emits.

    `attempts` counts connector call attempts in this run (retries included).
    """

    step: Step[Any, Any]
    event: Event[Any]
    binds: list[Bind] = field(default_factory=list)
    emitted: list[Event[Any]] = field(default_factory=list)
    attempts: int = 0

    @property
    def xref(self) -> Xrefs:
        return Xrefs(self)

    async def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """Call the connector; retry TransientError until it succeeds (the flow pauses)."""
        flow = self.step.flow
        started = time.monotonic()
        result = await self.step.hub.retrying(flow.target, flow.name, self._counted, fn,
                                              *args, **kwargs)
        self.step.hub.metrics.sink_latency.labels(flow.name, flow.target).observe(
            time.monotonic() - started)
        return result

    async def _counted(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        self.attempts += 1
        return await fn(*args, **kwargs)

    def bind(self, entity: str, canonical_id: str, system: str, external_id: str,
             version: str | None = None, *, hash: str | None = None) -> None:
        """Record canonical id <-> external id; written with the ledger row in one transaction.

        Binding the event's own entity records the event's version, so older updates that
        arrive later are recognised as stale and skipped. `hash` records the content synced
        (xref.last_hash): a flow compares it to tell a real change from its own echo.
        """
        if version is None and (entity, canonical_id) == (self.event.entity, self.event.entity_id):
            version = self.event.version_key()
        self.binds.append(Bind(entity, canonical_id, system, str(external_id), version, hash))

    def emit(self, event: Event[Any]) -> None:
        self.emitted.append(event)

    def follow_up(self, type: str, data: BaseModel, *, source_id: str = "",
                  entity_id: str | None = None) -> Event[Any]:
        """An event caused by the one being handled, sourced from this flow's target system."""
        return self.event.follow_up(type, data, by=self.step.flow.name, entity_id=entity_id,
                                    source=Source(system=self.step.flow.target, id=source_id))


@dataclass
class Decoded:
    """A consumed message, decoded once per batch: the event, or why it cannot be one."""

    raw: RawMessage
    event: Event[Any] | None
    error: DecodeError | None
    replay_for: str
    precheck: Precheck | None = None  # read for the whole batch, before any lane ran

    def keys(self) -> set[tuple[str, str]]:
        if self.event is None:
            return set()
        return {("entity", self.event.entity_id), ("event", str(self.event.event_id))}


class Recorder:
    """Group commit of outcomes: the lanes of a flow hand their done/skipped outcomes here
    and wait; whatever has gathered while the previous write ran goes in the next transaction.

    A write the database refuses is retried one outcome at a time, so only the message whose
    bind or row was refused gets the error (and, through the step, its usual handling:
    TransientError runs its handler again, PermanentError dead-letters it).
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._pending: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, outcome: Outcome) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending(), name="crmhub-recorder")
        await asyncio.shield(done)  # a cancelled lane leaves the write to finish for others

    async def drain(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_pending(self) -> None:
        group: list[tuple[Outcome, asyncio.Future[None]]] = []
        try:
            while self._pending:
                await asyncio.sleep(0)  # lanes finishing in this loop turn join the group
                group, self._pending = self._pending, []
                await self._write(group)
                group = []
        except BaseException as exc:  # going down: every waiting lane hears it, none commits
            for _, done in [*group, *self._pending]:
                _settle(done, exc)
            self._pending = []
            raise
        finally:
            self._writer = None

    async def _write(self, group: list[tuple[Outcome, asyncio.Future[None]]]) -> None:
        store = self.hub.store
        try:
            await self.hub.db(store.record, [outcome for outcome, _ in group])
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0][1], exc)
                return
            for outcome, done in group:  # find whose outcome the database refused
                try:
                    await self.hub.db(store.record, [outcome])
                except Exception as one:
                    _settle(done, one)
                else:
                    _settle(done, None)
        else:
            for _, done in group:
                _settle(done, None)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if isinstance(error, asyncio.CancelledError):
        done.cancel()
    elif error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


class Step(Generic[M, S]):
    def __init__(self, hub: Hub, flow: Flow[M, S]) -> None:
        self.hub = hub
        self.flow = flow
        self.sink = flow.sink()
        # Bounds the handlers (connector calls) running at once; a message waiting for the
        # broker's acks or for its group commit does not hold a slot.
        self.slots = asyncio.Semaphore(hub.settings.workers_per_flow)
        self.recorder = Recorder(hub)

    async def handle_batch(self, message: KafkaMessage) -> None:
        """faststream entry point for one fetched batch: per-key lanes, then one commit.

        The batch is decoded and prechecked up front. Messages with the same key (the entity
        id) run one after another in offset order; different keys run side by side, at most
        workers_per_flow handlers at a time. The offset is committed once every message of
        the batch has its outcome recorded. Cancellation skips the commit.
        """
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch of %d: %s", len(message.raw_message),
                      [f"{r.topic}[{r.partition}]@{r.offset}" for r in message.raw_message],
                      extra={"flow": self.flow.name})
        items = [self.decode(RawMessage(
            topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key, value=record.value,
            headers=tuple((k, bytes(v or b"")) for k, v in record.headers)))
            for record in message.raw_message]
        await self._precheck_batch(items)
        lanes: dict[tuple[int, bytes | None], list[Decoded]] = {}
        for item in items:
            lanes.setdefault((item.raw.partition, item.raw.key), []).append(item)
        settled: set[tuple[str, str]] = set()
        await asyncio.gather(*(self._lane(lane, settled) for lane in lanes.values()))
        try:
            await message.ack()
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another consumer meanwhile: it will see these messages
            # again and the ledger makes that a no-op.
            log.info("offset commit lost to a rebalance (%s); the ledger absorbs the redelivery",
                     type(exc).__name__, extra={"flow": self.flow.name})

    def decode(self, raw: RawMessage) -> Decoded:
        # A replay names the flow it is for; other flows leave alone what they already handled.
        replay_for = dict(raw.headers).get(REPLAY_FOR, b"").decode(errors="replace")
        try:
            event = decode_event(raw.value, self.flow.model,
                                 max_bytes=self.hub.settings.max_event_bytes)
        except DecodeError as exc:
            return Decoded(raw, None, exc, replay_for)
        return Decoded(raw, event, None, replay_for)

    async def _precheck_batch(self, items: list[Decoded]) -> None:
        """One precheck for the batch. If the store cannot answer, each message asks on its
        own (and waits there until it can), exactly as without the batch read."""
        flow = self.flow
        wanted = {str(item.event.event_id): (item.event.entity, item.event.entity_id)
                  for item in items
                  if item.event is not None and item.event.type in flow.accepts}
        if not wanted:
            return
        try:
            found = await self.hub.db(self.hub.store.prechecks, flow.name, flow.target,
                                      [(event_id, *key) for event_id, key in wanted.items()])
        except Exception as exc:
            log.warning("batch precheck failed, checking message by message: %s",
                        self.hub.redact(repr(exc)), extra={"flow": flow.name})
            return
        for item in items:
            if item.event is not None:
                item.precheck = found.get(str(item.event.event_id))

    async def _lane(self, items: list[Decoded], settled: set[tuple[str, str]]) -> None:
        for item in items:
            self.hub.metrics.consumed.labels(self.flow.name).inc()
            await self._process_until_recorded(item, settled)

    async def _process_until_recorded(self, item: Decoded,
                                      settled: set[tuple[str, str]] | None = None) -> None:
        """process() records every outcome (done, parked, dead) in the state store. When even
        that fails -- the store is down, or refuses a value -- the lane pauses and tries again:
        committing past the message would lose it without a trace.

        The batch's precheck is used only by the first try, and only while no earlier message
        of this batch touched the same entity or event (their outcomes changed what it read).
        """
        keys = item.keys()
        precheck = item.precheck if settled is None or not keys & settled else None
        try:  # the common case, without building the retry machinery
            await self.process(item.raw, decoded=item, precheck=precheck)
        except Exception as exc:
            first: list[Exception] = [exc]

            async def again() -> None:
                if first:  # the bare try's failure is the policy's first failed attempt
                    raise first.pop()
                await self.process(item.raw, decoded=item)

            async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(Exception), wait=self.hub.wait_policy(),
                    before_sleep=self._log_unrecorded(item.raw), reraise=True):
                with attempt:
                    await again()
        if settled is not None:
            settled.update(keys)

    def _log_unrecorded(self, raw: RawMessage) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            self.hub.metrics.retried.labels(self.flow.name).inc()
            log.error("could not record the outcome of %s[%d]@%d (retry %d in %.1fs): %s",
                      raw.topic, raw.partition, raw.offset, state.attempt_number,
                      state.upcoming_sleep, self.hub.redact(repr(error)),
                      extra={"flow": self.flow.name})
        return before_sleep

    async def process(self, raw: RawMessage, *, decoded: Decoded | None = None,
                      precheck: Precheck | None = None) -> None:
        """One message through the step; `decoded` and `precheck` are the batch's reads."""
        flow, store = self.flow, self.hub.store
        item = decoded or self.decode(raw)
        event, replay_for = item.event, item.replay_for
        if event is None:
            assert item.error is not None
            if not replay_for or replay_for == flow.name:
                await self.hub.dead_letter(flow.name, flow.group, raw, item.error, attempts=1)
            return
        if event.type not in flow.accepts:
            return
        event_id = str(event.event_id)
        seen = precheck
        if seen is None:
            seen = await self.hub.db(store.precheck, flow.name, event_id, event.entity,
                                     event.entity_id, flow.target)
        if seen.status in (LedgerStatus.DONE, LedgerStatus.SKIPPED):
            self.hub.metrics.duplicates.labels(flow.name).inc()
            log.info("duplicate skipped", extra={"flow": flow.name, "event_id": event_id})
            return
        if await self._is_stale(event, seen.last_version):
            return
        if replay_for and replay_for != flow.name and seen.status is not None:
            return  # another flow's replay of a message this flow already handled its way
        if seen.ahead is not None:
            ahead = seen.ahead
            waits = MissingDependency(ahead.waits_entity, ahead.waits_id, ahead.waits_system)
            await self._park(raw, event, waits, f"behind parked event {ahead.event_id}: {waits}")
            return
        await self._run(raw, event)

    async def _is_stale(self, event: Event[M], last: str | None) -> bool:
        """An update older than (or as old as) the last one synced to the target is dropped."""
        version = event.version_key()
        if version is None or last is None or last[0] != version[0] or last < version:
            return False
        flow = self.flow
        await self.recorder.record(Outcome(
            flow.name, str(event.event_id), event.entity, event.entity_id,
            LedgerStatus.SKIPPED, error=f"stale: version {version} <= synced {last}"))
        self.hub.metrics.stale.labels(flow.name).inc()
        log.info("stale update skipped", extra={"flow": flow.name,
                                                 "event_id": str(event.event_id)})
        return True

    async def _run(self, raw: RawMessage, event: Event[M]) -> None:
        flow, hub = self.flow, self.hub
        tries: list[Run] = []

        def attempts() -> int:  # handler runs, counting each retried connector call
            return sum(max(1, r.attempts) for r in tries)

        async def attempt() -> None:
            # A sink retries inside Run.call; this outer retry covers the state store and
            # handlers that raise TransientError outside call(): the handler runs again.
            run = Run(self, event)
            tries.append(run)
            async with self.slots:
                await flow.handler(event, run, self.sink)
            await hub.publish_events(run.emitted, flow.name)  # acked before the ledger row
            await self.recorder.record(Outcome(
                flow.name, str(event.event_id), event.entity, event.entity_id,
                LedgerStatus.DONE, tuple(run.binds), attempts()))

        started = utcnow()
        try:
            await hub.retrying(flow.target, flow.name, attempt)
        except MissingDependency as exc:
            await self._park(raw, event, exc, str(exc))
            return
        except Exception as exc:  # PermanentError, MappingError, ValidationError, or a bug:
            if not isinstance(exc, PermanentError | ValidationError):  # never stall a partition
                log.exception("unexpected error in flow %s", flow.name)
            # a refusal other systems must hear of goes out with its dead letter
            await hub.publish_events(getattr(exc, "follow_ups", []), flow.name)
            await hub.dead_letter(flow.name, flow.group, raw, exc, event=event,
                                  attempts=attempts(), first_failure_at=started)
            return
        hub.metrics.succeeded.labels(flow.name).inc()
        if tries[-1].binds:
            hub.wake_sweeper()

    async def _park(self, raw: RawMessage, event: Event[M], waits: MissingDependency,
                    reason: str) -> None:
        flow, hub = self.flow, self.hub
        await hub.db(hub.store.park, flow=flow.name, group_id=flow.group, message=raw,
                     event_id=str(event.event_id), entity=event.entity,
                     entity_id=event.entity_id, waits=waits, reason=reason,
                     ttl=timedelta(seconds=max(hub.settings.park_ttl_seconds,
                                               waits.wait_seconds or 0.0)))
        hub.metrics.parked.labels(flow.name).inc()
        log.info("parked: %s", reason, extra={"flow": flow.name, "event_id": str(event.event_id)})
        # The dependency may have been bound while we were deciding: let the sweeper look.
        hub.wake_sweeper()


def retry_policy(hub: Hub, system: str, flow: str) -> AsyncRetrying:

    async def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        failing = getattr(error, "system", "") or system
        hub.metrics.retried.labels(flow).inc()
        await hub.target_down(failing, hub.redact(str(error)))
        log.warning("%s unavailable, retry %d in %.1fs: %s", failing, state.attempt_number,
                    state.upcoming_sleep, hub.redact(str(error)), extra={"flow": flow})

    return AsyncRetrying(retry=retry_if_exception_type(TransientError),
                         wait=hub.wait_policy(), before_sleep=before_sleep, reraise=True)
