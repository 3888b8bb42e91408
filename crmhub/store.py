"""The state store: ledger, cross-references, parked messages, dead letters, cursors.

Synchronous SQLAlchemy: every call is one short indexed query or one small transaction.
The hub runs them off the event loop (Hub.db: one writer thread for SQLite, a pool for
PostgreSQL); only the xref lookups a mapping makes (Run.xref) run inline, through one kept
DBAPI connection (_InlineReader).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    event,
    exists,
    func,
    insert,
    or_,
    text,
    tuple_,
    update,
)
from sqlalchemy import delete as core_delete
from sqlalchemy import select as core_select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, create_engine, delete, select

from crmhub.errors import MissingDependency, PermanentError, TransientError
from schemas.state import (
    Cursor,
    DeadLetter,
    DeadLetterStatus,
    IngressSignature,
    Ledger,
    LedgerStatus,
    Parked,
    ParkedState,
    TargetStatus,
    Xref,
    utcnow,
)

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 4_172_031  # pg_advisory_lock key: replicas starting together migrate once
#: Dead letters that are waits of their own (a park that expired, a dependency that died):
#: they say nothing of the entity they concern being unbindable (see dead_dependencies).
NOT_A_SOURCE = ("ParkExpired", "DependencyDead")


@dataclass(frozen=True)
class RawMessage:
    """A consumed Kafka record as the hub keeps it for parking, dead-lettering and replay."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def headers_json(self) -> str:
        return json.dumps([[k, base64.b64encode(v).decode()] for k, v in self.headers])

    @staticmethod
    def headers_from_json(raw: str) -> list[tuple[str, bytes]]:
        return [(k, base64.b64decode(v)) for k, v in json.loads(raw)]


@dataclass(frozen=True)
class Precheck:
    status: str | None  # this flow's ledger status for the event
    last_version: str | None  # version last synced to the target for this entity
    ahead: Parked | None  # an earlier parked message of the same entity in this flow


@dataclass(frozen=True)
class Bind:
    entity: str
    canonical_id: str
    system: str
    external_id: str
    version: str | None = None
    #: hash of the content last synced (echo suppression: unchanged content is not re-sent)
    hash: str | None = None


def _xref_values(bind: Bind) -> dict[str, Any]:
    """The xref columns a bind writes besides its key. None keeps what the row has, so a
    new optional Bind field (e.g. a content hash for `last_hash`) is one more line here."""
    return {"external_id": bind.external_id, "last_version": bind.version,
            "last_hash": bind.hash}


@dataclass(frozen=True)
class Outcome:
    """One message's result as the step records it: `done` (with its binds; clears the
    event's parked row) or `skipped` (stale, with the reason)."""

    flow: str
    event_id: str
    entity: str
    entity_id: str
    status: str
    binds: tuple[Bind, ...] = ()
    attempts: int = 1
    error: str | None = None


_XREF_COLUMNS = tuple(_xref_values(Bind("", "", "", "")))
_LEDGER: Table = Ledger.__table__  # type: ignore[attr-defined]
_XREF: Table = Xref.__table__  # type: ignore[attr-defined]
_PARKED: Table = Parked.__table__  # type: ignore[attr-defined]
_EXTERNAL_ID = core_select(_XREF.c.external_id).where(
    _XREF.c.system == bindparam("system"), _XREF.c.entity == bindparam("entity"),
    _XREF.c.canonical_id == bindparam("canonical_id"))
_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit


class _InlineReader:
    """The xref lookups a mapping makes inline, on the event loop, through one DBAPI
    connection kept for them: a plain parametrised SELECT, without SQLAlchemy's per-statement
    work (pool checkout, parameter compilation), which the profile of the hub's core path put
    at about half of a message's handling. The connection is in autocommit, so no
    transaction stays open between lookups (on SQLite a finished SELECT holds no snapshot
    either). It belongs to the thread that opened it; other threads read through the engine.
    A failed lookup drops the connection (the next one opens a new one) and reads as the
    state store being unavailable."""

    COLUMNS = frozenset({"external_id", "last_hash"})

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        mark = "?" if engine.dialect.name == "sqlite" else "%s"
        self.sql = {column: f"SELECT {column} FROM xref WHERE system = {mark} AND "
                            f"entity = {mark} AND canonical_id = {mark}"
                    for column in self.COLUMNS}
        self.thread: int | None = None
        self._connection: Any = None
        self._lock = threading.Lock()

    def owns_thread(self) -> bool:
        return self.thread is None or self.thread == threading.get_ident()

    def scalar(self, column: str, system: str, entity: str, canonical_id: str) -> str | None:
        with self._lock:
            try:
                connection = self._connection or self._open()
                cursor = connection.cursor()
                try:
                    cursor.execute(self.sql[column], (system, entity, canonical_id))
                    row = cursor.fetchone()
                finally:
                    cursor.close()
            except self.engine.dialect.loaded_dbapi.Error as exc:
                self._drop()
                raise TransientError(f"state store unavailable: {exc}", system="state") from exc
        return None if row is None else str(row[0]) if row[0] is not None else None

    def _open(self) -> Any:
        connection = self.engine.raw_connection()
        driver: Any = connection.driver_connection
        if self.engine.dialect.name != "sqlite":
            driver.rollback()  # whatever the pool's ping began
            driver.autocommit = True
        self._connection, self.thread = connection, threading.get_ident()
        return connection

    def _drop(self) -> None:
        connection, self._connection, self.thread = self._connection, None, None
        if connection is not None:
            connection.invalidate()  # discarded, never handed back to the pool in autocommit

    def close(self) -> None:
        with self._lock:
            self._drop()


class Store:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, echo=echo, connect_args={"check_same_thread": False, "timeout": 10}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(
                url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=5,
                connect_args={"connect_timeout": 5},
            )
        self._inline = _InlineReader(self.engine)

    # -- lifecycle ---------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self._inline.close()
        self.engine.dispose()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except OperationalError:
            return False

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except IntegrityError as exc:
                session.rollback()
                raise TransientError(f"concurrent write in the state store: {exc.orig}",
                                     system="state") from exc
            except OperationalError as exc:
                session.rollback()
                raise TransientError(f"state store unavailable: {exc.orig}",
                                     system="state") from exc

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in one transaction, with session()'s error translation."""
        try:
            with self.engine.begin() as connection:
                yield connection
        except IntegrityError as exc:
            raise TransientError(f"concurrent write in the state store: {exc.orig}",
                                 system="state") from exc
        except OperationalError as exc:
            raise TransientError(f"state store unavailable: {exc.orig}",
                                 system="state") from exc

    # -- ledger --------------------------------------------------------------------------------
    def ledger_status(self, event_id: str, flow: str) -> str | None:
        with self.session() as s:
            row = s.get(Ledger, (event_id, flow))
            return row.status if row else None

    def _set_ledger(self, s: Session, event_id: str, flow: str, status: str, *,
                    entity: str = "", entity_id: str = "", attempts: int = 1,
                    error: str | None = None) -> None:
        row = s.get(Ledger, (event_id, flow))
        if row is None:
            row = Ledger(event_id=event_id, flow=flow, status=status, entity=entity,
                         entity_id=entity_id, attempts=attempts, error=error)
        else:
            row.status, row.attempts, row.error = status, row.attempts + attempts, error
            row.updated_at = utcnow()
        s.add(row)

    def commit_success(self, flow: str, event_id: str, entity: str, entity_id: str,
                       binds: Sequence[Bind], attempts: int) -> None:
        """Ledger row + cross-references + clearing this event's parked row, one transaction."""
        self.record([Outcome(flow, event_id, entity, entity_id, LedgerStatus.DONE,
                             tuple(binds), attempts)])

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Several messages' outcomes in ONE transaction: every bind (in order, checked as
        `bind` checks it), every ledger row, and the parked rows of the done events.

        All or nothing: if one bind is refused (PermanentError) or the database refuses the
        write (TransientError), nothing is written and the caller records the outcomes one
        by one to find out whose it was. Core statements, a few per batch, not per message.
        """
        if not outcomes:
            return
        now = utcnow()
        with self.transaction() as connection:
            binds = [bind for outcome in outcomes for bind in outcome.binds]
            if binds:
                self._bind_many(connection, binds, now)
            flows: dict[str, list[Outcome]] = {}
            for outcome in outcomes:
                flows.setdefault(outcome.flow, []).append(outcome)
            for flow, group in flows.items():
                self._ledger_many(connection, flow, group, now)

    def _ledger_many(self, connection: Connection, flow: str, outcomes: list[Outcome],
                     now: datetime) -> None:
        ledger = _LEDGER
        ids = [outcome.event_id for outcome in outcomes]
        existing: set[str] = set()
        for chunk in _chunks(ids):
            existing.update(connection.execute(core_select(ledger.c.event_id).where(
                ledger.c.flow == flow, ledger.c.event_id.in_(chunk))).scalars())
        new = [{"event_id": o.event_id, "flow": flow, "status": o.status, "entity": o.entity,
                "entity_id": o.entity_id, "attempts": o.attempts, "error": o.error,
                "updated_at": now} for o in outcomes if o.event_id not in existing]
        if new:
            connection.execute(insert(ledger), new)
        seen = [{"b_event_id": o.event_id, "b_status": o.status, "b_attempts": o.attempts,
                 "b_error": o.error} for o in outcomes if o.event_id in existing]
        if seen:  # a parked, dead or replayed event: keep its history in `attempts`
            connection.execute(
                update(ledger).where(ledger.c.flow == flow,
                                     ledger.c.event_id == bindparam("b_event_id"))
                .values(status=bindparam("b_status"), error=bindparam("b_error"),
                        attempts=ledger.c.attempts + bindparam("b_attempts"), updated_at=now),
                seen)
        done = [o.event_id for o in outcomes if o.status == LedgerStatus.DONE]
        for chunk in _chunks(done):
            connection.execute(core_delete(_PARKED).where(
                _PARKED.c.flow == flow, _PARKED.c.event_id.in_(chunk)))

    def _bind_many(self, connection: Connection, binds: Sequence[Bind], now: datetime) -> None:
        """Apply binds in order against what the table holds, then write the final rows: one
        read and at most one UPDATE and one INSERT statement per (system, entity)."""
        xref = _XREF
        groups: dict[tuple[str, str], list[Bind]] = {}
        for bind in binds:
            groups.setdefault((bind.system, bind.entity), []).append(bind)
        for (system, entity), group in groups.items():
            by_canonical: dict[str, dict[str, Any]] = {}  # canonical id -> row values
            by_external: dict[str, str] = {}  # external id -> canonical id
            canonical_ids = list({b.canonical_id for b in group})
            external_ids = list({b.external_id for b in group})
            for chunk in _chunks(canonical_ids + external_ids):
                for found in connection.execute(core_select(
                        xref.c.id, xref.c.canonical_id, *(xref.c[k] for k in _XREF_COLUMNS)
                        ).where(xref.c.system == system, xref.c.entity == entity,
                                or_(xref.c.canonical_id.in_(chunk),
                                    xref.c.external_id.in_(chunk)))).mappings():
                    by_canonical[found["canonical_id"]] = {
                        "id": found["id"], **{k: found[k] for k in _XREF_COLUMNS}}
                    by_external[found["external_id"]] = found["canonical_id"]
            touched: dict[str, dict[str, Any]] = {}
            for bind in group:
                taken = by_external.get(bind.external_id)
                if taken is not None and taken != bind.canonical_id:
                    raise PermanentError(
                        f"{bind.system} {bind.entity} {bind.external_id!r} is already bound to "
                        f"{taken!r}, refusing to bind it to {bind.canonical_id!r}")
                row = by_canonical.setdefault(bind.canonical_id, {"id": None})
                if row.get("external_id") is not None:
                    by_external.pop(row["external_id"], None)
                for column, value in _xref_values(bind).items():
                    if value is not None or column not in row:
                        row[column] = value
                by_external[bind.external_id] = bind.canonical_id
                touched[bind.canonical_id] = row
            updates = [{"b_id": row["id"], "b_synced_at": now,
                        **{f"b_{k}": v for k, v in row.items() if k != "id"}}
                       for row in touched.values() if row["id"] is not None]
            if updates:
                columns = [k for k in updates[0] if k not in ("b_id",)]
                connection.execute(
                    update(xref).where(xref.c.id == bindparam("b_id"))
                    .values({c[2:]: bindparam(c) for c in columns}), updates)
            inserts = [{"entity": entity, "canonical_id": canonical_id, "system": system,
                        "synced_at": now, **{k: v for k, v in row.items() if k != "id"}}
                       for canonical_id, row in touched.items() if row["id"] is None]
            if inserts:
                connection.execute(insert(xref), inserts)

    def ledger_done(self, flow: str, event_ids: Sequence[str]) -> set[str]:
        """Which of these events the flow (or feed) has already recorded, in one query."""
        if not event_ids:
            return set()
        with self.session() as s:
            rows = s.exec(select(Ledger.event_id).where(
                col(Ledger.flow) == flow, col(Ledger.event_id).in_(list(event_ids)),
                col(Ledger.status).in_([LedgerStatus.DONE, LedgerStatus.SKIPPED])))
            return set(rows.all())

    def mark_skipped(self, flow: str, event_id: str, entity: str, entity_id: str,
                     reason: str) -> None:
        self.record([Outcome(flow, event_id, entity, entity_id, LedgerStatus.SKIPPED,
                             error=reason)])

    # -- cross-references ---------------------------------------------------------------------
    def _bind(self, s: Session, bind: Bind) -> None:
        row = s.exec(select(Xref).where(
            Xref.system == bind.system, Xref.entity == bind.entity,
            Xref.canonical_id == bind.canonical_id)).first()
        taken = s.exec(select(Xref).where(
            Xref.system == bind.system, Xref.entity == bind.entity,
            Xref.external_id == bind.external_id)).first()
        if taken is not None and taken.canonical_id != bind.canonical_id:
            raise PermanentError(
                f"{bind.system} {bind.entity} {bind.external_id!r} is already bound to "
                f"{taken.canonical_id!r}, refusing to bind it to {bind.canonical_id!r}")
        if row is None:
            row = Xref(entity=bind.entity, canonical_id=bind.canonical_id, system=bind.system,
                       external_id=bind.external_id)
        row.external_id, row.synced_at = bind.external_id, utcnow()
        if bind.version is not None:
            row.last_version = bind.version
        if bind.hash is not None:
            row.last_hash = bind.hash
        s.add(row)
        s.flush()

    def bind(self, bind: Bind) -> None:
        with self.session() as s:
            self._bind(s, bind)

    def external_id(self, entity: str, canonical_id: str, system: str) -> str | None:
        # Every mapping lookup comes here, inline on the event loop (see _InlineReader).
        if self._inline.owns_thread():
            return self._inline.scalar("external_id", system, entity, canonical_id)
        with self.engine.connect() as connection:
            found: str | None = connection.execute(_EXTERNAL_ID, {
                "system": system, "entity": entity, "canonical_id": canonical_id}).scalar()
            return found

    def last_version(self, entity: str, canonical_id: str, system: str) -> str | None:
        with self.session() as s:
            return s.exec(select(Xref.last_version).where(
                Xref.system == system, Xref.entity == entity,
                Xref.canonical_id == canonical_id)).first()

    def last_hash(self, entity: str, canonical_id: str, system: str) -> str | None:
        if self._inline.owns_thread():  # inline too: a flow's echo check (Xrefs.last_hash)
            return self._inline.scalar("last_hash", system, entity, canonical_id)
        with self.session() as s:
            return s.exec(select(Xref.last_hash).where(
                Xref.system == system, Xref.entity == entity,
                Xref.canonical_id == canonical_id)).first()

    # -- ingress signatures (webhook replay protection) ------------------------------------------
    def signature_seen(self, system: str, signature: str) -> bool:
        with self.session() as s:
            return s.get(IngressSignature, (system, signature)) is not None

    def remember_signature(self, system: str, signature: str, expires_at: datetime) -> bool:
        """Record an accepted signature until it expires; False if it was already recorded.
        Expired rows go in the same transaction (the table holds one tolerance window)."""
        with self.session() as s:
            s.exec(delete(IngressSignature).where(
                col(IngressSignature.expires_at) < utcnow()))
            if s.get(IngressSignature, (system, signature)) is not None:
                return False
            s.add(IngressSignature(system=system, signature=signature, expires_at=expires_at))
            return True

    def canonical_id(self, entity: str, system: str, external_id: str) -> str | None:
        with self.session() as s:
            return s.exec(select(Xref.canonical_id).where(
                Xref.system == system, Xref.entity == entity,
                Xref.external_id == external_id)).first()

    # -- parking -------------------------------------------------------------------------------
    def precheck(self, flow: str, event_id: str, entity: str, entity_id: str,
                 target: str) -> Precheck:
        """What the step needs before running a handler, in one round trip."""
        status = select(Ledger.status).where(
            Ledger.event_id == event_id, Ledger.flow == flow).scalar_subquery()
        version = select(Xref.last_version).where(
            Xref.system == target, Xref.entity == entity,
            Xref.canonical_id == entity_id).scalar_subquery()
        parked = select(func.count()).select_from(Parked).where(
            Parked.flow == flow, Parked.entity_id == entity_id).scalar_subquery()
        with self.session() as s:
            # One query in the common case; the parked rows are read only when there are any.
            ledger_status, last_version, parked_count = s.exec(
                select(status, version, parked)).one()
            ahead = self._parked_ahead(s, flow, entity_id, event_id) if parked_count else None
            return Precheck(ledger_status, last_version, ahead)

    def prechecks(self, flow: str, target: str,
                  events: Sequence[tuple[str, str, str]]) -> dict[str, Precheck]:
        """precheck() for a whole batch of (event id, entity, entity id): three indexed
        queries for the batch instead of one per message; parked rows are read only for the
        entities that have some."""
        ledger, xref, parked = _LEDGER, _XREF, _PARKED
        if not events:
            return {}
        statuses: dict[str, str] = {}
        versions: dict[tuple[str, str], str | None] = {}
        parked_entities: set[str] = set()
        with self.transaction() as connection:
            for chunk in _chunks([event_id for event_id, _, _ in events]):
                statuses.update((event_id, status) for event_id, status in connection.execute(
                    core_select(ledger.c.event_id, ledger.c.status).where(
                        ledger.c.flow == flow, ledger.c.event_id.in_(chunk))))
            keys = list({(entity, entity_id) for _, entity, entity_id in events})
            for chunk in _chunks(keys):
                for entity, canonical_id, version in connection.execute(core_select(
                        xref.c.entity, xref.c.canonical_id, xref.c.last_version).where(
                        xref.c.system == target,
                        tuple_(xref.c.entity, xref.c.canonical_id).in_(chunk))):
                    versions[(entity, canonical_id)] = version
            for chunk in _chunks(list({entity_id for _, _, entity_id in events})):
                parked_entities.update(connection.execute(core_select(
                    parked.c.entity_id).distinct().where(
                    parked.c.flow == flow, parked.c.entity_id.in_(chunk))).scalars())
        ahead: dict[str, Parked | None] = {}
        if parked_entities:
            with self.session() as s:
                for event_id, _, entity_id in events:
                    if entity_id in parked_entities:
                        ahead[event_id] = self._parked_ahead(s, flow, entity_id, event_id)
        return {event_id: Precheck(statuses.get(event_id), versions.get((entity, entity_id)),
                                   ahead.get(event_id))
                for event_id, entity, entity_id in events}

    def _parked_ahead(self, s: Session, flow: str, entity_id: str, event_id: str
                      ) -> Parked | None:
        """An earlier message of the same entity parked in this flow (order per key).

        A message that is itself parked (now being replayed) only waits for rows parked
        before it, so two parked messages of one entity never wait for each other.
        """
        own = s.exec(select(Parked.id).where(Parked.flow == flow,
                                             Parked.event_id == event_id)).first()
        query = select(Parked).where(Parked.flow == flow, Parked.entity_id == entity_id,
                                     Parked.event_id != event_id)
        if own is not None:
            query = query.where(col(Parked.id) < own)
        return s.exec(query.order_by(col(Parked.id))).first()

    def park(self, *, flow: str, group_id: str, message: RawMessage, event_id: str,
             entity: str, entity_id: str, waits: MissingDependency, reason: str,
             ttl: timedelta) -> Parked:
        now = utcnow()
        with self.session() as s:
            row = s.exec(select(Parked).where(Parked.flow == flow,
                                              Parked.event_id == event_id)).first()
            if row is None:
                row = Parked(flow=flow, group_id=group_id, event_id=event_id,
                             entity_id=entity_id, waits_entity="", waits_id="",
                             waits_system="", topic=message.topic,
                             partition=message.partition, offset=message.offset,
                             key=message.key, value=message.value,
                             headers=message.headers_json(), reason="",
                             expires_at=now + ttl, parked_at=now, attempts=0)
            row.waits_entity, row.waits_id, row.waits_system = (
                waits.entity, waits.canonical_id, waits.system)
            row.reason, row.state, row.attempts = reason, ParkedState.WAITING, row.attempts + 1
            row.replayed_at = None
            s.add(row)
            self._set_ledger(s, event_id, flow, LedgerStatus.PARKED, entity=entity,
                             entity_id=entity_id, error=reason)
            return row

    def claim_replayable(self, limit: int = 100) -> list[Parked]:
        """Waiting rows whose dependency is bound now, marked replaying (one replica sends each)."""
        bound = exists().where(col(Xref.system) == col(Parked.waits_system),
                               col(Xref.entity) == col(Parked.waits_entity),
                               col(Xref.canonical_id) == col(Parked.waits_id))
        return self._claim(
            select(Parked).where(Parked.state == ParkedState.WAITING, bound)
            .order_by(col(Parked.id)).limit(limit))

    def requeue_stale_replays(self, older_than: timedelta) -> int:
        """Replays that never came back (e.g. the broker restarted empty) are sent again."""
        cutoff = utcnow() - older_than
        with self.session() as s:
            result = s.exec(update(Parked).where(
                col(Parked.state) == ParkedState.REPLAYING,
                col(Parked.replayed_at) < cutoff).values(state=ParkedState.WAITING))
            return int(result.rowcount or 0)

    def _claim(self, query: Any) -> list[Parked]:
        claimed: list[Parked] = []
        with self.session() as s:
            for row in s.exec(query).all():
                result = s.exec(update(Parked).where(
                    col(Parked.id) == row.id, col(Parked.state) == ParkedState.WAITING)
                    .values(state=ParkedState.REPLAYING, replayed_at=utcnow()))
                if result.rowcount:
                    claimed.append(row)
        return claimed

    def expired_parked(self, limit: int = 100) -> list[Parked]:
        with self.session() as s:
            return list(s.exec(select(Parked).where(
                col(Parked.expires_at) < utcnow(), col(Parked.state) == ParkedState.WAITING)
                .order_by(col(Parked.id)).limit(limit)).all())

    def dead_dependencies(self, targets: Mapping[str, str], limit: int = 100
                          ) -> list[tuple[Parked, DeadLetter]]:
        """Waiting parked rows whose awaited cross-reference will not come, each with the dead
        letter that says why: a flow writing to the awaited system (`targets`: flow name ->
        its target system) dead-lettered the awaited entity's own message, and nobody has
        asked to replay it. Dead letters of waits (expired or dead dependencies of their own)
        do not count: they are not the dependency's source."""
        found: dict[int | None, tuple[Parked, DeadLetter]] = {}
        with self.session() as s:  # from the (few) dead letters, by index to what waits
            rows = s.exec(
                select(Parked, DeadLetter).select_from(DeadLetter)
                .join(Ledger, (col(Ledger.event_id) == col(DeadLetter.event_id))
                      & (col(Ledger.flow) == col(DeadLetter.flow)))
                .join(Parked, (col(Parked.waits_entity) == col(Ledger.entity))
                      & (col(Parked.waits_id) == col(Ledger.entity_id)))
                .where(col(DeadLetter.status) == DeadLetterStatus.DEAD,
                       col(DeadLetter.error_class).not_in(NOT_A_SOURCE),
                       col(DeadLetter.flow).in_(sorted(targets)),
                       col(Ledger.status) == LedgerStatus.DEAD,
                       col(Parked.state) == ParkedState.WAITING)
                .order_by(col(Parked.id), col(DeadLetter.id))
                .limit(limit)).all()
        for parked, letter in rows:  # the awaited system is the one that flow writes to
            if targets[letter.flow] == parked.waits_system and parked.id not in found:
                found[parked.id] = (parked, letter)
        return list(found.values())

    def list_parked(self, flow: str | None = None, limit: int = 100) -> list[Parked]:
        with self.session() as s:
            query = select(Parked).order_by(col(Parked.id)).limit(limit)
            if flow:
                query = query.where(Parked.flow == flow)
            return list(s.exec(query).all())

    # -- dead letters ----------------------------------------------------------------------------
    def dead_letter(self, *, flow: str, group_id: str, message: RawMessage,
                    event_id: str | None, entity: str, entity_id: str | None,
                    error: BaseException, error_text: str, attempts: int,
                    first_failure_at: datetime) -> DeadLetter:
        """Index one dead letter (and close its ledger row and any parked row) atomically."""
        with self.session() as s:
            row = DeadLetter(flow=flow, group_id=group_id, topic=message.topic,
                             partition=message.partition, offset=message.offset,
                             key=message.key, value=message.value,
                             headers=message.headers_json(), event_id=event_id,
                             entity_id=entity_id, error_class=type(error).__name__,
                             error_message=error_text, attempts=attempts,
                             first_failure_at=first_failure_at, last_failure_at=utcnow())
            s.add(row)
            if event_id:
                self._set_ledger(s, event_id, flow, LedgerStatus.DEAD, entity=entity,
                                 entity_id=entity_id or "", attempts=0, error=error_text)
                s.exec(delete(Parked).where(col(Parked.flow) == flow,
                                            col(Parked.event_id) == event_id))
            s.flush()
            return row

    def list_dead_letters(self, *, flow: str | None = None, status: str | None = None,
                          error_class: str | None = None, limit: int = 100) -> list[DeadLetter]:
        with self.session() as s:
            return list(s.exec(_dlq_filter(select(DeadLetter), flow, status, error_class)
                               .order_by(col(DeadLetter.id)).limit(limit)).all())

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        with self.session() as s:
            return s.get(DeadLetter, dead_letter_id)

    def request_replay(self, *, ids: Sequence[int] = (), flow: str | None = None,
                       error_class: str | None = None, everything: bool = False) -> int:
        """Mark dead letters for replay; the running hub's sweeper republishes them."""
        if not (ids or flow or error_class or everything):
            raise ValueError("name dead-letter ids, a filter, or ask for all")
        query = update(DeadLetter).where(col(DeadLetter.status) == DeadLetterStatus.DEAD)
        if ids:
            query = query.where(col(DeadLetter.id).in_(list(ids)))
        query = _dlq_filter(query, flow, None, error_class)
        with self.session() as s:
            result = s.exec(query.values(
                status=DeadLetterStatus.REPLAY_REQUESTED, updated_at=utcnow()))
            return int(result.rowcount or 0)

    def discard(self, dead_letter_id: int, reason: str) -> bool:
        if not reason.strip():
            raise ValueError("a discard needs a reason")
        with self.session() as s:
            result = s.exec(update(DeadLetter).where(
                col(DeadLetter.id) == dead_letter_id,
                col(DeadLetter.status) != DeadLetterStatus.DISCARDED)
                .values(status=DeadLetterStatus.DISCARDED, note=reason, updated_at=utcnow()))
            return bool(result.rowcount)

    def requested_replays(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters queued for replay. The sweeper publishes each, then mark_replayed():
        a crash in between sends it again, which the ledger absorbs; nothing is lost."""
        with self.session() as s:
            return list(s.exec(select(DeadLetter).where(
                DeadLetter.status == DeadLetterStatus.REPLAY_REQUESTED)
                .order_by(col(DeadLetter.id)).limit(limit)).all())

    def mark_replayed(self, dead_letter_id: int) -> None:
        with self.session() as s:
            s.exec(update(DeadLetter).where(
                col(DeadLetter.id) == dead_letter_id,
                col(DeadLetter.status) == DeadLetterStatus.REPLAY_REQUESTED)
                .values(status=DeadLetterStatus.REPLAYED, updated_at=utcnow()))

    # -- target systems ----------------------------------------------------------------------
    def mark_down(self, system: str, error: str) -> None:
        with self.session() as s:
            row = s.get(TargetStatus, system) or TargetStatus(system=system)
            row.down_since = row.down_since or utcnow()
            row.last_error, row.updated_at = error, utcnow()
            s.add(row)

    def mark_up(self, system: str) -> None:
        with self.session() as s:
            row = s.get(TargetStatus, system)
            if row is not None and row.down_since is not None:
                row.down_since, row.updated_at = None, utcnow()
                s.add(row)

    def targets(self) -> list[TargetStatus]:
        with self.session() as s:
            return list(s.exec(select(TargetStatus).order_by(col(TargetStatus.system))).all())

    # -- cursors -----------------------------------------------------------------------------
    def cursor(self, connector: str, stream: str) -> str | None:
        with self.session() as s:
            row = s.get(Cursor, (connector, stream))
            return row.position if row else None

    def set_cursor(self, connector: str, stream: str, position: str) -> None:
        with self.session() as s:
            row = s.get(Cursor, (connector, stream)) or Cursor(connector=connector, stream=stream)
            row.position, row.updated_at = position, utcnow()
            s.add(row)

    def lease_stream(self, connector: str, stream: str, owner: str, ttl: timedelta) -> bool:
        """Take or renew the lease on a polled stream; False while another owner holds it.

        One conditional UPDATE, so two replicas racing for an expired lease cannot both win.
        """
        now = utcnow()
        with self.session() as s:
            if s.get(Cursor, (connector, stream)) is None:
                s.add(Cursor(connector=connector, stream=stream))
                s.flush()
            taken = s.exec(update(Cursor).where(
                col(Cursor.connector) == connector, col(Cursor.stream) == stream,
                or_(col(Cursor.leased_by) == owner, col(Cursor.leased_by) == "",
                    col(Cursor.lease_until).is_(None), col(Cursor.lease_until) < now),
            ).values(leased_by=owner, lease_until=now + ttl))
            return bool(taken.rowcount)

    def release_stream(self, connector: str, stream: str, owner: str) -> None:
        """Give the lease up (a clean stop): another replica can poll at once."""
        with self.session() as s:
            s.exec(update(Cursor).where(
                col(Cursor.connector) == connector, col(Cursor.stream) == stream,
                col(Cursor.leased_by) == owner).values(leased_by="", lease_until=None))

    # -- status --------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts for `crmhub status` and the console."""
        with self.session() as s:
            ledger = s.exec(select(Ledger.flow, Ledger.status, func.count())
                            .group_by(col(Ledger.flow), col(Ledger.status))).all()
            parked = s.exec(select(Parked.flow, func.count()).group_by(col(Parked.flow))).all()
            # Orders held back by the approval gate, shown apart from other parked messages.
            awaiting_approval = s.exec(select(Parked.entity_id).where(
                col(Parked.waits_entity) == "approval").order_by(col(Parked.id))).all()
            dead = s.exec(select(DeadLetter.flow, DeadLetter.status, func.count())
                          .group_by(col(DeadLetter.flow), col(DeadLetter.status))).all()
        flows: dict[str, dict[str, int]] = {}
        for flow, status, count in ledger:
            flows.setdefault(flow, {})[status] = count
        return {
            "flows": flows,
            "parked": dict(parked),
            "awaiting_approval": list(dict.fromkeys(awaiting_approval)),
            "dead_letters": {f"{flow}/{status}": count for flow, status, count in dead},
            "targets": [
                {"system": t.system, "down_since": t.down_since, "last_error": t.last_error}
                for t in self.targets()
            ],
        }


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _dlq_filter(query: Any, flow: str | None, status: str | None,
                error_class: str | None) -> Any:
    if flow:
        query = query.where(col(DeadLetter.flow) == flow)
    if status:
        query = query.where(col(DeadLetter.status) == status)
    if error_class:
        query = query.where(col(DeadLetter.error_class) == error_class)
    return query


def describe_bytes(value: bytes | None, limit: int = 4000) -> Any:
    """Kafka bytes for people: parsed JSON, else text, else a short description."""
    if value is None:
        return None
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return f"<{len(value)} bytes, not UTF-8: {value[:64]!r}>"
    try:
        return json.loads(text)
    except ValueError:
        return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


