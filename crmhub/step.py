"""The one shared flow step: every flow's handler runs inside it.

For each consumed message, in this order:
1. decode the envelope (not JSON / invalid / unknown schema_version -> dead letter)
2. ledger check: (event_id, flow) already done -> skip (a redelivery)
3. if an earlier message of the same entity is parked in this flow, park behind it
4. run the flow's handler; connector calls go through `Run.call`, which retries
   TransientError with exponential backoff and jitter (honouring Retry-After) for as long as
   the target is down -- the partition pauses, nothing is dead-lettered
5. publish the events the handler emitted (ids derived from the cause, so a redelivery
   re-emits the same ids and downstream ledgers drop them)
6. write ledger row + cross-references in one transaction
7. commit the Kafka offset (manual ack; never nack, which seeks back and spins)

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
from crmhub.store import Bind, RawMessage
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


class Step(Generic[M, S]):
    def __init__(self, hub: Hub, flow: Flow[M, S]) -> None:
        self.hub = hub
        self.flow = flow
        self.sink = flow.sink()
        self.slots = asyncio.Semaphore(hub.settings.workers_per_flow)

    async def handle_batch(self, message: KafkaMessage) -> None:
        """faststream entry point for one fetched batch: per-key lanes, then one commit.

        Messages with the same key (the entity id) run one after another in offset order;
        different keys run side by side, at most workers_per_flow at a time. The offset is
        committed once every message of the batch is done. Cancellation skips the commit.
        """
        lanes: dict[tuple[int, bytes | None], list[RawMessage]] = {}
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch of %d: %s", len(message.raw_message),
                      [f"{r.topic}[{r.partition}]@{r.offset}" for r in message.raw_message],
                      extra={"flow": self.flow.name})
        for record in message.raw_message:
            raw = RawMessage(topic=record.topic, partition=record.partition,
                             offset=record.offset, key=record.key, value=record.value,
                             headers=tuple((k, bytes(v or b"")) for k, v in record.headers))
            lanes.setdefault((record.partition, record.key), []).append(raw)
        await asyncio.gather(*(self._lane(messages) for messages in lanes.values()))
        try:
            await message.ack()
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another consumer meanwhile: it will see these messages
            # again and the ledger makes that a no-op.
            log.info("offset commit lost to a rebalance (%s); the ledger absorbs the redelivery",
                     type(exc).__name__, extra={"flow": self.flow.name})

    async def _lane(self, messages: list[RawMessage]) -> None:
        for raw in messages:
            async with self.slots:
                self.hub.metrics.consumed.labels(self.flow.name).inc()
                await self._process_until_recorded(raw)

    async def _process_until_recorded(self, raw: RawMessage) -> None:
        """process() records every outcome (done, parked, dead) in the state store. When even
        that fails -- the store is down, or refuses a value -- the lane pauses and tries again:
        committing past the message would lose it without a trace."""
        async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(Exception), wait=self.hub.wait_policy(),
                before_sleep=self._log_unrecorded(raw), reraise=True):
            with attempt:
                await self.process(raw)

    def _log_unrecorded(self, raw: RawMessage) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            self.hub.metrics.retried.labels(self.flow.name).inc()
            log.error("could not record the outcome of %s[%d]@%d (retry %d in %.1fs): %s",
                      raw.topic, raw.partition, raw.offset, state.attempt_number,
                      state.upcoming_sleep, self.hub.redact(repr(error)),
                      extra={"flow": self.flow.name})
        return before_sleep

    async def process(self, raw: RawMessage) -> None:
        flow, store = self.flow, self.hub.store
        # A replay names the flow it is for; other flows leave alone what they already handled.
        replay_for = dict(raw.headers).get(REPLAY_FOR, b"").decode(errors="replace")
        try:
            event = decode_event(raw.value, flow.model, max_bytes=self.hub.settings.max_event_bytes)
        except DecodeError as exc:
            if not replay_for or replay_for == flow.name:
                await self.hub.dead_letter(flow.name, flow.group, raw, exc, attempts=1)
            return
        if event.type not in flow.accepts:
            return
        event_id = str(event.event_id)
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
        flow, store = self.flow, self.hub.store
        await self.hub.db(store.mark_skipped, flow.name, str(event.event_id), event.entity,
                          event.entity_id, f"stale: version {version} <= synced {last}")
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
            await flow.handler(event, run, self.sink)
            for emitted in run.emitted:
                await hub.publish_event(emitted, flow.name)
            await hub.db(hub.store.commit_success, flow.name, str(event.event_id),
                         event.entity, event.entity_id, run.binds, attempts())

        started = utcnow()
        try:
            await hub.retrying(flow.target, flow.name, attempt)
        except MissingDependency as exc:
            await self._park(raw, event, exc, str(exc))
            return
        except Exception as exc:  # PermanentError, MappingError, ValidationError, or a bug:
            if not isinstance(exc, PermanentError | ValidationError):  # never stall a partition
                log.exception("unexpected error in flow %s", flow.name)
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
                     ttl=timedelta(seconds=hub.settings.park_ttl_seconds))
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
