"""Payments and invoice payment states out of the ERP (a change feed: Tryton cannot push).

in:  Tryton account.invoice, polled: invoices whose payment lines changed since the cursor -
     overlap, plus every posted invoice with an unpaid line due before today (overdue needs
     no change in the ERP to happen)
out: canonical.payment.v1 (payment.received, one per payment line, allocated to the invoice)
     canonical.invoice.v1 (invoice.payment_state_changed: partially_paid / paid / overdue)
cursor: newest invoice or payment line stamp seen, on Tryton's clock (tryton/payments)
idempotency: payment.received once per payment line; a state change once per (state,
             residual) of the invoice
retry: transient -> backoff until the ERP is back; refused by the mapping -> DLQ, move on
"""

from __future__ import annotations

from datetime import datetime

from connectors.tryton.erp import SYSTEM, TrytonErp
from connectors.tryton.models import TrytonInvoice
from crmhub.feed import Change, Feed
from mappings.tryton import invoice, payment
from schemas.state import utcnow


async def read_paid(erp: TrytonErp, since: datetime | None) -> list[TrytonInvoice]:
    changed = await erp.changed_invoices(since)
    seen = {record.id for record in changed}
    overdue = await erp.overdue_invoices(utcnow().date())
    return changed + [record for record in overdue if record.id not in seen]


def on_invoice(record: TrytonInvoice) -> list[Change]:
    state = invoice.to_invoice(record, today=utcnow().date())
    changes = [Change("payment.received", p.id, p, "received")
               for p in payment.to_payments(record)]
    if state.payment_state != "not_paid":
        changes.append(Change("invoice.payment_state_changed", state.id, state,
                              f"{state.payment_state}:{state.amount_residual}"))
    return changes


feed = Feed(name="erp_payments", system=SYSTEM, stream="payments", model=TrytonInvoice,
            source=TrytonErp.from_env, read=read_paid, stamp=lambda r: r.changed_at,
            changes=on_invoice, record_id=lambda r: str(r.id))
