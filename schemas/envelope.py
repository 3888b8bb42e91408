"""The event envelope every Kafka message carries, and its strict decoder.

`event_id` is the dedup key; `entity_id` is also the Kafka key so one entity's events stay
in order; `origin` names the system whose change caused the event (echo suppression);
`entity_version` / `source_updated_at` let a sink drop stale updates.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from crmhub.errors import DecodeError

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
# Follow-up events get ids derived from their cause, so a redelivered cause re-emits the same id
# and every downstream ledger drops the duplicate.
_FOLLOW_UP_NAMESPACE = uuid.UUID("6f1c3e0a-8a8e-4c43-9a57-3c1f6c0b7d11")

T = TypeVar("T", bound=BaseModel)
# Ids become Kafka keys, file names and database keys: no control characters (no NUL).
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class Source(BaseModel):
    """Where the change happened: the system and the record's id there."""

    model_config = ConfigDict(frozen=True)

    system: str = Field(min_length=1, max_length=64, pattern=_PRINTABLE)
    id: str = Field(default="", max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")


class Event(BaseModel, Generic[T]):
    """One change to one entity. `data` is a canonical model from schemas.canonical."""

    model_config = ConfigDict(extra="forbid")

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str = Field(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$", max_length=128)
    entity: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    entity_id: str = Field(min_length=1, max_length=256, pattern=_PRINTABLE)
    schema_version: int = SCHEMA_VERSION
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    source: Source
    tenant: str = Field(default="default", min_length=1, max_length=64, pattern=_PRINTABLE)
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None
    origin: str = Field(min_length=1, max_length=64, pattern=_PRINTABLE)
    entity_version: int | None = None
    source_updated_at: AwareDatetime | None = None
    data: T

    @field_validator("occurred_at", "source_updated_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    @property
    def key(self) -> bytes:
        """The Kafka message key: the canonical entity id."""
        return self.entity_id.encode()

    def version_key(self) -> str | None:
        """Comparable text form of entity_version (preferred) or source_updated_at, if any."""
        if self.entity_version is not None:
            return f"v{self.entity_version:020d}"
        if self.source_updated_at is not None:
            return "t" + self.source_updated_at.strftime("%Y-%m-%dT%H:%M:%S.%f")
        return None

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    def follow_up(
        self,
        type: str,
        data: BaseModel,
        *,
        by: str,
        source: Source,
        entity_id: str | None = None,
    ) -> Event[Any]:
        """An event caused by this one, with a deterministic id (see _FOLLOW_UP_NAMESPACE).

        `by` names the flow emitting it, so two flows reacting to one event get distinct ids.
        """
        entity = type.split(".", 1)[0]
        return Event[Any](
            event_id=uuid.uuid5(_FOLLOW_UP_NAMESPACE, f"{self.event_id}:{by}:{type}"),
            type=type,
            entity=entity,
            entity_id=entity_id or self.entity_id,
            source=source,
            tenant=self.tenant,
            correlation_id=self.correlation_id or self.event_id,
            causation_id=self.event_id,
            origin=source.system,
            data=data,
        )


_envelopes: dict[type[BaseModel], type[Event[Any]]] = {}


def decode_event(raw: bytes | None, model: type[T], *, max_bytes: int = 1_048_576) -> Event[T]:
    """Parse and validate one Kafka value; every failure is a DecodeError naming the reason."""
    if raw is None:
        raise DecodeError("message has no value (tombstone)")
    if len(raw) > max_bytes:
        raise DecodeError(f"message of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    envelope = _envelopes.get(model)
    if envelope is None:
        envelope = _envelopes[model] = Event[model]  # type: ignore[valid-type]
    try:  # the common case in one pass of pydantic-core's JSON parser
        event: Event[T] = envelope.model_validate_json(raw)
        if ("schema_version" in event.model_fields_set
                and event.schema_version in SUPPORTED_SCHEMA_VERSIONS):
            return event
    except ValidationError:
        pass
    # Not a valid envelope: parse it step by step to say exactly why.
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise DecodeError(f"envelope must be a JSON object, got {type(body).__name__}")
    version = body.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise DecodeError(
            f"unknown schema_version {version!r}; supported: {sorted(SUPPORTED_SCHEMA_VERSIONS)}"
        )
    try:
        return envelope.model_validate(body)
    except ValidationError as exc:
        raise DecodeError(f"invalid {model.__name__} envelope: {_summary(exc)}") from None


def peek_event_id(raw: bytes | None) -> uuid.UUID | None:
    """Best-effort event id of a message that failed to decode (for the dead-letter index)."""
    try:
        value = json.loads(raw or b"")
        return uuid.UUID(str(value["event_id"])) if isinstance(value, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def _summary(exc: ValidationError, limit: int = 5) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
             for e in errors[:limit]]
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more
