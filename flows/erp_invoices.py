"""Posted customer invoices out of the ERP (a change feed: Tryton cannot push).

in:  Tryton account.invoice, polled: posted or paid, changed since the cursor - overlap
out: canonical.invoice.v1 (invoice.posted)   key: invoice id (tryton-invoice-<id>)
cursor: newest write/create stamp seen, on Tryton's clock (state store, tryton/invoices)
idempotency: event id = (feed, type, invoice id, "posted") -> published once per invoice
retry: transient -> backoff until the ERP is back; refused by the mapping (credit note,
       unknown currency) -> DLQ with the record, the feed moves on
"""

from __future__ import annotations

from datetime import datetime

from connectors.tryton.erp import SYSTEM, TrytonErp
from connectors.tryton.models import TrytonInvoice
from crmhub.feed import Change, Feed
from mappings.tryton import invoice
from schemas.state import utcnow


async def read_posted(erp: TrytonErp, since: datetime | None) -> list[TrytonInvoice]:
    return await erp.changed_invoices(since)


def on_invoice(record: TrytonInvoice) -> list[Change]:
    posted = invoice.to_invoice(record, today=utcnow().date())
    return [Change("invoice.posted", posted.id, posted, "posted")]


feed = Feed(name="erp_invoices", system=SYSTEM, stream="invoices", model=TrytonInvoice,
            source=TrytonErp.from_env, read=read_posted, stamp=lambda r: r.changed_at,
            changes=on_invoice, record_id=lambda r: str(r.id))
