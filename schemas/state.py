"""State store tables (sqlmodel). Schema changes go through Alembic (crmhub/migrations).

xref         canonical id <-> external id per system (the OCA "binder")
ledger       what each flow did with each event: done / parked / dead / skipped
cursor       polling position per connector stream
dead_letter  index of dead-lettered messages, with the original bytes for replay
parked       messages waiting for a cross-reference to be bound
target_status  which target systems are failing since when ("ERP unavailable since ...")
ingress_signature  webhook signatures accepted within their tolerance window (replays refused)
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, DateTime, Dialect, Index, LargeBinary, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the state store; use aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(*, nullable: bool = False, index: bool = False) -> Column[datetime]:
    return Column(UTCDateTime(), nullable=nullable, index=index)


class LedgerStatus(StrEnum):
    DONE = "done"
    PARKED = "parked"
    DEAD = "dead"
    SKIPPED = "skipped"


class DeadLetterStatus(StrEnum):
    DEAD = "dead"
    REPLAY_REQUESTED = "replay_requested"
    REPLAYED = "replayed"
    DISCARDED = "discarded"


class ParkedState(StrEnum):
    WAITING = "waiting"
    REPLAYING = "replaying"


class Xref(SQLModel, table=True):
    __tablename__ = "xref"
    __table_args__ = (
        UniqueConstraint("system", "entity", "external_id", name="uq_xref_external"),
        UniqueConstraint("system", "entity", "canonical_id", name="uq_xref_canonical"),
    )

    id: int | None = Field(default=None, primary_key=True)
    entity: str = Field(max_length=64)
    canonical_id: str = Field(max_length=256)
    system: str = Field(max_length=64)
    external_id: str = Field(max_length=256)
    synced_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    last_version: str | None = Field(default=None, max_length=128)
    last_hash: str | None = Field(default=None, max_length=128)


class Ledger(SQLModel, table=True):
    __tablename__ = "ledger"

    event_id: str = Field(primary_key=True, max_length=36)
    flow: str = Field(primary_key=True, max_length=64)
    status: str = Field(max_length=16, index=True)
    entity: str = Field(default="", max_length=64)
    entity_id: str = Field(default="", max_length=256)
    attempts: int = 0
    error: str | None = None
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Cursor(SQLModel, table=True):
    __tablename__ = "cursor"

    connector: str = Field(primary_key=True, max_length=64)
    stream: str = Field(primary_key=True, max_length=64)
    position: str = ""
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    # The replica polling this stream, until when (feeds: one poller per stream at a time).
    leased_by: str = Field(default="", max_length=128)
    lease_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class DeadLetter(SQLModel, table=True):
    __tablename__ = "dead_letter"

    id: int | None = Field(default=None, primary_key=True)
    flow: str = Field(max_length=64, index=True)
    group_id: str = Field(max_length=128)
    topic: str = Field(max_length=249)
    partition: int
    offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    key: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    value: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    headers: str = "[]"  # JSON list of [name, base64 value]
    event_id: str | None = Field(default=None, max_length=36, index=True)
    entity_id: str | None = Field(default=None, max_length=256)
    error_class: str = Field(max_length=128)
    error_message: str
    attempts: int = 1
    first_failure_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    last_failure_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    status: str = Field(default=DeadLetterStatus.DEAD, max_length=16, index=True)
    note: str | None = None  # discard reason, replay request
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Parked(SQLModel, table=True):
    __tablename__ = "parked"
    __table_args__ = (
        UniqueConstraint("flow", "event_id", name="uq_parked_flow_event"),
        Index("ix_parked_flow_entity", "flow", "entity_id"),
        Index("ix_parked_waits", "waits_system", "waits_entity", "waits_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    flow: str = Field(max_length=64)
    group_id: str = Field(max_length=128)
    event_id: str = Field(max_length=36)
    entity_id: str = Field(max_length=256)
    waits_entity: str = Field(max_length=64)
    waits_id: str = Field(max_length=256)
    waits_system: str = Field(max_length=64)
    topic: str = Field(max_length=249)
    partition: int
    offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    key: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    value: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    headers: str = "[]"
    reason: str
    state: str = Field(default=ParkedState.WAITING, max_length=16, index=True)
    attempts: int = 1
    parked_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts(index=True))
    replayed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class TargetStatus(SQLModel, table=True):
    __tablename__ = "target_status"

    system: str = Field(primary_key=True, max_length=64)
    down_since: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    last_error: str | None = None
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class IngressSignature(SQLModel, table=True):
    """A webhook signature the ingress accepted, kept until it would be expired anyway."""

    __tablename__ = "ingress_signature"

    system: str = Field(primary_key=True, max_length=64)
    signature: str = Field(primary_key=True, max_length=128)
    accepted_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts(index=True))
