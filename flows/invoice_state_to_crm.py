"""ERP invoice payment states onto BottleCRM: an invoice the ERP says is paid ends Paid.

in:  canonical.invoice.v1 (invoice.payment_state_changed)   key: invoice id
     group: crm-invoice-states
out: for "paid": what the CRM invoice still shows as due, recorded once as the payment
     "<invoice id>:settled" (nothing when the payments already cleared it); partially paid
     and overdue need nothing here (payments move the CRM's status)
idempotency: ledger(event_id, flow) + the settlement's reference number is recorded once
retry: transient -> backoff; the invoice not yet in BottleCRM -> parked; refused -> DLQ
"""

from __future__ import annotations

from connectors.bottlecrm.client import SYSTEM, BottleCrm
from crmhub import topics
from crmhub.step import Flow, Run
from mappings.bottlecrm import payment
from schemas.canonical import Invoice
from schemas.envelope import Event


async def on_payment_state_changed(event: Event[Invoice], s: Run, crm: BottleCrm) -> None:
    if s.xref.get("customer", event.data.customer_id, SYSTEM) is None:
        return  # not a BottleCRM account's invoice
    settled = payment.settlement(event.data, s.xref)  # parks until the invoice is there
    if settled is not None:
        await s.call(crm.record_payment, settled.invoice_id, settled.payment)


flow = Flow(name="invoice_state_to_crm", topic=topics.INVOICE, group="crm-invoice-states",
            accepts=frozenset({"invoice.payment_state_changed"}), model=Invoice,
            handler=on_payment_state_changed, sink=BottleCrm.from_env, target=SYSTEM)
