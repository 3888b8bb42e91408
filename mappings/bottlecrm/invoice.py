"""Canonical posted Invoice (the ERP's) -> a BottleCRM invoice on the deal's account. Pure.

BottleCRM computes an invoice's total from its lines and one invoice-wide tax rate, so the
ERP's tax per rate becomes one line each ("VAT 19% on 37.50") and the CRM total is the ERP
total to the cent. A line whose quantity or price has more decimals than BottleCRM keeps
(2), or that has a discount, is carried as quantity 1 at its net amount, the detail in its
description. The title carries the canonical invoice id in brackets: the connector searches
for it before creating, so one ERP invoice is one CRM invoice.
"""

from __future__ import annotations

from decimal import Decimal

from connectors.bottlecrm.models import InvoiceDraft
from crmhub.errors import MappingError
from mappings.base import XrefLookup
from schemas.canonical import Invoice, InvoiceLine

SYSTEM = "bottlecrm"
CENT = Decimal("0.01")
TITLE_MAX = 100


def to_crm_invoice(invoice: Invoice, xref: XrefLookup) -> InvoiceDraft:
    account = xref.require("customer", invoice.customer_id, SYSTEM)
    deal = xref.get("order", invoice.order_id, SYSTEM) if invoice.order_id else None
    title = f"{invoice.number} [{invoice.id}]"
    if len(title) > TITLE_MAX:
        raise MappingError(f"invoice {invoice.id}: title {title!r} is longer than BottleCRM's "
                           f"{TITLE_MAX} characters", system=SYSTEM)
    lines = [line_values(line) for line in invoice.lines]
    lines += [{"name": f"Tax {s.rate.normalize():f}%", "description": f"on {s.base}",
               "quantity": "1", "unit_price": str(s.amount)}
              for s in invoice.tax_subtotals if s.amount]
    if invoice.total_tax and not any(s.amount for s in invoice.tax_subtotals):
        lines.append({"name": "Tax", "description": "", "quantity": "1",
                      "unit_price": str(invoice.total_tax)})
    total = sum((Decimal(line["quantity"]) * Decimal(line["unit_price"]) for line in lines),
                Decimal(0))
    if total != invoice.total:
        raise MappingError(f"invoice {invoice.id}: its lines come to {total} in BottleCRM, "
                           f"not the ERP's {invoice.total}", system=SYSTEM)
    return InvoiceDraft(
        reference=invoice.id, invoice_title=title, account_id=account, opportunity_id=deal,
        currency=invoice.currency, issue_date=invoice.issued_on, due_date=invoice.due_date,
        notes=f"Invoice {invoice.number} from the ERP; payments are recorded as the ERP "
              "receives them.", line_items=lines)


def line_values(line: InvoiceLine) -> dict[str, str]:
    name = line.sku
    description = line.description or ""
    exact = (_cents(line.quantity) and _cents(line.unit_price) and not line.discount_percent)
    if exact:
        return {"name": name, "description": description, "quantity": str(line.quantity),
                "unit_price": str(line.unit_price)}
    detail = f"{line.quantity} x {line.unit_price}"
    if line.discount_percent:
        detail += f" less {line.discount_percent}%"
    return {"name": name, "description": f"{description} ({detail})".strip(),
            "quantity": "1", "unit_price": str(line.net_amount)}


def _cents(value: Decimal) -> bool:
    return value == value.quantize(CENT)
