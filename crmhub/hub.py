"""The hub: broker wiring, the flows' subscribers, the sweeper, outgoing publishes.

Start order: embedded broker (if no bootstrap servers) -> state store migrations -> topics
created explicitly -> producer -> one faststream batch subscriber per flow (manual ack; the
step runs each batch in per-key lanes and commits once the batch is done) -> sweeper
(parked replays, expiries, DLQ replays). Several replicas share a flow's partitions through
its consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker, KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy

from crmhub import topics, transport
from crmhub.embedded import EmbeddedBroker
from crmhub.errors import MissingDependency, TransientError
from crmhub.feed import Feed, Poller
from crmhub.metrics import Metrics
from crmhub.settings import HubSettings, redact, secret_env_values, secret_values
from crmhub.step import (
    REPLAY_FOR,
    REPLAY_KIND,
    Flow,
    Step,
    WaitRetryAfterOrBackoff,
    retry_policy,
)
from crmhub.store import RawMessage, Store
from schemas.envelope import Event, peek_event_id
from schemas.state import utcnow

log = logging.getLogger(__name__)
R = TypeVar("R")

SWEEP_WAKE_GAP = 0.05  # seconds between two sweeps woken by binds
_SECRET_HEADER_WORDS = ("authorization", "secret", "token", "password", "signature", "cookie")


class Hub:
    def __init__(self, settings: HubSettings, flows: Sequence[Flow[Any, Any]] | None = None,
                 *, feeds: Sequence[Feed[Any, Any]] | None = None,
                 extra_secrets: Sequence[str] = ()) -> None:
        if flows is None and feeds is None:  # what settings.flows names, or everything
            from flows import FEEDS, FLOWS

            flows = [f for f in FLOWS if not settings.flows or f.name in settings.flows]
            feeds = [f for f in FEEDS if not settings.flows or f.name in settings.flows]
        self.settings = settings
        self.flows = list(flows or [])
        self.feeds = list(feeds or [])
        self.pollers: dict[str, Poller[Any, Any]] = {}
        self.metrics = Metrics()
        self.store = Store(settings.database_url.get_secret_value())
        self.embedded: EmbeddedBroker | None = None
        self.bootstrap_servers = settings.bootstrap_servers
        self.broker: KafkaBroker | None = None
        self.producer: AIOKafkaProducer | None = None
        self.steps: list[Step[Any, Any]] = []
        self.started_in: float | None = None
        self._db_pool = ThreadPoolExecutor(
            max_workers=1 if self.store.engine.dialect.name == "sqlite" else 8,
            thread_name_prefix="crmhub-db")
        self._secrets = [*secret_values(settings), *secret_env_values(), *extra_secrets]
        self._sweeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._down: dict[str, datetime] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        started = time.monotonic()
        if self.settings.embedded_broker:
            self.embedded = EmbeddedBroker()
            await self.embedded.start()
            self.embedded.on_restart = self._on_broker_restart
            self.bootstrap_servers = self.embedded.bootstrap_servers
        await self.db(self.store.migrate)
        # A refused certificate or login: one clear error now, not a bootstrap retry loop.
        await transport.check_kafka(self.settings, self.bootstrap_servers)
        # Outages an earlier process recorded: the first success here clears them.
        self._down = {t.system: t.down_since for t in await self.db(self.store.targets)
                      if t.down_since is not None}
        await self.create_topics()
        # Larger batches than the 16 KB default: a busy flow's follow-ups share requests.
        self.producer = AIOKafkaProducer(**self._client_args(), max_batch_size=256 * 1024,
                                         enable_idempotence=self.settings.enable_idempotence)
        await self.producer.start()
        # faststream logs every message at the level given: keep that out of INFO.
        self.broker = KafkaBroker(self.bootstrap_servers, client_id=self.settings.client_id,
                                  logger=logging.getLogger("crmhub.broker"),
                                  log_level=logging.DEBUG,
                                  enable_idempotence=self.settings.enable_idempotence,
                                  **self._security())
        for flow in self.flows:
            step = Step(self, flow)
            self.steps.append(step)
            self.broker.include_router(self._router(step))
        await self._start_subscribers(self.broker)
        for feed in self.feeds:
            self.pollers[feed.name] = poller = Poller(self, feed)
            poller.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="crmhub-sweeper")
        self.started_in = time.monotonic() - started
        log.info("hub started in %.2fs: %d flows on %s", self.started_in, len(self.flows),
                 self.bootstrap_servers)

    @staticmethod
    async def _start_subscribers(broker: KafkaBroker) -> None:
        """broker.start(), with the flows' consumers joining their groups side by side.

        Each consumer's start waits for its group join (about a second on Tansu, a rebalance
        round on Kafka); faststream starts them one after another, so startup grew by that
        per flow. The groups are independent: they join at the same time here.
        """
        await broker.connect()
        await asyncio.gather(*(subscriber.start() for subscriber in broker.subscribers))
        for publisher in broker.publishers:
            await publisher.start()
        broker.running = True

    async def stop(self) -> None:
        for poller in self.pollers.values():
            await poller.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.broker is not None:
            await self.broker.stop()
        for step in self.steps:  # outcomes being written finish before the store closes
            await step.recorder.drain()
        if self.producer is not None:
            await self.producer.stop()
        for step in self.steps:
            close = getattr(step.sink, "aclose", None)
            if close is not None:
                await close()
        if self.embedded is not None:
            await self.embedded.stop()
        self._db_pool.shutdown(wait=True)
        self.store.close()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _router(self, step: Step[Any, Any]) -> KafkaRouter:
        settings, flow = self.settings, step.flow
        router = KafkaRouter()

        @router.subscriber(
            flow.topic, group_id=flow.group, ack_policy=AckPolicy.MANUAL, batch=True,
            max_records=settings.batch_max_records, batch_timeout_ms=settings.batch_timeout_ms,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            auto_offset_reset="earliest", parser=tolerant_batch_parser, decoder=no_body,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            title=flow.name, description=flow.handler.__doc__,
        )
        async def on_batch(message: KafkaMessage) -> None:
            await step.handle_batch(message)

        return router

    def _security(self) -> dict[str, Any]:
        """TLS and SASL for faststream's consumers: the same as every other Kafka client."""
        security = transport.faststream_security(self.settings)
        return {} if security is None else {"security": security}

    def _client_args(self) -> dict[str, Any]:
        """aiokafka arguments (producer, admin): servers, client id, TLS and SASL."""
        return transport.kafka_client_args(self.settings, self.bootstrap_servers)

    async def create_topics(self) -> list[str]:
        admin = AIOKafkaAdminClient(**self._client_args())
        await admin.start()
        try:
            specs = topics.hub_topics(
                ((f.topic, f.group) for f in self.flows), self.settings.topic_partitions,
                [topics.dlq(topics.poll(f.system, f.stream), f.name) for f in self.feeds])
            return await topics.create_topics(admin, specs, self.settings.replication_factor)
        finally:
            await admin.close()

    async def _on_broker_restart(self) -> None:
        self.metrics.broker_restarts.inc()
        log.warning("embedded broker restarted empty: re-creating topics; parked and dead "
                    "letters are kept in the state store and replay from there")
        await self.create_topics()
        # Replays in flight were lost with the broker: send them again now.
        await self.db(self.store.requeue_stale_replays, timedelta(0))
        self.wake_sweeper()

    # -- readiness ---------------------------------------------------------------------------
    def readiness(self) -> dict[str, bool]:
        embedded_ok = self.embedded is None or (
            self.embedded.process is not None and self.embedded.process.returncode is None)
        return {
            "broker": self.broker is not None and embedded_ok,
            "store": self.store.ping(),
            "sweeper": self._sweeper is not None and not self._sweeper.done(),
            "feeds": all(p.task is not None and not p.task.done()
                         for p in self.pollers.values()),
        }

    # -- helpers the step uses ----------------------------------------------------------------
    async def db(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """State store call off the event loop, so a slow database never delays heartbeats.

        SQLite allows one writer: a single thread queues its calls instead of letting
        threads collide on the write lock and sleep in SQLite's busy handler.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_pool, functools.partial(fn, *args, **kwargs))

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def wait_policy(self) -> WaitRetryAfterOrBackoff:
        s = self.settings
        return WaitRetryAfterOrBackoff(s.retry_initial_seconds, s.retry_max_seconds,
                                       s.retry_jitter_seconds)

    async def retrying(self, system: str, flow: str, fn: Callable[..., Awaitable[R]],
                       *args: Any, **kwargs: Any) -> R:
        """Run fn, retrying TransientError per the settings' policy; mark systems up again.

        The first call runs bare: building the retry machinery costs more than most calls,
        and almost every call succeeds at once. Its failure is handed to the policy as the
        first failed attempt, so waits, logs and target status are as if it ran there.
        """
        try:
            return await fn(*args, **kwargs)
        except TransientError as exc:
            first: list[TransientError] = [exc]

        async def again(*args: Any, **kwargs: Any) -> R:
            if first:
                raise first.pop()
            return await fn(*args, **kwargs)

        failed: set[str] = set()
        async for attempt in retry_policy(self, system, flow):
            with attempt:
                result = await again(*args, **kwargs)
            outcome = attempt.retry_state.outcome
            if outcome is not None and outcome.failed:
                failed.add(getattr(outcome.exception(), "system", "") or system)
        for recovered in failed & set(self._down):
            await self.target_up(recovered)
        return result

    async def target_down(self, system: str, error: str) -> None:
        if system not in self._down:
            self._down[system] = utcnow()
            log.error("%s unavailable since %s: %s", system, self._down[system].isoformat(),
                      error)
        self.metrics.target_up.labels(system).set(0)
        self.metrics.target_down_since.labels(system).set(self._down[system].timestamp())
        with contextlib.suppress(TransientError):
            await self.db(self.store.mark_down, system, error)

    async def target_up(self, system: str) -> None:
        since = self._down.pop(system, None)
        if since is not None:
            log.warning("%s is back after %.1fs", system, (utcnow() - since).total_seconds())
        self.metrics.target_up.labels(system).set(1)
        self.metrics.target_down_since.labels(system).set(0)
        with contextlib.suppress(TransientError):
            await self.db(self.store.mark_up, system)

    # -- publishing ----------------------------------------------------------------------------
    async def publish_raw(self, topic: str, value: bytes | None, key: bytes | None,
                          headers: Sequence[tuple[str, bytes]]) -> None:
        producer = self.producer
        assert producer is not None, "hub not started"

        async def send() -> None:
            try:
                await producer.send_and_wait(topic, value, key=key, headers=list(headers))
            except KafkaError as exc:
                raise TransientError(f"publish to {topic} failed: {exc!r}",
                                     system="kafka") from exc

        await self.retrying("kafka", "publish", send)

    async def publish_within(self, topic: str, value: bytes | None, key: bytes | None,
                             headers: Sequence[tuple[str, bytes]], timeout: float) -> None:
        """publish_raw with a deadline instead of endless retries, for callers that must
        answer someone (the webhook ingress): TransientError when Kafka has not taken the
        message within `timeout` seconds. A send still queued in the producer at that point
        may arrive later; the caller's retry then carries the same event id."""
        producer = self.producer
        if producer is None:
            raise TransientError("the hub is not started", system="kafka")
        try:
            await asyncio.wait_for(
                producer.send_and_wait(topic, value, key=key, headers=list(headers)), timeout)
        except (KafkaError, TimeoutError) as exc:
            error = "timed out" if isinstance(exc, TimeoutError) else repr(exc)
            raise TransientError(f"publish to {topic} failed within {timeout:.1f}s: {error}",
                                 system="kafka") from exc

    async def publish_event(self, event: Event[Any], flow: str) -> None:
        await self.publish_events([event], flow)

    async def publish_events(self, events: Sequence[Event[Any]], flow: str) -> None:
        """Publish in order and return once the broker acked every one of them.

        All are handed to the producer first and their acks awaited together, so several
        events (and several lanes) share produce requests. A failure sends them all again:
        follow-up ids derive from their cause, so downstream ledgers drop the repeats.
        """
        if not events:
            return
        producer = self.producer
        assert producer is not None, "hub not started"
        records = [(topics.for_entity(event.entity), event.to_bytes(), event.key,
                    [("content-type", b"application/json"),
                     ("x-crmhub-type", event.type.encode()),
                     ("x-crmhub-origin", event.origin.encode()),
                     ("x-crmhub-flow", flow.encode())]) for event in events]

        async def send() -> None:
            try:
                acks = [await producer.send(topic, value, key=key, headers=headers)
                        for topic, value, key, headers in records]
                for outcome in await asyncio.gather(*acks, return_exceptions=True):
                    if isinstance(outcome, BaseException):
                        raise outcome
            except KafkaError as exc:
                raise TransientError(f"publish to {records[0][0]} failed: {exc!r}",
                                     system="kafka") from exc

        await self.retrying("kafka", "publish", send)

    # -- dead letters --------------------------------------------------------------------------
    async def dead_letter(self, flow: str, group: str, raw: RawMessage, error: BaseException,
                          *, event: Event[Any] | None = None, attempts: int = 1,
                          first_failure_at: datetime | None = None) -> None:
        # PostgreSQL text cannot hold NUL; garbage input puts it in error messages.
        text = self.redact(f"{type(error).__name__}: {error}")[:4000].replace("\x00", "\\x00")
        event_id = str(event.event_id) if event else _str_or_none(peek_event_id(raw.value))
        headers = tuple((k, v) for k, v in raw.headers
                        if not any(word in k.lower() for word in _SECRET_HEADER_WORDS))
        kept = RawMessage(raw.topic, raw.partition, raw.offset, raw.key, raw.value, headers)
        row = await self.db(
            self.store.dead_letter, flow=flow, group_id=group, message=kept, event_id=event_id,
            entity=event.entity if event else "", entity_id=event.entity_id if event else None,
            error=error, error_text=text, attempts=attempts,
            first_failure_at=first_failure_at or utcnow())
        self.metrics.dead_lettered.labels(flow, type(error).__name__).inc()
        log.warning("dead-lettered #%s from %s[%d]@%d: %s", row.id, raw.topic, raw.partition,
                    raw.offset, text, extra={"flow": flow, "event_id": event_id})
        context = {
            "x-crmhub-dead-letter-id": str(row.id), "x-crmhub-flow": flow,
            "x-crmhub-group": group, "x-crmhub-source-topic": raw.topic,
            "x-crmhub-source-partition": str(raw.partition),
            "x-crmhub-source-offset": str(raw.offset),
            "x-crmhub-error-class": type(error).__name__, "x-crmhub-error": text,
            "x-crmhub-attempts": str(attempts),
            "x-crmhub-first-failure": row.first_failure_at.isoformat(),
            "x-crmhub-last-failure": row.last_failure_at.isoformat(),
        }
        await self.publish_raw(topics.dlq(raw.topic, group), raw.value, raw.key,
                               [*headers, *((k, v.encode()) for k, v in context.items())])

    # -- sweeper: parked replays, expiries, DLQ replays ---------------------------------------
    def wake_sweeper(self) -> None:
        self._wake.set()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweep failed; trying again")
            # Binds wake the sweeper; under load that is every message. Sweep at most every
            # SWEEP_WAKE_GAP then, not back to back (each sweep is four store queries).
            await asyncio.sleep(min(SWEEP_WAKE_GAP, self.settings.sweep_interval_seconds))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.sweep_interval_seconds)
            self._wake.clear()

    async def sweep(self) -> dict[str, int]:
        store = self.store
        done = {"replayed": 0, "expired": 0, "dependency_dead": 0, "dlq_replayed": 0}
        await self.db(store.requeue_stale_replays, timedelta(minutes=2))
        for parked in await self.db(store.claim_replayable):
            await self._replay(parked.topic, parked.key, parked.value, parked.headers,
                               parked.flow, "parked")
            done["replayed"] += 1
        for parked in await self.db(store.expired_parked):
            error = MissingDependency(parked.waits_entity, parked.waits_id, parked.waits_system)
            raw = RawMessage(parked.topic, parked.partition, parked.offset, parked.key,
                             parked.value, tuple(RawMessage.headers_from_json(parked.headers)))
            await self.dead_letter(parked.flow, parked.group_id, raw,
                                   ParkExpired(f"parked since {parked.parked_at.isoformat()} "
                                               f"and expired: {error}"),
                                   attempts=parked.attempts, first_failure_at=parked.parked_at)
            done["expired"] += 1
        # a dependency whose own message was dead-lettered will never be bound: its waiting
        # dependents go to the dead letters too, naming it (instead of waiting to expire)
        targets = {flow.name: flow.target for flow in self.flows}
        for parked, cause in await self.db(store.dead_dependencies, targets):
            raw = RawMessage(parked.topic, parked.partition, parked.offset, parked.key,
                             parked.value, tuple(RawMessage.headers_from_json(parked.headers)))
            await self.dead_letter(parked.flow, parked.group_id, raw, DependencyDead(
                f"waited for {parked.waits_entity} {parked.waits_id!r} in "
                f"{parked.waits_system}, whose message {cause.flow} dead-lettered (dead "
                f"letter #{cause.id}): {cause.error_message}"),
                attempts=parked.attempts, first_failure_at=parked.parked_at)
            done["dependency_dead"] += 1
        for letter in await self.db(store.requested_replays):
            poller = self.pollers.get(letter.flow)
            if poller is not None:  # a feed's refused record: map it again, in the feed
                await poller.replay(letter.value)
                self.metrics.replayed.labels(letter.flow, "dlq").inc()
            elif letter.topic.endswith(".poll"):
                continue  # a feed that runs in another replica replays it there
            else:
                await self._replay(letter.topic, letter.key, letter.value, letter.headers,
                                   letter.flow, f"dlq:{letter.id}")
            await self.db(store.mark_replayed, letter.id)
            done["dlq_replayed"] += 1
        return done

    async def _replay(self, topic: str, key: bytes | None, value: bytes | None,
                      headers_json: str, flow: str, kind: str) -> None:
        headers = [(k, v) for k, v in RawMessage.headers_from_json(headers_json)
                   if k not in (REPLAY_FOR, REPLAY_KIND)]
        headers += [(REPLAY_FOR, flow.encode()), (REPLAY_KIND, kind.encode())]
        await self.publish_raw(topic, value, key, headers)
        self.metrics.replayed.labels(flow, kind.split(":")[0]).inc()
        log.info("replayed %s message to %s for %s", kind, topic, flow)


async def tolerant_batch_parser(records: tuple[ConsumerRecord[Any, Any], ...],
                                original: Callable[..., Awaitable[Any]]) -> Any:
    """faststream decodes every header as UTF-8 and would drop a message whose headers are
    binary or null without a trace. Give it readable copies; the step keeps the originals."""
    readable = tuple(_text_headers(record) for record in records)
    message = await original(readable)
    message.raw_message = records
    return message


async def no_body(message: Any, original: Callable[..., Awaitable[Any]]) -> None:
    """faststream would JSON-decode every record for a body nobody asks for: the step
    decodes each record itself, with the flow's model."""
    return None


def _text_headers(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    try:
        for _, value in record.headers:
            value.decode()
        return record
    except (UnicodeDecodeError, AttributeError):
        headers = [(k, (v or b"").decode(errors="replace").encode()) for k, v in record.headers]
        return dataclasses.replace(record, headers=headers)


class DependencyDead(Exception):
    """A parked message whose awaited dependency was dead-lettered at its source."""


class ParkExpired(Exception):
    """A parked message whose dependency was never bound within park_ttl_seconds."""


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)

