"""Tryton customer invoice -> canonical Invoice, with its payment state as of a day. Pure.

Canonical ids of ERP-owned records name the ERP: `tryton-invoice-<id>`. The payment state
comes from the residual (amount_to_pay); an unpaid residual past the due date is "overdue".
Credit notes (negative lines) are not synced yet and are refused with a clear error.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

from connectors.tryton.models import TrytonInvoice
from crmhub.errors import MappingError
from mappings.tryton.customer import customer_id_for
from schemas.canonical import (
    Invoice,
    InvoiceLine,
    PaymentState,
    TaxSubtotal,
    payment_state_for,
    round_money,
)

SYSTEM = "tryton"


def invoice_id_for(invoice: int) -> str:
    return f"tryton-invoice-{invoice}"


def to_invoice(invoice: TrytonInvoice, today: date) -> Invoice:
    if invoice.state not in ("posted", "paid") or not invoice.number or not invoice.invoice_date:
        raise MappingError(f"invoice {invoice.id} is {invoice.state}: only posted invoices "
                           "are synced", system=SYSTEM)
    if invoice.total_amount < 0 or any(line.quantity <= 0 for line in invoice.lines):
        raise MappingError(f"invoice {invoice.number} is a credit note (negative lines): "
                           "credit notes are not synced", system=SYSTEM)
    residual = round_money(Decimal(0) if invoice.state == "paid" else invoice.amount_to_pay,
                           invoice.currency_code)
    due_date = invoice.due_date or invoice.invoice_date
    return Invoice(
        id=invoice_id_for(invoice.id), number=invoice.number,
        order_id=invoice.order_reference,
        customer_id=customer_id_for(invoice.party, invoice.party_identifier),
        currency=invoice.currency_code, issued_on=invoice.invoice_date, due_date=due_date,
        lines=[InvoiceLine(line_no=n, sku=line.product_code or "(no product)",
                           description=line.description, quantity=line.quantity,
                           unit=line.unit, unit_price=line.unit_price,
                           tax_rate=sum(line.tax_rates, Decimal(0)) * 100,
                           net_amount=line.amount)
               for n, line in enumerate(invoice.lines, start=1)],
        tax_subtotals=tax_subtotals(invoice),
        total_net=invoice.untaxed_amount, total_tax=invoice.tax_amount,
        total=invoice.total_amount, amount_residual=residual,
        payment_state=payment_state(residual, invoice.total_amount, due_date, today),
        updated_at=invoice.changed_at)


def payment_state(residual: Decimal, total: Decimal, due_date: date, today: date) -> PaymentState:
    if residual > 0 and due_date < today:
        return "overdue"
    return payment_state_for(residual, total)


def tax_subtotals(invoice: TrytonInvoice) -> list[TaxSubtotal]:
    by_rate: dict[Decimal, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for tax in invoice.taxes:
        if tax.rate is None:
            raise MappingError(f"invoice {invoice.number}: only percentage taxes are synced",
                               system=SYSTEM)
        sums = by_rate[(tax.rate * 100).normalize()]
        sums[0] += tax.base
        sums[1] += tax.amount
    return [TaxSubtotal(rate=rate, base=base, amount=amount)
            for rate, (base, amount) in sorted(by_rate.items())]
