"""What every mapping may use: the cross-reference lookup it is given, and direct field copies."""

from __future__ import annotations

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
