"""Canonical payments (the ERP's) -> payments recorded on BottleCRM invoices. Pure.

Each allocation of a payment.received is one CRM payment on the invoice it pays, its
reference number the canonical payment id (the connector records a reference once). An
invoice.payment_state_changed to "paid" settles what the CRM still shows as due, under the
reference "<invoice id>:settled" (the CRM then says Paid even if a payment event was lost).
"""

from __future__ import annotations

from pydantic import BaseModel

from connectors.bottlecrm.models import PaymentDraft
from crmhub.errors import MappingError
from mappings.base import XrefLookup
from schemas.canonical import Invoice, Payment

SYSTEM = "bottlecrm"
REFERENCE_MAX = 100
#: Canonical payment methods (free text from the ERP) -> BottleCRM's choices.
METHODS = {"cash": "CASH", "check": "CHECK", "cheque": "CHECK", "card": "CREDIT_CARD",
           "credit_card": "CREDIT_CARD", "paypal": "PAYPAL", "stripe": "STRIPE",
           "bank": "BANK_TRANSFER", "bank_transfer": "BANK_TRANSFER",
           "transfer": "BANK_TRANSFER", "sepa": "BANK_TRANSFER", "wire": "BANK_TRANSFER"}


class CrmPayment(BaseModel):
    """One payment to record on one BottleCRM invoice."""

    invoice_id: str
    payment: PaymentDraft


def to_crm_payments(payment: Payment, xref: XrefLookup) -> list[CrmPayment]:
    recorded = []
    for n, allocation in enumerate(payment.allocations, start=1):
        invoice = xref.require("invoice", allocation.invoice_id, SYSTEM)  # parks until bound
        reference = payment.id if len(payment.allocations) == 1 else f"{payment.id}#{n}"
        if len(reference) > REFERENCE_MAX:
            raise MappingError(f"payment reference {reference!r} is longer than BottleCRM's "
                               f"{REFERENCE_MAX} characters", system=SYSTEM)
        note = f"received by the ERP; {payment.reference}" if payment.reference else \
            "received by the ERP"
        recorded.append(CrmPayment(invoice_id=invoice, payment=PaymentDraft(
            amount=allocation.amount, payment_date=payment.received_on,
            payment_method=method(payment.method), reference_number=reference, notes=note)))
    return recorded


def settlement(invoice: Invoice, xref: XrefLookup) -> CrmPayment | None:
    """For an invoice the ERP says is paid: the rest of what the CRM shows as due (the
    connector caps it to that), once. None for any other payment state."""
    if invoice.payment_state != "paid":
        return None
    crm_invoice = xref.require("invoice", invoice.id, SYSTEM)
    paid_on = invoice.updated_at.date() if invoice.updated_at else invoice.issued_on
    return CrmPayment(invoice_id=crm_invoice, payment=PaymentDraft(
        amount=invoice.total, payment_date=paid_on, payment_method="OTHER",
        reference_number=f"{invoice.id}:settled",
        notes="settled: the ERP reports the invoice paid"))


def method(name: str | None) -> str:
    key = (name or "").strip().lower().replace(" ", "_").replace("-", "_")
    for word, code in METHODS.items():
        if key == word or key.startswith(word):
            return code
    return "OTHER"
