"""Notices against a real aiosmtpd (mail), a real Radicale (tasks), the chat robot receiver, a
real Tansu broker and a real state store: each notice once per event, even when redelivered;
an overdue invoice makes one follow-up task, and completing it comes back as an event."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest

from connectors.caldav.client import TaskList
from connectors.chatbots.client import ChatRobots
from connectors.smtp.client import Mailer
from crmhub import topics
from crmhub.dev.sandbox.oa import MailServer, TaskServer
from crmhub.hub import Hub
from flows import customer_facts, invoice_notices, oa_tasks, order_notices, payment_notices
from flows.oa import Notifier, NotifySettings
from mappings.oa.task import overdue_task_id
from schemas.canonical import Customer, Invoice, Order, Payment, PaymentAllocation
from schemas.envelope import Event, Source
from tests.conftest import HubFactory, eventually, publish, read_topic
from tests.connectors.oa.conftest import (
    RobotReceiver,
    caldav_settings,
    mails_to,
    smtp_settings,
)

FINANCE = "finance@example.com"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def notifier_factory(mail_server: MailServer, task_server: TaskServer,
                     robot_receiver: RobotReceiver) -> Any:
    calendar = unique("tasks")

    def factory() -> Notifier:
        return Notifier(Mailer(smtp_settings(mail_server)),
                        ChatRobots(robot_receiver.settings(wecom_webhook="")),
                        TaskList(caldav_settings(task_server, calendar)),
                        NotifySettings(finance_email=FINANCE, language="en"))

    factory.calendar = calendar  # type: ignore[attr-defined]
    return factory


async def start(make_hub: HubFactory, factory: Any) -> Hub:
    flows = [customer_facts.flow] + [replace(f.flow, sink=factory) for f in
                                     (order_notices, payment_notices, invoice_notices)]
    feeds = [replace(oa_tasks.feed, source=lambda: factory().tasks)]
    return await make_hub(flows, feeds, poll_interval_seconds=0.2)


def customer(customer_id: str, owner: str) -> Event[Customer]:
    return Event[Customer](type="customer.upserted", entity="customer", entity_id=customer_id,
                           source=Source(system="crm", id=customer_id), origin="crm",
                           data=Customer(id=customer_id, name="ACME", currency="EUR",
                                         owner=owner))


def invoice(invoice_id: str, customer_id: str, state: str) -> Event[Invoice]:
    lines = [{"sku": "WIDGET", "quantity": "4", "unit_price": "12.50", "tax_rate": "19"}]
    data = Invoice.build(id=invoice_id, number=f"INV-{invoice_id[-4:]}", order_id="O-1",
                         customer_id=customer_id, currency="EUR",
                         issued_on=date.today() - timedelta(days=40),
                         due_date=date.today() - timedelta(days=10), lines=lines,
                         payment_state=state, amount_residual={"paid": "0", "partially_paid":
                                                               "20.00"}.get(state, "59.50"))
    return Event[Invoice](type="invoice.payment_state_changed", entity="invoice",
                          entity_id=invoice_id, source=Source(system="tryton", id="7"),
                          origin="tryton", data=data)


async def known_customer(hub: Any) -> tuple[str, str]:
    """A new customer with a sales owner, once customer_facts has kept it: (id, owner)."""
    customer_id, owner = unique("C"), f"{unique('owner')}@example.com"
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer(customer_id, owner))
    await eventually(lambda: hub.store.external_id("customer", customer_id, "oa"),
                     message="customer facts kept")
    return customer_id, owner


async def test_a_redelivered_payment_event_sends_one_mail_to_finance_and_the_owner(
        make_hub: HubFactory, notifier_factory: Any, mail_server: MailServer) -> None:
    hub = await start(make_hub, notifier_factory)
    customer_id, owner = await known_customer(hub)
    payment_id = unique("P")
    received = Event[Payment](
        type="payment.received", entity="payment", entity_id=payment_id,
        source=Source(system="tryton", id="3"), origin="tryton",
        data=Payment(id=payment_id, customer_id=customer_id, currency="JPY", amount="120000",
                     received_on=date(2026, 11, 30),
                     allocations=[PaymentAllocation(invoice_id="INV-9", amount="120000")]))
    await publish(hub.bootstrap_servers, topics.PAYMENT, received, received, received)
    await eventually(lambda: hub.metrics.duplicates.labels("payment_notices")._value.get() == 2,
                     message="two redeliveries skipped", timeout=30)
    [mail] = await eventually(lambda: mails_to(mail_server, owner), message="mail arrived")
    assert mail["To"] == f"{FINANCE}, {owner}"
    assert mail["Subject"] == f"Payment of JPY 120,000 received from {customer_id}"
    assert mail["Message-ID"].endswith("@crmhub>")
    assert mail.get_body(("plain",)).get_content().startswith("A payment from customer")
    assert "<table>" in mail.get_body(("html",)).get_content()


async def test_accepted_order_mails_its_owner_and_tells_the_chat_robots_once(
        make_hub: HubFactory, notifier_factory: Any, mail_server: MailServer,
        robot_receiver: RobotReceiver) -> None:
    hub = await start(make_hub, notifier_factory)
    owner, order_id = f"{unique('owner')}@example.com", unique("O")
    order = Order.build(id=order_id, number="SO-0042", customer_id="C-1", currency="CNY",
                        ordered_on=date(2026, 11, 30), owner=owner,
                        lines=[{"sku": "PUMP-200", "quantity": "1", "unit_price": "8800",
                                "tax_rate": "13"}])
    accepted = Event[Order](type="order.accepted", entity="order", entity_id=order_id,
                            source=Source(system="tryton", id="42"), origin="tryton", data=order)
    before = len(robot_receiver.accepted)
    await publish(hub.bootstrap_servers, topics.ORDER, accepted, accepted)
    [mail] = await eventually(lambda: mails_to(mail_server, owner), message="mail arrived")
    assert mail["Subject"] == f"Order {order_id} is in the ERP as SO-0042"
    assert "CNY 9,944.00" in mail.get_body(("plain",)).get_content()
    await eventually(lambda: hub.metrics.duplicates.labels("order_notices")._value.get() == 1,
                     message="redelivery skipped", timeout=30)
    robots = [name for name, body in robot_receiver.accepted[before:]
              if order_id in json.dumps(body, ensure_ascii=False)]
    assert robots == ["dingtalk", "feishu"]
    assert len(mails_to(mail_server, owner)) == 1


async def test_overdue_invoice_makes_one_task_and_a_mail_and_completing_it_is_an_event(
        make_hub: HubFactory, notifier_factory: Any, mail_server: MailServer) -> None:
    hub = await start(make_hub, notifier_factory)
    customer_id, owner = await known_customer(hub)
    invoice_id = unique("tryton-invoice")
    overdue = invoice(invoice_id, customer_id, "overdue")
    again = overdue.model_copy(update={"event_id": uuid.uuid4()})  # published again upstream
    await publish(hub.bootstrap_servers, topics.INVOICE, overdue, overdue, again)
    # the two distinct events may be handled in one batch: one or both mails may be there
    mail, *_ = await eventually(lambda: mails_to(mail_server, owner), message="mail arrived")
    assert mail["Subject"].startswith(f"Invoice INV-{invoice_id[-4:]} is overdue: EUR 59.50")
    tasks: TaskList = notifier_factory().tasks
    try:
        await eventually(lambda: hub.metrics.succeeded.labels("invoice_notices")._value.get()
                         == 2, message="both events handled", timeout=30)
        todos = await tasks.changes(None)
        assert [t.uid for t in todos.records] == [overdue_task_id(invoice_id)]  # one task
        task = await tasks.get(overdue_task_id(invoice_id))
        assert task is not None and task.state == "open" and task.assignee == owner
        assert task.due_on == overdue.data.due_date
        assert len(mails_to(mail_server, owner)) == 2  # one per distinct event
        await tasks.complete(overdue_task_id(invoice_id))
    finally:
        await tasks.aclose()

    async def completed() -> list[Any]:
        return [json.loads(r.value) for r in await read_topic(hub.bootstrap_servers,
                                                              topics.TASK, 5, timeout=0.5)]

    [event] = await eventually(completed, message="task.completed published", timeout=30)
    assert (event["type"], event["entity_id"]) == ("task.completed",
                                                   overdue_task_id(invoice_id))
    assert event["data"]["invoice_id"] == invoice_id and event["data"]["completed_at"]
    polls = hub.metrics.feed_polls.labels("oa_tasks")._value.get()
    await eventually(lambda: hub.metrics.feed_polls.labels("oa_tasks")._value.get() > polls + 2,
                     message="more polls", timeout=30)
    assert len(await completed()) == 1  # once, however often the feed polls


async def test_paid_invoice_mails_finance_and_partially_paid_mails_nobody(
        make_hub: HubFactory, notifier_factory: Any, mail_server: MailServer) -> None:
    hub = await start(make_hub, notifier_factory)
    customer_id, owner = await known_customer(hub)
    partly = invoice(unique("tryton-invoice"), customer_id, "partially_paid")
    paid = invoice(unique("tryton-invoice"), customer_id, "paid")
    await publish(hub.bootstrap_servers, topics.INVOICE, partly, paid)
    [mail] = await eventually(lambda: mails_to(mail_server, owner), message="mail arrived")
    assert mail["To"] == f"{FINANCE}, {owner}"
    assert mail["Subject"] == f"Invoice {paid.data.number} is paid"
    await eventually(lambda: hub.metrics.succeeded.labels("invoice_notices")._value.get() == 2,
                     message="both handled", timeout=30)
    assert len(mails_to(mail_server, owner)) == 1
