"""Invoices paid or overdue: finance and the owner hear of it; an overdue one gets a task.

in:  canonical.invoice.v1 (invoice.payment_state_changed)   key: invoice id
     group: oa-invoice-notices
out: paid    -> a mail to NOTIFY_FINANCE_EMAIL and the customer's owner
     overdue -> a follow-up task (CalDAV VTODO, UID crmhub-overdue-<invoice id>) for the owner
                and a mail to the owner (or NOTIFY_FALLBACK_EMAIL)
     partially_paid -> nothing
idempotency: ledger(event_id, flow); the VTODO is upserted by its UID (a task its owner has
             completed is not reopened); the Message-ID is derived from the event
retry: transient (SMTP or CalDAV down) -> backoff; refused -> DLQ
"""

from __future__ import annotations

from crmhub import topics
from crmhub.step import Flow, Run
from flows.oa import Notifier, recipients
from mappings.oa import approval, notice, task
from schemas.canonical import Invoice
from schemas.envelope import Event


async def on_payment_state_changed(event: Event[Invoice], s: Run, notifier: Notifier) -> None:
    invoice, language = event.data, notifier.settings.language
    owner = approval.read_facts(s.xref.get("customer", invoice.customer_id,
                                           approval.SYSTEM)).owner
    if invoice.payment_state == "paid":
        to = recipients(notifier.settings.finance_email, owner)
        if to:
            await s.call(notifier.mail, event, notice.invoice_paid(invoice, language), to)
    elif invoice.payment_state == "overdue":
        follow_up = task.overdue_task(invoice, owner, language)
        uid = await s.call(notifier.tasks.upsert, follow_up)
        s.bind("task", follow_up.id, "caldav", uid)
        to = recipients(owner or notifier.settings.fallback_email)
        if to:
            await s.call(notifier.mail, event, notice.invoice_overdue(invoice, language), to)


flow = Flow(name="invoice_notices", topic=topics.INVOICE, group="oa-invoice-notices",
            accepts=frozenset({"invoice.payment_state_changed"}), model=Invoice,
            handler=on_payment_state_changed, sink=Notifier.from_env, target="oa")
