"""One real BottleCRM for the connector tests: the sandbox, started once per session; and
the CRM loop (BottleCRM -> hub -> a real Tryton -> hub -> BottleCRM) the flow tests share.

Tests share it, so each one names its own accounts and deals (names are unique per org) and
registers (and deletes) its own webhook endpoint. A sandbox that cannot be built or started
fails the tests that need it, with the reason; nothing skips.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from connectors.bottlecrm.client import BottleCrm
from connectors.bottlecrm.settings import BottleCrmSettings
from connectors.tryton.client import TrytonClient
from crmhub import topics
from crmhub.dev.sandbox.bottlecrm import BottleCrmServer
from crmhub.dev.sandbox.tryton import TrytonServer
from crmhub.embedded import free_port
from crmhub.http import HttpServer
from crmhub.hub import Hub
from crmhub.step import Flow
from flows import (
    approval_to_crm,
    crm_webhooks,
    invoice_state_to_crm,
    invoice_to_crm,
    order_to_crm,
    payment_to_crm,
    shipment_to_crm,
)
from tests.conftest import HubFactory, eventually, read_topic
from tests.connectors.tryton.conftest import settings_for, started
from tests.connectors.tryton.test_erp_flows import erp_feeds, erp_flows, sales_for


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


# --- the CRM loop: BottleCRM -> hub -> Tryton -> hub -> BottleCRM, real systems --------------

CRM_FLOWS = (crm_webhooks, order_to_crm, invoice_to_crm, payment_to_crm, invoice_state_to_crm,
             shipment_to_crm, approval_to_crm)


@pytest.fixture(scope="session")
def tryton_server() -> Iterator[TrytonServer]:
    yield from started()


@dataclass
class Loop:
    hub: Hub
    crm: BottleCrmServer
    settings: BottleCrmSettings
    endpoint: str
    port: int

    def crm_flow_events(self) -> Awaitable[list[dict[str, Any]]]:
        """Canonical events crm_webhooks published (header x-crmhub-flow)."""
        return _flow_events(self.hub, "crm_webhooks")

    async def deliveries(self, event: str) -> list[dict[str, Any]]:
        return [d for d in await in_thread(self.crm.deliveries, self.endpoint)
                if d["event"] == event]


async def _flow_events(hub: Hub, flow: str) -> list[dict[str, Any]]:
    """Distinct events (by id: a handler re-run after a store race re-publishes the same ids,
    which every ledger drops) the flow published to the customer and order topics."""
    records = await read_topic(hub.bootstrap_servers, topics.CUSTOMER, 500, timeout=1.0)
    records += await read_topic(hub.bootstrap_servers, topics.ORDER, 500, timeout=1.0)
    events = {}
    for record in records:
        if dict(record.headers).get("x-crmhub-flow") == flow.encode():
            event = json.loads(record.value)
            events[event["event_id"]] = event
    return list(events.values())


LoopFactory = Callable[..., Awaitable[Loop]]


@pytest.fixture
async def crm_loop(make_hub: HubFactory, bottlecrm_server: BottleCrmServer,
                   tryton_server: TrytonServer) -> AsyncIterator[LoopFactory]:
    """Start a hub with the CRM flows (and the ERP's, unless erp=False) and its HTTP ingress
    registered as a BottleCRM webhook endpoint; unregistered and stopped afterwards."""
    servers: list[tuple[HttpServer, str]] = []

    async def factory(erp: bool = True, **overrides: Any) -> Loop:
        port = free_port()
        endpoint, secret = await in_thread(bottlecrm_server.register_webhook,
                                           f"http://127.0.0.1:{port}/ingress/bottlecrm")
        settings = crm_settings(bottlecrm_server, webhook_secret=secret,
                                publish_timeout_seconds=2.0, default_tax_rate=Decimal(19))
        flows: list[Flow[Any, Any]] = [replace(m.flow, sink=lambda: BottleCrm(settings))
                                       for m in CRM_FLOWS]
        tryton = settings_for(tryton_server)
        hub = await make_hub(flows + (erp_flows(tryton) if erp else []),
                             erp_feeds(tryton) if erp else [], poll_interval_seconds=0.5,
                             poll_overlap_seconds=30, **overrides)
        http = HttpServer(hub, "127.0.0.1", port, bottlecrm=settings)
        await http.start()
        servers.append((http, endpoint))
        return Loop(hub, bottlecrm_server, settings, endpoint, port)

    yield factory
    for http, endpoint in servers:
        await http.stop()
        await in_thread(bottlecrm_server.unregister_webhook, endpoint)


async def won_in_tryton(loop: Loop, erp: TrytonClient, deal: Deal) -> dict[str, Any]:
    """Mark the deal won in BottleCRM; wait until order_to_erp has placed its Tryton sale."""
    await in_thread(win, loop.crm, deal.deal_id)
    await eventually(lambda: loop.hub.store.external_id("order", deal.deal_id, "tryton"),
                     timeout=90, message="the won deal placed in Tryton")
    [sale] = await sales_for(erp, deal.deal_id)
    assert sale["state"] in ("confirmed", "processing")
    return dict(sale)


@pytest.fixture
async def erp(tryton_server: TrytonServer) -> AsyncIterator[TrytonClient]:
    client = TrytonClient(settings_for(tryton_server))
    yield client
    await client.aclose()
