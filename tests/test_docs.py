"""Generated docs stay generated: docs/settings.md and docs/flows.md match `crmhub docs`, and
every flow's contract docstring says what its spec does (topic, accepted types, group)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings
from typer.testing import CliRunner

import connectors.spec
import crmhub.settings
from crmhub import docgen
from crmhub.cli import app, generated_docs
from flows import FEEDS, FLOWS, order_to_erp, scm_shipments

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("name", ["settings.md", "flows.md"])
def test_generated_docs_are_current(name: str) -> None:
    expected = generated_docs()[name]
    assert (DOCS / name).read_text(encoding="utf-8") == expected, (
        f"docs/{name} is stale: run `crmhub docs` (then review and commit the diff)")


def test_docs_check_mode_names_a_stale_page(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["docs", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["docs", str(tmp_path), "--check"]).output == "docs up to date\n"
    (tmp_path / "flows.md").write_text("edited by hand\n")
    stale = runner.invoke(app, ["docs", str(tmp_path), "--check"])
    assert stale.exit_code == 1 and "flows.md stale" in stale.output


def test_every_flow_and_feed_contract_agrees_with_its_spec() -> None:
    problems = [p for flow in FLOWS for p in docgen.flow_contract_problems(flow)]
    problems += [p for feed in FEEDS for p in docgen.feed_contract_problems(feed)]
    assert problems == []


def test_a_contract_that_drifted_from_its_spec_is_named() -> None:
    drifted = dataclasses.replace(order_to_erp.flow, topic="canonical.customer.v1",
                                  group="erp-sales", accepts=frozenset({"order.won",
                                                                        "order.lost"}))
    problems = docgen.flow_contract_problems(drifted)
    assert len(problems) == 3
    assert "docstring consumes 'canonical.order.v1', spec 'canonical.customer.v1'" in problems[0]
    assert "['order.won'], spec ['order.lost', 'order.won']" in problems[1]
    assert "group 'erp-orders', spec 'erp-sales'" in problems[2]
    moved = dataclasses.replace(scm_shipments.feed, stream="deliveries")
    assert docgen.feed_contract_problems(moved) == [
        "scm_shipments: the `cursor:` line does not name tryton_stock/deliveries"]


def test_the_in_line_parser_reads_notes_apart_from_types() -> None:
    said = docgen.consumes("canonical.approval.v1 (approval.decided: approved / rejected / "
                           "expired) key: approval id   group: oa-decisions")
    assert said == docgen.Consumes("canonical.approval.v1", frozenset({"approval.decided"}),
                                   "oa-decisions")
    said = docgen.consumes("canonical.order.v1 (order.accepted, data.number = the ERP's "
                           "number)   key: order id   group: crm-orders")
    assert said.types == frozenset({"order.accepted"}) and said.group == "crm-orders"
    said = docgen.consumes("canonical.order.v1 (order.accepted: the ERP's number, totals; "
                           "order.refused)   key: order id   group: crm-orders")
    assert said.types == frozenset({"order.accepted", "order.refused"})
    fields = docgen.contract('''Summary: not a field.

    in:  bottlecrm.webhook.raw (account.created, deal.won)   key: CRM record id
         group: bottlecrm-webhooks
    out: canonical.customer.v1
    Prose ends a field.
    ''')
    assert fields["in"] == ("bottlecrm.webhook.raw (account.created, deal.won)   key: CRM "
                            "record id group: bottlecrm-webhooks")
    assert fields["out"] == "canonical.customer.v1"


def test_hub_and_connectors_name_the_same_config_file() -> None:
    assert connectors.spec.CONFIG_FILE_ENV == crmhub.settings.CONFIG_FILE_ENV


class _Described(BaseSettings):
    # a heading above a commented field
    commented: str = "#x"  # trailing wins
    # two lines
    # above it
    above: int = 1
    field: str = Field(default="", description="from Field(description=...)")
    documented: str = "x"
    """its docstring"""
    bare: str = "#not a comment"
    secret: SecretStr = SecretStr("hunter22")
    bounded: float = Field(default=2.0, ge=1, le=10)


def test_settings_descriptions_types_and_defaults_come_from_the_code() -> None:
    said = {name: docgen.description(_Described, name) for name in _Described.model_fields}
    assert said == {"commented": "trailing wins", "above": "two lines above it",
                    "field": "from Field(description=...)", "documented": "its docstring",
                    "bare": "", "secret": "", "bounded": ""}
    table = docgen.settings_table(_Described)
    assert "hunter22" not in table and "| secret | `***` (secret) |" in table
    assert "| float 1–10 | `2.0` |" in table
