"""One real BottleCRM for the connector tests: the sandbox, started once per session.

Tests share it, so each one names its own accounts and deals (names are unique per org) and
registers (and deletes) its own webhook endpoint. A sandbox that cannot be built or started
fails the tests that need it, with the reason; nothing skips.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from connectors.bottlecrm.settings import BottleCrmSettings
from crmhub.sandbox.bottlecrm import BottleCrmServer


@pytest.fixture(scope="session")
def bottlecrm_server() -> Iterator[BottleCrmServer]:
    server = BottleCrmServer()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"the BottleCRM sandbox did not start: {exc}")
    yield server
    server.stop()


def crm_settings(server: BottleCrmServer, **overrides: Any) -> BottleCrmSettings:
    values: dict[str, Any] = dict(url=server.url, token=server.token, timeout_seconds=60.0)
    values.update(overrides)
    return BottleCrmSettings(**values)


@dataclass(frozen=True)
class Deal:
    account_id: str
    contact_id: str
    deal_id: str
    name: str


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def new_account(crm: BottleCrmServer, name: str | None = None, **fields: Any) -> str:
    values = {"name": name or unique("ACME Maschinenbau"), "email": "einkauf@acme.example",
              "city": "Stuttgart", "country": "DE", "currency": "EUR", **fields}
    return str(crm.api("POST", "/api/accounts/", values)["id"])


def new_deal(crm: BottleCrmServer, lines: Sequence[tuple[str, str, str]] = (
        ("WIDGET", "3", "12.50"), ("MANUAL", "1", "19.00")), *,
        account_id: str | None = None) -> Deal:
    """An account with a contact and an open deal with these (sku, quantity, price) lines."""
    account = account_id or new_account(crm)
    contact = str(crm.api("POST", "/api/contacts/", {
        "first_name": "Erika", "last_name": unique("Muster"),
        "email": f"erika.{uuid.uuid4().hex[:8]}@acme.example", "account": account})["id"])
    name = unique("Pumps for")
    deal = str(crm.api("POST", "/api/opportunities/", {
        "name": name, "account": account, "stage": "NEGOTIATION", "currency": "EUR",
        "contacts": [contact]})["id"])
    for sku, quantity, price in lines:
        crm.api("POST", f"/api/opportunities/{deal}/line-items/", {
            "product_id": crm.products[sku], "quantity": quantity, "unit_price": price})
    return Deal(account, contact, deal, name)


def win(crm: BottleCrmServer, deal_id: str) -> None:
    crm.api("PATCH", f"/api/opportunities/{deal_id}/",
            {"stage": "CLOSED_WON", "closed_on": date.today().isoformat()})


def comments(crm: BottleCrmServer, deal_id: str) -> list[str]:
    return [c["comment"] for c in crm.api("GET", f"/api/opportunities/{deal_id}/")["comments"]]


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)
