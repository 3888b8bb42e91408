"""Golden cases for every mapping: tests/mappings/<system>/<entity>/<case>/.

input.json     {"function": name in mappings.<system>.<entity>, "xref": [[entity, canonical id,
               system, external id], ...], "data": the payload for the function's first argument,
               "args": {other parameter: its value, validated against the parameter's type}}
expected.json  what the function returns (as JSON), or
error.txt      "<ErrorClass>: <text the message contains>"

Cases are named for what they show. Regenerate nothing automatically: a golden file is reviewed.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from pydantic import BaseModel, TypeAdapter

from crmhub.errors import MissingDependency

HERE = Path(__file__).parent
CASES = sorted(path.parent for path in HERE.glob("*/*/*/input.json"))


class GoldenXref:
    def __init__(self, rows: list[list[str]]) -> None:
        self.rows = {(e, c, s): x for e, c, s, x in rows}

    def get(self, entity: str, canonical_id: str, system: str) -> str | None:
        return self.rows.get((entity, canonical_id, system))

    def require(self, entity: str, canonical_id: str, system: str) -> str:
        found = self.get(entity, canonical_id, system)
        if found is None:
            raise MissingDependency(entity, canonical_id, system)
        return found


def run_case(case: Path) -> Any:
    spec = json.loads((case / "input.json").read_text("utf-8"))
    system, entity = case.parent.parent.name, case.parent.name
    function = getattr(importlib.import_module(f"mappings.{system}.{entity}"), spec["function"])
    parameters = list(inspect.signature(function).parameters)
    first = get_type_hints(function)[parameters[0]]
    data = first.model_validate(spec["data"]) if isinstance(first, type) and issubclass(
        first, BaseModel) else spec["data"]
    hints = get_type_hints(function)
    kwargs: dict[str, Any] = {name: TypeAdapter(hints[name]).validate_python(value)
                              for name, value in spec.get("args", {}).items()}
    if "xref" in parameters:
        kwargs["xref"] = GoldenXref(spec.get("xref", []))
    return TypeAdapter(hints["return"]).dump_python(function(data, **kwargs), mode="json")


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 5


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.parent.parent.name}/{c.parent.name}/"
                         f"{c.name}")
def test_golden_case(case: Path) -> None:
    expected_error = case / "error.txt"
    if expected_error.exists():
        error_class, _, text = expected_error.read_text("utf-8").strip().partition(": ")
        with pytest.raises(Exception) as caught:
            run_case(case)
        assert type(caught.value).__name__ == error_class
        assert text in str(caught.value)
    else:
        expected = json.loads((case / "expected.json").read_text("utf-8"))
        assert run_case(case) == expected
