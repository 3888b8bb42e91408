"""CRM -> hub -> ERP -> hub -> CRM with the real BottleCRM and the real Tryton (sandboxes), a
real Tansu broker and SQLite state: BottleCRM calls the hub's HTTP ingress with signed
webhooks, the hub places the sale in Tryton, and the ERP number, the invoice, its payments,
the delivery and approval decisions land back on the deal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from connectors.bottlecrm.client import BottleCrm
from connectors.bottlecrm.webhooks import sign
from connectors.tryton.client import TrytonClient
from crmhub import ingress, topics
from crmhub.dev.sandbox import tryton_ops
from crmhub.dev.sandbox.tryton import template_info
from crmhub.embedded import EmbeddedBroker
from schemas.canonical import Approval
from schemas.envelope import Event, Source
from tests.conftest import eventually, publish, read_topic
from tests.connectors.bottlecrm.conftest import (
    LoopFactory,
    comments,
    in_thread,
    new_deal,
    win,
    won_in_tryton,
)
from tests.connectors.tryton.test_erp_flows import sales_for

# The first test to ask for the BottleCRM sandbox may build it: a venv and ~2-3 minutes of
# migrations on a fresh machine.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: these tests are about the systems; the store runs both elsewhere."""
    return f"sqlite:///{tmp_path / 'state.sqlite'}"


async def test_a_won_deal_is_one_confirmed_sale_whose_number_shows_on_the_deal(
        crm_loop: LoopFactory, erp: TrytonClient) -> None:
    loop = await crm_loop()
    deal = await in_thread(new_deal, loop.crm)
    sale = await won_in_tryton(loop, erp, deal)
    # the products' own taxes: WIDGET 37.50 + 19% (7.125 -> 7.12, half to even as Tryton
    # rounds), MANUAL 19.00 + 7% (1.33); the note shows the ERP's figures
    assert sale["total_amount"] == Decimal("64.95")
    note = f"ERP order {sale['number']} confirmed: total 64.95 EUR (net 56.50 + tax 8.45)"
    await eventually(lambda: in_thread(lambda: any(note in c for c in comments(
        loop.crm, deal.deal_id))), timeout=30, message="the ERP number on the deal")

    # BottleCRM sends the deal.won again (its "redeliver": a new delivery of the same event),
    # and a forger sends it with a guessed secret: still one sale, one 401
    [won] = await loop.deliveries("deal.won")
    await in_thread(lambda: loop.crm.api(
        "POST", f"/api/webhooks/deliveries/{won['id']}/redeliver/", jwt=True))
    body = json.dumps(won["payload"], separators=(",", ":")).encode()
    async with httpx.AsyncClient() as client:
        forged = await client.post(
            f"http://127.0.0.1:{loop.port}/ingress/bottlecrm", content=body, headers={
                "X-BottleCRM-Delivery": str(uuid.uuid4()), "Content-Type": "application/json",
                "X-BottleCRM-Signature": sign("whsec_guessed", int(datetime.now(UTC)
                                                                   .timestamp()), body)})
    assert forged.status_code == 401
    await eventually(lambda: len([d for d in loop.crm.deliveries(loop.endpoint)
                                  if d["event"] == "deal.won" and d["status"] == "succeeded"])
                     == 2, message="the redelivery accepted", timeout=30)
    hub = loop.hub
    await eventually(lambda: hub.metrics.consumed.labels("crm_webhooks")._value.get() >= 3,
                     message="the redelivery consumed", timeout=30)
    assert len(await sales_for(erp, deal.deal_id)) == 1
    events = await loop.crm_flow_events()
    assert sorted(e["type"] for e in events) == ["customer.upserted", "order.won"]
    [order] = [e["data"] for e in events if e["type"] == "order.won"]
    assert order["customer_id"] == deal.account_id and order["deal_id"] == deal.deal_id
    assert [(li["sku"], li["quantity"], li["unit_price"]) for li in order["lines"]] == [
        ("WIDGET", "3.00", "12.50"), ("MANUAL", "1.00", "19.00")]
    assert hub.metrics.ingress.labels("bottlecrm", "forged")._value.get() == 1
    assert not hub.store.list_dead_letters(), hub.store.list_dead_letters()


async def test_invoice_paid_in_two_parts_in_tryton_ends_paid_in_bottlecrm_without_echoes(
        crm_loop: LoopFactory, erp: TrytonClient) -> None:
    loop = await crm_loop()
    deal = await in_thread(new_deal, loop.crm)
    sale = await won_in_tryton(loop, erp, deal)
    [invoice_id] = await tryton_ops.sale_invoices(erp, sale["id"])
    await tryton_ops.post_invoice(erp, invoice_id)
    (tryton_invoice,) = await erp.read("account.invoice", [invoice_id],
                                       ["number", "total_amount"])
    crm = BottleCrm(loop.settings)
    try:
        reference = f"tryton-invoice-{invoice_id}"
        crm_id = await eventually(
            lambda: loop.hub.store.external_id("invoice", reference, "bottlecrm"), timeout=60,
            message="the invoice in BottleCRM")
        invoice = await crm.invoice(crm_id)
        assert invoice.status == "Sent" and (await crm.find_invoice(reference)) == invoice
        assert invoice.total_amount == tryton_invoice["total_amount"] == Decimal("64.95")
        assert invoice.invoice_title == f"{tryton_invoice['number']} [{reference}]"
        method = template_info()["seeded"]["payment_method"]
        await tryton_ops.pay_invoice(erp, invoice_id, Decimal("30.00"), method)
        await eventually(lambda: status_is(crm, invoice.id, "Partially_Paid"), timeout=60,
                         message="Partially_Paid in BottleCRM")
        await tryton_ops.pay_invoice(erp, invoice_id, Decimal("34.95"), method)
        await eventually(lambda: status_is(crm, invoice.id, "Paid"), timeout=60,
                         message="Paid in BottleCRM")
        payments = await crm.payments(invoice.id)
        assert sorted(p.amount for p in payments) == [Decimal("30.00"), Decimal("34.95")]
        [shipment] = await tryton_ops.sale_shipments(erp, sale["id"])
        await tryton_ops.ship(erp, shipment)
        await eventually(lambda: in_thread(lambda: any("Delivered" in c for c in comments(
            loop.crm, deal.deal_id))), timeout=60, message="the delivery on the deal")
    finally:
        await crm.aclose()
    # The hub's own writes (the invoice, its payments, the notes) came back as invoice.*
    # webhooks; none became a canonical event
    await eventually(lambda: loop.deliveries("invoice.paid"), message="invoice.paid echoed")
    hub = loop.hub
    raw = [json.loads(r.value) for r in await read_topic(hub.bootstrap_servers, ingress.TOPIC,
                                                         100, timeout=1.0)]
    assert {"invoice.created", "invoice.updated", "invoice.paid"} <= {e["type"] for e in raw}
    assert sorted(e["type"] for e in await loop.crm_flow_events()) == [
        "customer.upserted", "order.won"]
    assert not hub.store.list_dead_letters(), hub.store.list_dead_letters()


async def status_is(crm: BottleCrm, invoice_id: str, status: str) -> bool:
    return (await crm.invoice(invoice_id)).status == status


async def test_a_webhook_arriving_while_the_broker_is_down_is_retried_by_the_crm(
        crm_loop: LoopFactory, erp: TrytonClient, broker: EmbeddedBroker) -> None:
    loop = await crm_loop()
    deal = await in_thread(new_deal, loop.crm)
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)  # the hub's Kafka stops answering
    try:
        await in_thread(win, loop.crm, deal.deal_id)  # BottleCRM delivers: we answer 503
        refused = await eventually(
            lambda: [d for d in loop.crm.deliveries(loop.endpoint) if d["event"] == "deal.won"
                     and d["attempts"] >= 2 and d["response_status"] == 503],
            timeout=60, message="BottleCRM retrying the deal.won after our 503s")
        assert refused[0]["status"] == "pending"
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
    await eventually(lambda: sales_for(erp, deal.deal_id), timeout=90,
                     message="the sale placed after the outage")
    # (a send the producer still held when we said 503 may have got there first: then the
    # CRM's next retry is the duplicate, dropped by the ledger)
    [won] = await eventually(lambda: [d for d in loop.crm.deliveries(loop.endpoint)
                                      if d["event"] == "deal.won" and d["status"] == "succeeded"],
                             timeout=30, message="BottleCRM's retry accepted")
    assert won["attempts"] >= 3
    assert loop.hub.metrics.ingress.labels("bottlecrm", "unavailable")._value.get() >= 2
    assert len(await sales_for(erp, deal.deal_id)) == 1


async def test_a_rejected_approval_closes_the_deal_as_lost_with_the_reason(
        crm_loop: LoopFactory) -> None:
    loop = await crm_loop(erp=False)
    deal = await in_thread(new_deal, loop.crm)
    await in_thread(win, loop.crm, deal.deal_id)
    await eventually(lambda: loop.hub.store.external_id("order", deal.deal_id, "bottlecrm"),
                     timeout=30, message="the won deal bound as an order")
    now = datetime.now(UTC)
    for state, comment in (("approved", None), ("rejected", "价格太低 - margin below 10%")):
        decided = Approval(id=f"approval-{deal.deal_id}", order_id=deal.deal_id, state=state,
                           approver="Jane Roe", comment=comment, requested_at=now,
                           decided_at=now)
        event = Event[Approval](type="approval.decided", entity="approval",
                                entity_id=decided.id, source=Source(system="oa", id="m-1"),
                                origin="oa", data=decided)
        await publish(loop.hub.bootstrap_servers, topics.APPROVAL, event, event)  # twice
    await eventually(lambda: in_thread(lambda: loop.crm.api(
        "GET", f"/api/opportunities/{deal.deal_id}/")["opportunity_obj"]["stage"]
        == "CLOSED_LOST"), timeout=30, message="the deal closed as lost")
    notes = await in_thread(comments, loop.crm, deal.deal_id)
    assert sorted(n.split(" [")[0] for n in notes if "approval" in n) == [
        "Order approval approved by Jane Roe",  # each once, though each was published twice
        "Order approval rejected by Jane Roe: 价格太低 - margin below 10%"]
    # the stage change echoes back as deal.updated / deal.lost: no new canonical event
    await eventually(lambda: loop.deliveries("deal.lost"), message="deal.lost echoed")
    await asyncio.sleep(1.0)
    assert sorted(e["type"] for e in await loop.crm_flow_events()) == [
        "customer.upserted", "order.won"]
    assert not loop.hub.store.list_dead_letters()
