"""What every mapping may use: the cross-reference lookup it is given, and direct field copies."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel


class XrefLookup(Protocol):
    """The only lookup a mapping may do. require() raises MissingDependency when unbound."""

    def get(self, entity: str, canonical_id: str, system: str) -> str | None: ...

    def require(self, entity: str, canonical_id: str, system: str) -> str: ...


def copy_fields(model: BaseModel, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Direct field pairs (canonical name, target name), JSON-ready: Decimals become strings."""
    values = model.model_dump(mode="json")
    return {target: values[source] for source, target in pairs}


def content_hash(model: BaseModel, exclude: set[str] | frozenset[str] = frozenset()) -> str:
    """A stable hash of a model's content (JSON, keys sorted), leaving out `exclude`.

    Stored in xref.last_hash by a flow that publishes a system's changes: content it has
    already published (its own write echoing back, a redelivery) hashes the same."""
    document = model.model_dump(mode="json", exclude=set(exclude))
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
