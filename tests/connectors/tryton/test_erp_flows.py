"""The ERP flows and feeds against a real Tryton 8.0 (sandbox), a real Tansu broker and a real
state store: customers become one party, won orders one confirmed sale, and invoices,
payments and shipments done in Tryton come back as canonical events, once each."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from connectors.tryton.client import TrytonClient
from connectors.tryton.erp import TrytonErp
from connectors.tryton.settings import TrytonSettings
from connectors.tryton_stock.stock import TrytonStock
from crmhub import topics
from crmhub.dev.sandbox import tryton_ops
from crmhub.dev.sandbox.tryton import TrytonServer, template_info
from crmhub.feed import Feed
from crmhub.hub import Hub
from crmhub.step import Flow
from flows import customer_to_erp, erp_invoices, erp_payments, order_to_erp, scm_shipments
from mappings.tryton import order as order_mapping
from schemas.canonical import Address, Contact, Customer, Order
from schemas.envelope import Event, Source
from tests.conftest import HubFactory, eventually, publish, read_topic
from tests.connectors.tryton.conftest import settings_for


def erp_flows(settings: TrytonSettings) -> list[Flow[Any, Any]]:
    return [replace(customer_to_erp.flow, sink=lambda: TrytonErp(settings)),
            replace(order_to_erp.flow, sink=lambda: TrytonErp(settings))]


def erp_feeds(settings: TrytonSettings) -> list[Feed[Any, Any]]:
    return [replace(erp_invoices.feed, source=lambda: TrytonErp(settings)),
            replace(erp_payments.feed, source=lambda: TrytonErp(settings)),
            replace(scm_shipments.feed, source=lambda: TrytonStock(settings))]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def customer_event(customer_id: str, name: str = "ACME Maschinenbau GmbH",
                   city: str = "Stuttgart", version: int = 1) -> Event[Customer]:
    data = Customer(id=customer_id, name=name, currency="EUR",
                    addresses=[Address(kind="billing", street="Hauptstr. 1", city=city,
                                       postal_code="70173", country="DE")],
                    contacts=[Contact(name="Erika Muster", email="erika@example.com")])
    return Event[Customer](type="customer.upserted", entity="customer", entity_id=customer_id,
                           source=Source(system="crm", id=customer_id), origin="crm",
                           entity_version=version, data=data)


def order_event(order_id: str, customer_id: str, lines: list[dict[str, str]] | None = None,
                currency: str = "EUR") -> Event[Order]:
    data = Order.build(id=order_id, customer_id=customer_id, currency=currency,
                       ordered_on=date.today(), deal_id=f"deal-{order_id}", lines=lines or [
                           {"sku": "WIDGET", "quantity": "3", "unit_price": "12.50",
                            "tax_rate": "19"},
                           {"sku": "MANUAL", "quantity": "1", "unit_price": "19.00",
                            "tax_rate": "7"}])
    return Event[Order](type="order.won", entity="order", entity_id=order_id,
                        source=Source(system="crm", id=order_id), origin="crm", data=data)


async def sales_for(client: TrytonClient, order_id: str) -> list[dict[str, Any]]:
    return await client.search_read("sale.sale", [("reference", "=", order_id)],
                                    ["number", "state", "total_amount", "lines"])


async def events_of(hub: Hub, topic: str, count: int, timeout: float = 3.0) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in await read_topic(hub.bootstrap_servers, topic, count,
                                                           timeout=timeout)]


async def won_and_invoiced(hub: Hub, erp: TrytonClient, customer: str,
                           order: str) -> tuple[int, int]:
    """Publish a customer and a won order; wait for the sale; return it and its invoice."""
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    await publish(hub.bootstrap_servers, topics.ORDER, order_event(order, customer))
    sale_id = int(await eventually(lambda: hub.store.external_id("order", order, "tryton"),
                                   message="order placed", timeout=60))
    [invoice_id] = await tryton_ops.sale_invoices(erp, sale_id)
    return sale_id, invoice_id


@pytest.fixture
async def erp(tryton_settings: TrytonSettings) -> Any:
    client = TrytonClient(tryton_settings)
    yield client
    await client.aclose()


async def test_customer_upserted_twice_is_one_party(
        make_hub: HubFactory, tryton_settings: TrytonSettings, erp: TrytonClient) -> None:
    hub = await make_hub(erp_flows(tryton_settings))
    customer = unique("C")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    await eventually(lambda: hub.store.external_id("customer", customer, "tryton"),
                     message="customer bound", timeout=30)
    await publish(hub.bootstrap_servers, topics.CUSTOMER,
                  customer_event(customer, name="ACME Maschinenbau AG", city="Esslingen",
                                 version=2))
    await eventually(lambda: hub.metrics.succeeded.labels("customer_to_erp")._value.get() == 2,
                     message="update synced", timeout=30)
    parties = await erp.search_read("party.party",
                                    [("identifiers.code", "=", f"crmhub:{customer}")],
                                    ["name", "addresses", "contact_mechanisms"])
    assert len(parties) == 1
    assert parties[0]["name"] == "ACME Maschinenbau AG"
    [address] = await erp.read("party.address", parties[0]["addresses"], ["city", "country"])
    assert address["city"] == "Esslingen"
    assert str(parties[0]["id"]) == hub.store.external_id("customer", customer, "tryton")
    assert len(parties[0]["contact_mechanisms"]) == 1


async def test_won_order_three_times_before_its_customer_is_one_confirmed_sale(
        make_hub: HubFactory, tryton_settings: TrytonSettings, erp: TrytonClient) -> None:
    hub = await make_hub(erp_flows(tryton_settings))
    customer, order = unique("C"), unique("O")
    won = order_event(order, customer)
    again = won.model_copy(update={"event_id": uuid.uuid4()})  # the CRM sent it again
    await publish(hub.bootstrap_servers, topics.ORDER, won, won, again)
    await eventually(lambda: hub.store.list_parked(), message="order parked")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    await eventually(lambda: hub.store.external_id("order", order, "tryton"),
                     message="order placed", timeout=60)
    await eventually(lambda: hub.metrics.succeeded.labels("order_to_erp")._value.get() == 2,
                     message="both distinct events done", timeout=60)
    [sale] = await sales_for(erp, order)
    assert sale["state"] in ("confirmed", "processing")
    # 37.50 + 19% tax 7.125 -> 7.12 (Tryton rounds half to even); 19.00 + 7% 1.33
    assert sale["total_amount"] == Decimal("64.95")
    assert len(sale["lines"]) == 2
    accepted = [e for e in await events_of(hub, topics.ORDER, 5)
                if e["type"] == "order.accepted"]
    assert {e["data"]["number"] for e in accepted} == {sale["number"]}
    assert {e["source"]["id"] for e in accepted} == {str(sale["id"])}
    assert not hub.store.list_dead_letters()


async def test_bad_orders_are_dead_lettered_with_the_reason_and_the_next_one_flows(
        make_hub: HubFactory, tryton_settings: TrytonSettings, erp: TrytonClient) -> None:
    hub = await make_hub(erp_flows(tryton_settings))
    customer = unique("C")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    unknown = order_event(unique("O"), customer, lines=[
        {"sku": "NO-SUCH-SKU", "quantity": "1", "unit_price": "5.00", "tax_rate": "19"}])
    negative = json.loads(order_event(unique("O"), customer).to_bytes())
    negative["data"]["lines"][0]["quantity"] = "-2"
    good = order_event(unique("O"), customer)
    await publish(hub.bootstrap_servers, topics.ORDER, unknown,
                  json.dumps(negative).encode(), good)
    await eventually(lambda: hub.store.external_id("order", good.entity_id, "tryton"),
                     message="the good order placed", timeout=60)
    letters = {letter.error_class: letter.error_message
               for letter in hub.store.list_dead_letters()}
    assert "unknown product 'NO-SUCH-SKU'" in letters["MappingError"]
    assert "quantity" in letters["DecodeError"] and "greater than 0" in letters["DecodeError"]
    assert not await sales_for(erp, unknown.entity_id)


async def test_invoice_payments_and_shipment_in_tryton_arrive_once_each(
        make_hub: HubFactory, tryton_settings: TrytonSettings, erp: TrytonClient) -> None:
    hub = await make_hub(erp_flows(tryton_settings), erp_feeds(tryton_settings),
                         poll_interval_seconds=0.5, poll_overlap_seconds=30)
    customer, order = unique("C"), unique("O")
    sale_id, invoice_id = await won_and_invoiced(hub, erp, customer, order)
    await tryton_ops.post_invoice(erp, invoice_id)
    method = template_info()["seeded"]["payment_method"]
    await tryton_ops.pay_invoice(erp, invoice_id, Decimal("30.00"), method)
    # a poll sees states, not transitions: let it see the partial payment before the rest
    # (the shared Tryton also holds earlier tests' invoices: look for this one's event)
    async def partially_paid() -> bool:
        return any(e["entity_id"] == f"tryton-invoice-{invoice_id}"
                   and e["data"]["payment_state"] == "partially_paid"
                   for e in await events_of(hub, topics.INVOICE, 50, timeout=0.5))

    await eventually(partially_paid, message="partial payment published", timeout=30)
    await tryton_ops.pay_invoice(erp, invoice_id, Decimal("34.95"), method)
    [shipment_id] = await tryton_ops.sale_shipments(erp, sale_id)
    assert await tryton_ops.ship(erp, shipment_id) == "done"

    invoice_key = f"tryton-invoice-{invoice_id}"
    async def published(topic: str, count: int, match: str) -> bool:
        return len([e for e in await events_of(hub, topic, 100, timeout=0.5)
                    if match in json.dumps(e)]) >= count

    await eventually(lambda: published(topics.PAYMENT, 2, f'"tryton-invoice-{invoice_id}"'),
                     message="payments published", timeout=30)
    await eventually(lambda: published(topics.SHIPMENT, 2, f'"{order}"'),
                     message="shipment published", timeout=30)
    polls = hub.metrics.feed_polls.labels("erp_payments")._value.get()
    await eventually(lambda: hub.metrics.feed_polls.labels("erp_payments")._value.get()
                     >= polls + 3, message="three more polls")  # re-reads publish nothing

    invoices = [e for e in await events_of(hub, topics.INVOICE, 500) if e["entity_id"] ==
                invoice_key]
    states = sorted((e["data"]["payment_state"], e["data"]["amount_residual"])
                    for e in invoices if e["type"] == "invoice.payment_state_changed")
    assert states == [("paid", "0.00"), ("partially_paid", "34.95")]
    [posted] = [e for e in invoices if e["type"] == "invoice.posted"]
    assert posted["data"]["order_id"] == order and posted["data"]["customer_id"] == customer
    assert posted["data"]["total"] == "64.95"
    payments = [e for e in await events_of(hub, topics.PAYMENT, 500)
                if e["data"]["allocations"][0]["invoice_id"] == invoice_key]
    assert sorted(e["data"]["amount"] for e in payments) == ["30.00", "34.95"]
    assert len({e["event_id"] for e in payments}) == 2
    shipments = [e for e in await events_of(hub, topics.SHIPMENT, 500)
                 if e["data"]["order_id"] == order]
    assert sorted(e["type"] for e in shipments) == ["shipment.delivered", "shipment.dispatched"]
    assert not hub.store.list_dead_letters()


async def test_overdue_invoice_is_reported_once(make_hub: HubFactory,
                                                own_tryton: TrytonServer) -> None:
    tryton_settings = settings_for(own_tryton)
    erp = TrytonClient(tryton_settings)
    hub = await make_hub(erp_flows(tryton_settings), erp_feeds(tryton_settings)[1:2],
                         poll_interval_seconds=0.5)
    customer, order = unique("C"), unique("O")
    sale_id, invoice_id = await won_and_invoiced(hub, erp, customer, order)
    yesterday = date.today() - timedelta(days=1)
    await tryton_ops.post_invoice(erp, invoice_id, invoice_date=yesterday, due_date=yesterday)
    await eventually(lambda: hub.metrics.succeeded.labels("erp_payments")._value.get() >= 1,
                     message="overdue published", timeout=30)
    polls = hub.metrics.feed_polls.labels("erp_payments")._value.get()
    await eventually(lambda: hub.metrics.feed_polls.labels("erp_payments")._value.get()
                     >= polls + 3, message="three more polls")
    overdue = [e for e in await events_of(hub, topics.INVOICE, 5)
               if e["entity_id"] == f"tryton-invoice-{invoice_id}"]
    assert [(e["type"], e["data"]["payment_state"]) for e in overdue] == [
        ("invoice.payment_state_changed", "overdue")]
    await erp.aclose()


async def test_erp_outage_pauses_instead_of_dead_lettering_and_all_orders_land(
        make_hub: HubFactory, own_tryton: TrytonServer) -> None:
    tryton_settings = settings_for(own_tryton).model_copy(
        update={"timeout_seconds": 5.0, "connect_timeout_seconds": 1.0})
    hub = await make_hub(erp_flows(tryton_settings), workers_per_flow=4)
    customer = unique("C")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    await eventually(lambda: hub.store.external_id("customer", customer, "tryton"),
                     message="customer bound", timeout=30)
    own_tryton.halt()  # the ERP goes away mid-stream
    orders = [order_event(unique("O"), customer) for _ in range(4)]
    await publish(hub.bootstrap_servers, topics.ORDER, *orders)
    await eventually(lambda: [t for t in hub.store.targets()
                              if t.system == "tryton" and t.down_since is not None],
                     message="ERP marked down", timeout=30)
    assert hub.metrics.retried.labels("order_to_erp")._value.get() > 0
    own_tryton.resume()
    for won in orders:
        await eventually(lambda won=won: hub.store.external_id("order", won.entity_id,
                                                               "tryton"),
                         message=f"{won.entity_id} placed after the restart", timeout=60)
    assert not hub.store.list_dead_letters()
    assert not [t for t in hub.store.targets() if t.down_since is not None]
    async with TrytonClient(settings_for(own_tryton)) as erp:
        for won in orders:
            assert len(await sales_for(erp, won.entity_id)) == 1


async def test_concurrent_orders_on_postgresql_tryton_each_become_one_sale(
        make_hub: HubFactory) -> None:
    """Eight orders at a time against a PostgreSQL-backed Tryton (SQLite would lose writes),
    every one delivered twice: each becomes exactly one confirmed sale."""
    server = TrytonServer(backend="postgresql")
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"the PostgreSQL-backed Tryton sandbox did not start: {exc}")
    try:
        tryton_settings = settings_for(server)
        hub = await make_hub(erp_flows(tryton_settings), workers_per_flow=8)
        customers = [unique("C") for _ in range(4)]
        await publish(hub.bootstrap_servers, topics.CUSTOMER,
                      *(customer_event(c) for c in customers))
        orders = [order_event(unique("O"), customers[i % 4]) for i in range(24)]
        await publish(hub.bootstrap_servers, topics.ORDER, *orders, *orders)
        await eventually(
            lambda: all(hub.store.external_id("order", o.entity_id, "tryton") for o in orders),
            message="every order placed", timeout=120)
        assert not hub.store.list_dead_letters()
        async with TrytonClient(tryton_settings) as erp:
            sales = await erp.search_read(
                "sale.sale", [("reference", "in", [o.entity_id for o in orders])],
                ["reference", "state", "number"])
        assert sorted(s["reference"] for s in sales) == sorted(o.entity_id for o in orders)
        assert {s["state"] for s in sales} <= {"confirmed", "processing"}
        assert len({s["number"] for s in sales}) == len(orders)
    finally:
        server.stop()


async def test_crash_after_the_erp_created_the_sale_does_not_create_a_second(
        make_hub: HubFactory, tryton_settings: TrytonSettings, erp: TrytonClient) -> None:
    """The hub died after Tryton created the sale and before quote, confirm and the ledger
    write: the redelivered order finds the draft by reference and finishes it."""
    hub = await make_hub(erp_flows(tryton_settings))
    customer, order = unique("C"), unique("O")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    party = await eventually(lambda: hub.store.external_id("customer", customer, "tryton"),
                             message="customer bound", timeout=30)
    won = order_event(order, customer)
    crashed = TrytonErp(tryton_settings)
    catalogue = await crashed.catalogue(order_mapping.products_wanted(won.data), "EUR")
    await crashed._create_sale(order_mapping.to_sale(won.data, Binds(customer, party),
                                                     catalogue))
    await crashed.aclose()
    [draft] = await sales_for(erp, order)
    assert draft["state"] == "draft"
    await publish(hub.bootstrap_servers, topics.ORDER, won)
    await eventually(lambda: hub.store.external_id("order", order, "tryton"),
                     message="order placed", timeout=60)
    [sale] = await sales_for(erp, order)
    assert sale["id"] == draft["id"] and sale["state"] in ("confirmed", "processing")


async def test_unknown_products_are_created_when_the_setting_says_so(
        make_hub: HubFactory, tryton_settings: TrytonSettings, erp: TrytonClient) -> None:
    auto = tryton_settings.model_copy(update={"auto_create_products": True})
    hub = await make_hub(erp_flows(auto))
    customer, order, sku = unique("C"), unique("O"), unique("NEW").upper()
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    await publish(hub.bootstrap_servers, topics.ORDER, order_event(order, customer, lines=[
        {"sku": sku, "description": "Flansch DN50", "quantity": "2", "unit_price": "45.125",
         "tax_rate": "19"}]))
    await eventually(lambda: hub.store.external_id("order", order, "tryton"),
                     message="order placed", timeout=60)
    [product] = await erp.search_read("product.product", [("code", "=", sku)],
                                      ["rec_name", "list_price_used"])
    assert "Flansch DN50" in product["rec_name"]
    assert product["list_price_used"] == Decimal("45.125")
    [sale] = await sales_for(erp, order)
    assert sale["total_amount"] == Decimal("107.40")  # 90.25 + 19% (17.1475 -> 17.15)


class Binds:
    def __init__(self, customer: str, party: str) -> None:
        self.customer, self.party = customer, party

    def get(self, entity: str, canonical_id: str, system: str) -> str | None:
        return self.party if canonical_id == self.customer else None

    def require(self, entity: str, canonical_id: str, system: str) -> str:
        return self.party
