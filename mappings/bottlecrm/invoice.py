"""Canonical posted Invoice (the ERP's) -> a BottleCRM invoice on the deal's account. Pure.

BottleCRM computes an invoice's total from its lines and one invoice-wide tax rate, so the
ERP's tax per rate becomes one line each ("VAT 19% on 37.50") and the CRM total is the ERP
total to the cent. BottleCRM refuses more than 2 decimals in a quantity or price, so every
figure goes out as text with exactly 2 ("84.55", never "84.5500"); a line whose quantity or
price has more (a discounted price, Tryton's 6-decimal prices), or that has a discount, is
carried as quantity 1.00 at its net amount, the detail in its description. The title
carries the canonical invoice id in brackets: the connector searches for it before creating,
so one ERP invoice is one CRM invoice; it then checks the total BottleCRM computed is the
ERP's (docs/money.md).
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
               "quantity": "1.00", "unit_price": cents(s.amount)}
              for s in invoice.tax_subtotals if s.amount]
    if invoice.total_tax and not any(s.amount for s in invoice.tax_subtotals):
        lines.append({"name": "Tax", "description": "", "quantity": "1.00",
                      "unit_price": cents(invoice.total_tax)})
    total = sum((Decimal(line["quantity"]) * Decimal(line["unit_price"]) for line in lines),
                Decimal(0))
    if total != invoice.total:
        raise MappingError(f"invoice {invoice.id}: its lines come to {total} in BottleCRM, "
                           f"not the ERP's {invoice.total}", system=SYSTEM)
    return InvoiceDraft(
        reference=invoice.id, invoice_title=title, account_id=account, opportunity_id=deal,
        currency=invoice.currency, issue_date=invoice.issued_on, due_date=invoice.due_date,
        total=invoice.total,
        notes=f"Invoice {invoice.number} from the ERP; payments are recorded as the ERP "
              "receives them.", line_items=lines)


def line_values(line: InvoiceLine) -> dict[str, str]:
    name = line.sku
    description = line.description or ""
    exact = (_in_cents(line.quantity) and _in_cents(line.unit_price)
             and not line.discount_percent and line.quantity * line.unit_price == line.net_amount)
    if exact:
        return {"name": name, "description": description, "quantity": cents(line.quantity),
                "unit_price": cents(line.unit_price)}
    detail = f"{_plain(line.quantity)} x {_plain(line.unit_price)}"
    if line.discount_percent:
        detail += f" less {_plain(line.discount_percent)}%"
    return {"name": name, "description": f"{description} ({detail})".strip(),
            "quantity": "1.00", "unit_price": cents(line.net_amount)}


def cents(value: Decimal) -> str:
    """A figure as BottleCRM takes it: exactly two decimals ("84.55", "1.00"). Only called
    with values that have no more (checked), so nothing is rounded here."""
    if not _in_cents(value):
        raise MappingError(f"{value} has more decimals than BottleCRM keeps (2)", system=SYSTEM)
    return format(value.quantize(CENT), "f")


def _in_cents(value: Decimal) -> bool:
    return value == value.quantize(CENT)


def _plain(value: Decimal) -> str:
    """Without trailing zeros, for descriptions: 11.423750 -> 11.42375, 3.0 -> 3."""
    return format(value.normalize(), "f")
