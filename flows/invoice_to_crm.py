"""Posted ERP invoices into BottleCRM, on the deal's account, sent.

in:  canonical.invoice.v1 (invoice.posted)   key: invoice id   group: crm-invoices
out: a BottleCRM invoice (status Sent) with the ERP's lines and tax, linked to the deal;
     xref invoice -> BottleCRM invoice id (payments park until it exists). Invoices of orders
     that did not come from a BottleCRM deal are left alone
idempotency: ledger(event_id, flow) + the CRM invoice's title carries the canonical invoice
             id and is searched before creating; its invoice.* webhooks are not taken as news
retry: transient -> backoff; the customer not yet bound -> parked; no contact to bill, totals
       BottleCRM cannot hold -> DLQ naming it
"""

from __future__ import annotations

from connectors.bottlecrm.client import SYSTEM, BottleCrm
from crmhub import topics
from crmhub.step import Flow, Run
from mappings.bottlecrm import invoice
from schemas.canonical import Invoice
from schemas.envelope import Event


async def on_invoice_posted(event: Event[Invoice], s: Run, crm: BottleCrm) -> None:
    posted = event.data
    if posted.order_id is None or s.xref.get("order", posted.order_id, SYSTEM) is None:
        return  # not an order from a BottleCRM deal
    crm_invoice = await s.call(crm.ensure_invoice, invoice.to_crm_invoice(posted, s.xref))
    s.bind("invoice", posted.id, SYSTEM, crm_invoice.id)


flow = Flow(name="invoice_to_crm", topic=topics.INVOICE, group="crm-invoices",
            accepts=frozenset({"invoice.posted"}), model=Invoice, handler=on_invoice_posted,
            sink=BottleCrm.from_env, target=SYSTEM)
