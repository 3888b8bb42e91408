"""Payments the ERP received, recorded on the BottleCRM invoice (Sent -> Partially_Paid ->
Paid, as BottleCRM derives the status from its payments).

in:  canonical.payment.v1 (payment.received)   key: payment id   group: crm-payments
out: one BottleCRM payment per allocation, reference number = the canonical payment id
     (payments of customers that are not BottleCRM accounts are left alone)
idempotency: ledger(event_id, flow) + a reference number is recorded once; nothing is
             recorded on an invoice with nothing due (a settlement got there first)
retry: transient -> backoff; the invoice not yet in BottleCRM -> parked until invoice_to_crm
       binds it; refused -> DLQ
"""

from __future__ import annotations

from connectors.bottlecrm.client import SYSTEM, BottleCrm
from crmhub import topics
from crmhub.step import Flow, Run
from mappings.bottlecrm import payment
from schemas.canonical import Payment
from schemas.envelope import Event


async def on_payment_received(event: Event[Payment], s: Run, crm: BottleCrm) -> None:
    if s.xref.get("customer", event.data.customer_id, SYSTEM) is None:
        return  # not a BottleCRM account's payment
    for record in payment.to_crm_payments(event.data, s.xref):  # parks until the invoice
        await s.call(crm.record_payment, record.invoice_id, record.payment)


flow = Flow(name="payment_to_crm", topic=topics.PAYMENT, group="crm-payments",
            accepts=frozenset({"payment.received"}), model=Payment,
            handler=on_payment_received, sink=BottleCrm.from_env, target=SYSTEM)
