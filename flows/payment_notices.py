"""Payments received: a mail to finance and to the customer's sales owner.

in:  canonical.payment.v1 (payment.received)   key: payment id   group: oa-payment-notices
out: one mail to NOTIFY_FINANCE_EMAIL and the customer's owner (customer_facts)
idempotency: ledger(event_id, flow): a redelivered payment event sends no second mail;
             the Message-ID is derived from the event
retry: transient (SMTP 4xx / down) -> backoff; refused -> DLQ
"""

from __future__ import annotations

from crmhub import topics
from crmhub.step import Flow, Run
from flows.oa import Notifier, recipients
from mappings.oa import approval, notice
from schemas.canonical import Payment
from schemas.envelope import Event


async def on_payment_received(event: Event[Payment], s: Run, notifier: Notifier) -> None:
    payment = event.data
    owner = approval.read_facts(s.xref.get("customer", payment.customer_id,
                                           approval.SYSTEM)).owner
    to = recipients(notifier.settings.finance_email, owner)
    if to:
        await s.call(notifier.mail, event, notice.payment_received(payment,
                                                                   notifier.settings.language), to)


flow = Flow(name="payment_notices", topic=topics.PAYMENT, group="oa-payment-notices",
            accepts=frozenset({"payment.received"}), model=Payment, handler=on_payment_received,
            sink=Notifier.from_env, target="oa")
