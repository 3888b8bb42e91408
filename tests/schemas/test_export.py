"""JSON Schema export: one schema per canonical model and per event envelope, money as strings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.canonical import CURRENCIES
from schemas.export import CANONICAL_MODELS, json_schemas, write_json_schemas

# The money (and other Decimal) fields each model publishes, as (definition, property) pairs;
# None stands for the model itself.
MONEY_FIELDS: dict[str, list[tuple[str | None, str]]] = {
    "customer": [],
    "order": [
        (None, "total_net"),
        (None, "total_tax"),
        (None, "total"),
        (None, "fallback_tax_rate"),
        ("OrderLine", "unit_price"),
        ("OrderLine", "net_amount"),
        ("OrderLine", "quantity"),
        ("OrderLine", "discount_percent"),
        ("OrderLine", "tax_rate"),
    ],
    "invoice": [
        (None, "total_net"),
        (None, "total_tax"),
        (None, "total"),
        (None, "amount_residual"),
        ("InvoiceLine", "unit_price"),
        ("InvoiceLine", "net_amount"),
        ("TaxSubtotal", "base"),
        ("TaxSubtotal", "amount"),
    ],
    "payment": [(None, "amount"), ("PaymentAllocation", "amount")],
    "shipment": [("ShipmentLine", "quantity")],
    "approval": [],
    "task": [],
}


def property_schema(schema: dict[str, Any], definition: str | None, name: str) -> dict[str, Any]:
    """A property's schema; of an optional one (null allowed), the branch that is not null."""
    owner = schema if definition is None else schema["$defs"][definition]
    result: dict[str, Any] = owner["properties"][name]
    branches = [b for b in result.get("anyOf", [result]) if b.get("type") != "null"]
    assert len(branches) == 1, (definition, name, result)
    return branches[0]


def walk(value: Any) -> list[dict[str, Any]]:
    """Every JSON object inside a schema."""
    if isinstance(value, dict):
        return [value] + [d for v in value.values() for d in walk(v)]
    if isinstance(value, list):
        return [d for v in value for d in walk(v)]
    return []


def test_there_is_a_schema_per_model_and_per_event() -> None:
    schemas = json_schemas()

    assert set(CANONICAL_MODELS) == {
        "customer",
        "order",
        "invoice",
        "payment",
        "shipment",
        "approval",
        "task",
    }
    assert set(schemas) == set(CANONICAL_MODELS) | {f"event.{name}" for name in CANONICAL_MODELS}
    for name, model in CANONICAL_MODELS.items():
        assert schemas[name]["title"] == model.__name__
        assert schemas[name]["additionalProperties"] is False


def test_money_fields_are_strings_in_every_schema() -> None:
    schemas = json_schemas()

    for name, fields in MONEY_FIELDS.items():
        for definition, prop in fields:
            for schema in (schemas[name], wrapped_model(schemas, name)):
                field = property_schema(schema, definition, prop)
                assert field["type"] == "string", (name, definition, prop)
                assert "pattern" in field, (name, definition, prop)


def test_no_schema_has_a_json_number() -> None:
    for name, schema in json_schemas().items():
        types = [node.get("type") for node in walk(schema)]
        assert "number" not in types, name


def test_event_schema_wraps_the_model_as_data() -> None:
    schema = json_schemas()["event.order"]

    assert schema["properties"]["data"] == {"$ref": "#/$defs/Order"}
    assert {"type", "entity", "entity_id", "source", "origin", "data"} <= set(schema["required"])
    assert property_schema(schema, "Order", "total")["type"] == "string"


def test_currency_schema_lists_the_accepted_codes() -> None:
    order = json_schemas()["order"]

    assert order["properties"]["currency"]["enum"] == sorted(CURRENCIES)


def test_write_json_schemas_writes_one_file_per_schema(tmp_path: Path) -> None:
    target = tmp_path / "docs" / "schemas"

    written = write_json_schemas(target)

    names = sorted(path.name for path in written)
    assert names == sorted(
        [f"{n}.schema.json" for n in CANONICAL_MODELS]
        + [f"event.{n}.schema.json" for n in CANONICAL_MODELS]
    )
    assert sorted(p.name for p in target.iterdir()) == names
    order = json.loads((target / "order.schema.json").read_text(encoding="utf-8"))
    assert order == json_schemas()["order"]
    assert order["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    event = json.loads((target / "event.invoice.schema.json").read_text(encoding="utf-8"))
    assert event["$defs"]["Invoice"]["properties"]["amount_residual"]["type"] == "string"


def test_writing_twice_gives_identical_files(tmp_path: Path) -> None:
    first = {p.name: p.read_bytes() for p in write_json_schemas(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in write_json_schemas(tmp_path / "b")}

    assert first == second


def wrapped_model(schemas: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """The model's schema as it appears inside its event schema (with the event's $defs)."""
    event = schemas[f"event.{name}"]
    model_name = CANONICAL_MODELS[name].__name__
    return {**event["$defs"][model_name], "$defs": event["$defs"]}
