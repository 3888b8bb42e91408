"""The demo scenario: the main job on embedded defaults, driven end to end and narrated.

Embedded Tansu broker, SQLite state under var/demo/, the Tryton sandbox as ERP and SCM, and
every flow and feed in flows.FLOWS / flows.FEEDS. A won order arrives before its customer
(parked, then replayed), a second order is delivered twice (one drop), and one message is
garbage (dead-lettered, nothing stalls). The EUR order becomes a confirmed Tryton sale; its
invoice is posted, paid in two parts and its goods shipped in Tryton, and the feeds bring
each change back as a canonical event. The CNY order is refused by the ERP (no CNY there).
Then the CRM loop with BottleCRM (run_crm_scenario): a deal won in BottleCRM becomes a Tryton
sale whose number shows on the deal, and the ERP's invoice, paid in Tryton, ends Paid there.
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from connectors.tryton.client import TrytonClient
from crmhub import topics
from crmhub.dev.sandbox import tryton_ops
from crmhub.dev.sandbox.bottlecrm import BottleCrmServer
from crmhub.hub import Hub
from crmhub.settings import HubSettings
from schemas.canonical import Address, Customer, Order
from schemas.envelope import Event, Source

DEMO_DIR = Path("var/demo")


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)
    say: Callable[[str], None] = print

    def __call__(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:6.2f}s] {text}"
        self.lines.append(line)
        self.say(line)


def demo_settings(directory: Path = DEMO_DIR, **overrides: Any) -> HubSettings:
    values: dict[str, Any] = dict(
        bootstrap_servers="", database_url=f"sqlite:///{directory / 'state.sqlite'}",
        sweep_interval_seconds=0.2, poll_interval_seconds=0.5, http_port=0,
    )
    values.update(overrides)
    return HubSettings(**values)


def prepare(directory: Path = DEMO_DIR) -> Path:
    """A fresh demo folder: the embedded broker is fresh too, so old state would only confuse."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory / "filedrop"


def _customer(customer_id: str, name: str, city: str, country: str, currency: str) -> Event[Any]:
    data = Customer(id=customer_id, name=name, currency=currency,
                    addresses=[Address(kind="billing", city=city, country=country)])
    return Event[Customer](type="customer.upserted", entity="customer", entity_id=customer_id,
                           source=Source(system="crm", id=customer_id), origin="crm", data=data)


def _order(order_id: str, customer_id: str, currency: str, lines: list[dict[str, str]]
           ) -> Event[Any]:
    data = Order.build(id=order_id, customer_id=customer_id, currency=currency,
                       ordered_on=date.today(), lines=lines, deal_id=f"deal-{order_id}")
    return Event[Order](type="order.won", entity="order", entity_id=order_id,
                        source=Source(system="crm", id=order_id), origin="crm", data=data)


async def run_scenario(hub: Hub, say: Timeline, timeout: float = 30.0) -> bool:
    """Publish the scenario and wait until every expectation holds; True when they all do."""
    store = hub.store
    star = _customer("C-1", "上海星河贸易有限公司", "上海", "CN", "CNY")
    acme = _customer("C-2", "ACME Maschinenbau GmbH", "Stuttgart", "DE", "EUR")
    o1 = _order("O-1001", "C-1", "CNY", [
        {"sku": "PUMP-200", "quantity": "2", "unit_price": "1250.50", "tax_rate": "13"},
        {"sku": "SEAL-KIT", "quantity": "10", "unit_price": "3.125", "tax_rate": "13"}])
    o2 = _order("O-1002", "C-2", "EUR", [
        {"sku": "VALVE-9", "quantity": "4", "unit_price": "99.90", "discount_percent": "5",
         "tax_rate": "19"},
        {"sku": "MANUAL", "quantity": "1", "unit_price": "12.00", "tax_rate": "7"}])

    await hub.publish_event(o1, "demo")
    say(f"order {o1.entity_id} won in the CRM ({o1.data.total} {o1.data.currency}) "
        f"before its customer {star.entity_id} is known downstream")
    await _until(lambda: store.list_parked(flow="order_to_filedrop"), timeout)
    parked = store.list_parked(flow="order_to_filedrop")[0]
    say(f"order {o1.entity_id} parked: {parked.reason}")

    await hub.publish_event(star, "demo")
    await hub.publish_event(acme, "demo")
    say(f"customers {star.data.name} and {acme.data.name} published")
    await _until(lambda: store.external_id("customer", "C-2", "filedrop"), timeout)
    await hub.publish_event(o2, "demo")
    await hub.publish_event(o2, "demo")
    say(f"order {o2.entity_id} published twice (a redelivery)")
    await hub.publish_raw(topics.ORDER, b"{not json", b"garbage", [])
    say("a garbage message lands on the order topic")

    def finished() -> bool:
        return (store.external_id("order", "O-1001", "filedrop") is not None
                and store.external_id("order", "O-1002", "filedrop") is not None
                and not store.list_parked(flow="order_to_filedrop")
                and len(store.list_dead_letters(flow="order_to_filedrop")) == 1
                and hub.metrics.duplicates.labels("order_to_filedrop")._value.get() >= 1)

    if not await _until(finished, timeout):
        say(f"scenario did not finish within {timeout}s: {store.summary()}")
        return False
    for entity, entity_id in (("customer", "C-1"), ("customer", "C-2"), ("order", "O-1001"),
                              ("order", "O-1002")):
        say(f"{entity} {entity_id} -> filedrop {store.external_id(entity, entity_id, 'filedrop')}")
    [letter] = store.list_dead_letters(flow="order_to_filedrop")
    say(f"dead letter #{letter.id}: {letter.error_message} "
        f"({letter.topic}[{letter.partition}]@{letter.offset}); the partition kept flowing")
    say(f"duplicates skipped by the ledger: "
        f"{int(hub.metrics.duplicates.labels('order_to_filedrop')._value.get())}")
    return True


async def run_erp_scenario(hub: Hub, say: Timeline, erp: TrytonClient, payment_method: int,
                           timeout: float = 60.0) -> bool:
    """The ERP half: the EUR order becomes a confirmed Tryton sale; its invoice is posted and
    paid in two parts and its goods shipped in Tryton; the feeds bring each change back."""
    store = hub.store
    if not await _until(lambda: store.external_id("order", "O-1002", "tryton"), timeout):
        say(f"order O-1002 did not reach Tryton within {timeout}s: {store.summary()}")
        return False
    sale_id = int(store.external_id("order", "O-1002", "tryton") or 0)
    (sale,) = await erp.read("sale.sale", [sale_id], ["number", "state", "total_amount"])
    say(f"order O-1002 -> Tryton sale {sale['number']} ({sale['state']}, "
        f"{sale['total_amount']} EUR); order.accepted carries the number back to the CRM")
    (invoice_id,) = await tryton_ops.sale_invoices(erp, sale_id)
    await tryton_ops.post_invoice(erp, invoice_id)
    (invoice,) = await erp.read("account.invoice", [invoice_id], ["number", "total_amount"])
    total = Decimal(invoice["total_amount"])
    first = (total / 2).quantize(Decimal("0.01"))
    say(f"in Tryton: invoice {invoice['number']} posted ({total} EUR)")
    printed: set[str] = set()
    ok = await _expect(hub, say, printed, {"invoice.posted": 1}, timeout)
    await tryton_ops.pay_invoice(erp, invoice_id, first, payment_method)
    say(f"in Tryton: {first} EUR paid")
    ok = ok and await _expect(hub, say, printed, {"payment.received": 1,
                                                  "invoice.payment_state_changed": 1}, timeout)
    await tryton_ops.pay_invoice(erp, invoice_id, total - first, payment_method)
    say(f"in Tryton: the remaining {total - first} EUR paid")
    ok = ok and await _expect(hub, say, printed, {"payment.received": 1,
                                                  "invoice.payment_state_changed": 1}, timeout)
    (shipment_id,) = await tryton_ops.sale_shipments(erp, sale_id)
    await tryton_ops.ship(erp, shipment_id)
    say("in Tryton: the goods are picked, packed, shipped and delivered")
    ok = ok and await _expect(hub, say, printed, {"shipment.dispatched": 1,
                                                  "shipment.delivered": 1}, timeout)
    for letter in store.list_dead_letters(flow="order_to_erp"):
        say(f"order_to_erp dead letter #{letter.id}: {letter.error_message}")
    if ok:
        say("every ERP and SCM change arrived once")
    return ok


async def _expect(hub: Hub, say: Timeline, printed: set[str], wanted: dict[str, int],
                  timeout: float) -> bool:
    """Wait for `wanted` new events from the ERP/SCM feeds; narrate each as it arrives."""
    changed, seen = time.monotonic(), Counter[str]()
    while time.monotonic() < changed + timeout:
        for event in await _read_events(hub, (topics.INVOICE, topics.PAYMENT, topics.SHIPMENT)):
            if event["origin"] not in ("tryton", "tryton_stock") or event["event_id"] in printed:
                continue
            printed.add(event["event_id"])
            seen[event["type"]] += 1
            data = event["data"]
            detail = data.get("payment_state") or data.get("amount") or data.get("state")
            say(f"  feed -> {event['type']} {event['entity_id']} ({detail}), "
                f"{time.monotonic() - changed:.2f}s after the change in Tryton")
        if all(seen[name] >= count for name, count in wanted.items()):
            return True
        await asyncio.sleep(0.2)
    say(f"ERP changes {wanted} did not arrive within {timeout}s (saw {dict(seen)})")
    return False


async def _read_events(hub: Hub, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every event on these topics so far, in arrival order per partition."""
    consumer = AIOKafkaConsumer(*names, bootstrap_servers=hub.bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    events: list[dict[str, Any]] = []
    try:
        while batch := await consumer.getmany(timeout_ms=300):
            events += [json.loads(r.value) for records in batch.values() for r in records]
    finally:
        await consumer.stop()
    return events


async def _until(check: Callable[[], Any], timeout: float) -> Any:
    """The first truthy value of ``check()`` (run on a thread: it may block on the store or
    the CRM's API), polled every 0.1 s; None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.1)
    return None


async def run_crm_scenario(hub: Hub, say: Timeline, crm: BottleCrmServer, erp: TrytonClient,
                           payment_method: int, timeout: float = 90.0) -> bool:
    """The CRM loop with BottleCRM: a deal won there becomes a confirmed Tryton sale whose
    number shows on the deal; the ERP's invoice appears in the CRM and, paid in Tryton in two
    parts, ends Paid in the CRM. Each step narrated with its latency."""
    store = hub.store

    async def until(what: str, check: Callable[[], Any], since: float) -> Any:
        found = await _until(check, timeout)
        if found is None:
            say(f"{what} did not happen within {timeout:.0f}s: {store.summary()}")
        else:
            say(f"{what}, {time.monotonic() - since:.2f}s later")
        return found

    deal = await asyncio.to_thread(_crm_deal, crm)
    amount = (await asyncio.to_thread(crm.api, "GET", f"/api/opportunities/{deal}/")
              )["opportunity_obj"]["amount"]
    say(f"BottleCRM: account 'Müller Anlagenbau GmbH', deal {deal}: 1 x PUMP-200 at 1450.00, "
        f"40 x SEAL-KIT at 39.90 less 7.5%, 3 x MANUAL at 19.00 = {amount} EUR (no tax: "
        "the ERP's product taxes apply)")
    won_at = time.monotonic()
    await asyncio.to_thread(crm.api, "PATCH", f"/api/opportunities/{deal}/",
                            {"stage": "CLOSED_WON", "closed_on": date.today().isoformat()})
    say("BottleCRM: the deal is marked won (a signed webhook goes to the hub's ingress)")
    sale_id = await until("  -> Tryton sale confirmed",
                          lambda: store.external_id("order", deal, "tryton"), won_at)
    if sale_id is None:
        return False
    (sale,) = await erp.read("sale.sale", [int(sale_id)], [
        "number", "state", "untaxed_amount", "tax_amount", "total_amount"])
    say(f"     sale {sale['number']} ({sale['state']}): net {sale['untaxed_amount']} + tax "
        f"{sale['tax_amount']} (19% and 7%, from the products) = {sale['total_amount']} EUR")
    note = f"ERP order {sale['number']} confirmed: total {sale['total_amount']} EUR"
    shown_note = await until("  -> BottleCRM deal shows the ERP's totals", lambda: next(
        (c for c in _crm_comments(crm, deal) if note in c), None), won_at)
    if shown_note is None:
        return False
    say(f"     note on the deal: {shown_note}")
    (invoice_id,) = await tryton_ops.sale_invoices(erp, int(sale_id))
    await tryton_ops.post_invoice(erp, invoice_id)
    posted_at = time.monotonic()
    (invoice,) = await erp.read("account.invoice", [invoice_id], ["number", "total_amount"])
    total = Decimal(invoice["total_amount"])
    say(f"Tryton: invoice {invoice['number']} posted ({total} EUR)")
    crm_invoice = await until("  -> invoice in BottleCRM", lambda: store.external_id(
        "invoice", f"tryton-invoice-{invoice_id}", "bottlecrm"), posted_at)
    if crm_invoice is None:
        return False
    shown = await asyncio.to_thread(crm.api, "GET", f"/api/invoices/{crm_invoice}/")
    say(f"     {shown['invoice']['invoice_number']} '{shown['invoice']['invoice_title']}' "
        f"({shown['invoice']['status']}, {shown['invoice']['total_amount']} EUR)")
    first = (total / 2).quantize(Decimal("0.01"))
    for amount, status in ((first, "Partially_Paid"), (total - first, "Paid")):
        await tryton_ops.pay_invoice(erp, invoice_id, amount, payment_method)
        paid_at = time.monotonic()
        say(f"Tryton: {amount} EUR received")
        if not await until(f"  -> BottleCRM invoice {status}",
                           functools.partial(_crm_status_is, crm, crm_invoice, status), paid_at):
            return False
    payments = await asyncio.to_thread(crm.api, "GET", f"/api/invoices/{crm_invoice}/payments/")
    say("     payments in BottleCRM: " + ", ".join(
        f"{p['amount']} ({p['reference_number']})" for p in payments))
    say(f"CRM loop done: deal won -> ERP sale -> invoice -> paid, in "
        f"{time.monotonic() - won_at:.1f}s")
    return True


def _crm_deal(crm: BottleCrmServer) -> str:
    account = crm.api("POST", "/api/accounts/", {
        "name": "Müller Anlagenbau GmbH", "email": "einkauf@mueller.example",
        "city": "Stuttgart", "country": "DE", "currency": "EUR"})["id"]
    contact = crm.api("POST", "/api/contacts/", {
        "first_name": "Jana", "last_name": "Müller", "email": "jana@mueller.example",
        "account": account})["id"]
    deal = str(crm.api("POST", "/api/opportunities/", {
        "name": "Pump station Esslingen", "account": account, "stage": "NEGOTIATION",
        "currency": "EUR", "contacts": [contact]})["id"])
    for sku, quantity, price, discount in (("PUMP-200", "1", "1450.00", None),
                                           ("SEAL-KIT", "40", "39.90", "7.5"),
                                           ("MANUAL", "3", "19.00", None)):
        line = {"product_id": crm.products[sku], "quantity": quantity, "unit_price": price}
        if discount:
            line.update(discount_type="PERCENTAGE", discount_value=discount)
        crm.api("POST", f"/api/opportunities/{deal}/line-items/", line)
    return deal


def _crm_comments(crm: BottleCrmServer, deal: str) -> list[str]:
    return [c["comment"] for c in crm.api("GET", f"/api/opportunities/{deal}/")["comments"]]


def _crm_status_is(crm: BottleCrmServer, invoice: str, status: str) -> bool:
    return bool(crm.api("GET", f"/api/invoices/{invoice}/")["invoice"]["status"] == status)



# -- the OA part: an approval answered by a scripted approver ---------------------------------
@dataclass
class OaSandboxes:
    """Synapse (approvals), aiosmtpd (mail) and Radicale (tasks) for the demo, wired through
    the connectors' environment variables."""

    servers: list[Any] = field(default_factory=list)
    mail: Any = None
    approver_token: str = ""

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


def start_oa_sandboxes(say: Timeline) -> OaSandboxes:
    """Start the OA servers and point the hub's connectors at them (env vars)."""
    import os

    from crmhub.dev.sandbox import synapse
    from crmhub.dev.sandbox.oa import MailServer, TaskServer
    from crmhub.dev.sandbox.synapse import SynapseServer

    say("starting the OA sandboxes: Synapse (approvals), aiosmtpd (mail), Radicale (tasks)")
    oa = OaSandboxes()
    try:
        matrix = SynapseServer().start()
        oa.servers.append(matrix)
        oa.mail = MailServer().start()
        oa.servers.append(oa.mail)
        tasks = TaskServer().start()
        oa.servers.append(tasks)
        oa.approver_token = matrix.login("alice", device_id="DEMO-APPROVER")
    except BaseException:
        oa.stop()
        raise
    say(f"Synapse at {matrix.url} (room {matrix.room_id}, started in "
        f"{matrix.start_seconds:.1f}s); mail on port {oa.mail.port}; tasks at {tasks.url}")
    os.environ.update({
        "MATRIX_URL": matrix.url, "MATRIX_USER": synapse.BOT, "MATRIX_PASSWORD": synapse.PASSWORD,
        "MATRIX_ROOM_ID": matrix.room_id,
        "APPROVAL_APPROVERS": synapse.user_id("alice"),
        "APPROVAL_AMOUNT_LIMITS": '{"EUR": "10000", "CNY": "350000"}',
        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(oa.mail.port),
        "NOTIFY_FINANCE_EMAIL": "finance@example.com",
        "CALDAV_URL": tasks.url, "CALDAV_USERNAME": tasks.user, "CALDAV_PASSWORD": tasks.password,
    })
    return oa


async def run_approval_scenario(hub: Hub, say: Timeline, oa: OaSandboxes,
                                timeout: float = 60.0) -> bool:
    """A won order above the limit waits for approval; a scripted approver (alice) replies
    APPROVE in the Matrix room; the order then becomes a Tryton sale and its owner is mailed."""
    import os
    from urllib.parse import quote

    import httpx

    from crmhub.dev.sandbox.synapse import user_id

    store = hub.store
    big = _order("O-1003", "C-2", "EUR", [
        {"sku": "PUMP-200", "quantity": "12", "unit_price": "1450.00", "tax_rate": "19"}])
    big = big.model_copy(update={"data": big.data.model_copy(
        update={"owner": "erika.muster@example.com"})})
    won_at = time.monotonic()
    await hub.publish_event(big, "demo")
    say(f"order O-1003 won ({big.data.total} EUR): above the approval limit of 10000 EUR")
    def request_id() -> str | None:
        return store.external_id("approval_request", "approval-O-1003", "matrix")

    request = request_id() if await _until(request_id, timeout) else None
    if not request:
        say(f"no approval request within {timeout}s: {store.summary()}")
        return False
    requested_at = time.monotonic()
    await _until(lambda: store.summary()["awaiting_approval"], timeout)
    say(f"approval requested in the Matrix room ({requested_at - won_at:.2f}s after order.won);"
        f" crmhub status: awaiting approval {store.summary()['awaiting_approval']}")
    room = quote(os.environ["MATRIX_ROOM_ID"], safe="")
    async with httpx.AsyncClient(base_url=os.environ["MATRIX_URL"]) as approver:
        answer = await approver.put(
            f"/_matrix/client/v3/rooms/{room}/send/m.room.message/demo-approve-O-1003",
            headers={"Authorization": f"Bearer {oa.approver_token}"},
            json={"msgtype": "m.text", "body": "APPROVE budget confirmed",
                  "m.relates_to": {"m.in_reply_to": {"event_id": request}}})
        answer.raise_for_status()
    replied_at = time.monotonic()
    say(f"{user_id('alice')} (scripted approver) replied: APPROVE budget confirmed")
    def sale_id() -> str | None:
        return store.external_id("order", "O-1003", "tryton")

    sale = sale_id() if await _until(sale_id, timeout) else None
    if not sale:
        say(f"approved order O-1003 did not reach Tryton within {timeout}s: {store.summary()}")
        return False
    done_at = time.monotonic()
    say(f"order O-1003 approved -> Tryton sale id {sale}: {done_at - replied_at:.2f}s after the "
        f"reply; round trip order.won -> request -> reply -> sale {done_at - won_at:.2f}s")
    def mailed() -> list[Any]:
        return [m for m in oa.mail.messages() if "O-1003" in str(m["Subject"])]

    if not await _until(mailed, timeout):
        say("the owner was not mailed about O-1003")
        return False
    for mail in mailed():
        say(f"mail to {mail['To']}: {mail['Subject']}")
    return True
