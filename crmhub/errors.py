"""The hub's failure kinds: every connector's classify() turns its errors into one of these.

The step decides what happens from the kind alone:
- TransientError     retry with backoff (honouring retry_after) until the target is back
- MissingDependency  park the message; replay it when the awaited cross-reference is bound
- PermanentError     dead-letter at once with context and move on
- MappingError       a PermanentError raised by a pure mapping (bad or unknown input)
- AmountMismatch     a PermanentError: the target cannot hold the owner's amounts exactly
"""

from __future__ import annotations

from typing import Any


class HubError(Exception):
    """Base of every error the step knows how to handle."""


class TransientError(HubError):
    """A retry can help: timeout, connection refused, 429, 5xx, lock or deadlock."""

    def __init__(self, message: str, *, system: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.system = system
        self.retry_after = retry_after


class MissingDependency(HubError):
    """The entity this message needs is not bound in the target system yet."""

    def __init__(self, entity: str, canonical_id: str, system: str, *,
                 wait_seconds: float | None = None):
        super().__init__(f"{entity} {canonical_id!r} is not yet bound in {system}")
        self.entity = entity
        self.canonical_id = canonical_id
        self.system = system
        #: The least time the parked message must be kept (e.g. until an approval expires);
        #: its park TTL is the longer of this and park_ttl_seconds.
        self.wait_seconds = wait_seconds


class PermanentError(HubError):
    """No retry can help: validation error, 4xx, a record the target refuses."""

    def __init__(self, message: str, *, system: str = ""):
        super().__init__(message)
        self.system = system
        #: Events the step publishes with the dead letter, so the systems that must hear of
        #: a refusal do (set by the flow that catches it; e.g. order.refused -> a CRM note).
        self.follow_ups: list[Any] = []

    def telling(self, *events: Any) -> PermanentError:
        """This error, with `events` to publish alongside its dead letter."""
        self.follow_ups.extend(events)
        return self


class MappingError(PermanentError):
    """A mapping could not translate the payload (unknown code, missing field, bad value)."""


class AmountMismatch(PermanentError):
    """The target cannot hold the owner's amounts exactly, or computed others: the record is
    refused (dead-lettered, both amounts named) rather than written different (docs/money.md)."""


class DecodeError(PermanentError):
    """A Kafka message is not JSON, not a valid envelope, or of an unknown schema version."""
