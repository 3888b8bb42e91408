"""Tryton invoice payment lines -> canonical Payments allocated to that invoice. Pure.

A payment line is a move line put on the invoice (the pay wizard, a statement); its amount is
already in the invoice's currency. Refund lines (negative amounts) are not payments received.
"""

from __future__ import annotations

from connectors.tryton.models import TrytonInvoice
from mappings.tryton.customer import customer_id_for
from mappings.tryton.invoice import invoice_id_for
from schemas.canonical import Payment, PaymentAllocation, round_money


def payment_id_for(line: int) -> str:
    return f"tryton-payment-{line}"


def to_payments(invoice: TrytonInvoice) -> list[Payment]:
    customer = customer_id_for(invoice.party, invoice.party_identifier)
    return [Payment(id=payment_id_for(line.id), customer_id=customer,
                    currency=invoice.currency_code,
                    amount=round_money(line.amount, invoice.currency_code),
                    received_on=line.date,
                    method=line.journal, reference=line.reference,
                    allocations=[PaymentAllocation(invoice_id=invoice_id_for(invoice.id),
                                                   amount=round_money(
                                                       line.amount, invoice.currency_code))])
            for line in invoice.payments if line.amount > 0]
