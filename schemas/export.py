"""JSON Schema export of the canonical models and their event envelopes, for other teams' tools.

Schemas are in serialization mode: they describe the JSON the hub publishes (money as strings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.canonical import (
    Approval,
    Customer,
    Invoice,
    Order,
    Payment,
    Shipment,
    Task,
)
from schemas.envelope import Event

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

CANONICAL_MODELS: dict[str, type[BaseModel]] = {
    "customer": Customer,
    "order": Order,
    "invoice": Invoice,
    "payment": Payment,
    "shipment": Shipment,
    "approval": Approval,
    "task": Task,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """Schema per model ("order") and per envelope carrying it ("event.order")."""
    schemas: dict[str, dict[str, Any]] = {}
    for name, model in CANONICAL_MODELS.items():
        schemas[name] = _with_dialect(model.model_json_schema(mode="serialization"))
        envelope = Event[model]  # type: ignore[valid-type]
        schemas[f"event.{name}"] = _with_dialect(envelope.model_json_schema(mode="serialization"))
    return schemas


def write_json_schemas(directory: Path) -> list[Path]:
    """Write `<name>.schema.json` files (creating the directory); return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _with_dialect(schema: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}
