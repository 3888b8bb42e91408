"""BottleCRM won deal (+ its line items and account) -> canonical Order, and the ERP order
number back onto the deal as a note. Pure.

The canonical order id is the deal id. Quantities, prices and discounts stay exact Decimals:
a percentage discount is carried as is; a fixed one as the percentage that gives the same
line net (refused if none does). The SKU is the linked product's; a line without a product
SKU is refused (the ERP could not know what to sell). BottleCRM deal lines carry no tax, so
the order leaves each line's rate open (None): the ERP's product tax applies, and
`fallback_tax_rate` (BOTTLECRM_DEFAULT_TAX_RATE, if set) only for products the ERP has no tax
for. The ERP owns `number` and the tax: the notes put on the deal show the ERP's figures
(order.accepted) or, when the ERP refused the order, why (order.refused; docs/money.md).
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from pydantic import BaseModel

from connectors.bottlecrm.models import Account, DealNote, LineItem, Opportunity
from crmhub.errors import MappingError
from mappings.base import XrefLookup, content_hash
from schemas.canonical import CURRENCIES, Order, TaxRule, line_net_amount

SYSTEM = "bottlecrm"
WON_STAGE = "CLOSED_WON"
#: Fields the CRM does not own (the ERP sets the number) or that change on every save.
NOT_OWNED = frozenset({"number", "updated_at"})
#: BottleCRM (Django) keeps line totals in 2 decimals, rounded half to even: the order's line
#: nets are its figures (the CRM owns them), so the hub rounds as it does.
CRM_RULE = TaxRule(ROUND_HALF_EVEN)
ERP_NUMBER_MARKER = "crmhub:erp-order"
ERP_REFUSED_MARKER = "crmhub:erp-refused"


class WonDeal(BaseModel):
    """What the hub knows about a deal.won: the deal, its lines, its account, and when."""

    deal: Opportunity
    lines: list[LineItem]
    account: Account | None = None
    won_on: date
    updated_at: datetime | None = None


def to_order(won: WonDeal, default_currency: str, fallback_tax_rate: Decimal | None = None
             ) -> Order:
    deal = won.deal
    where = f"deal {deal.id} ({deal.name})"
    if not is_won(deal):
        kind = deal.stage_kind or "kind unknown"
        raise MappingError(f"{where} is in stage {deal.stage!r} ({kind}), not a won stage: "
                           "nothing to order", system=SYSTEM)
    if deal.account is None or won.account is None:
        raise MappingError(f"{where} has no account: link one in BottleCRM, the ERP needs "
                           "a customer", system=SYSTEM)
    if not won.lines:
        raise MappingError(f"{where} has no line items: nothing to order", system=SYSTEM)
    currency = deal.currency or won.account.currency or default_currency
    if currency not in CURRENCIES:
        raise MappingError(f"{where} has currency {currency!r}, not an ISO 4217 code",
                           system=SYSTEM)
    lines = [line_values(n, line, currency)
             for n, line in enumerate(sorted(won.lines, key=lambda x: x.order), start=1)]
    try:
        won_order = Order.build(
            id=deal.id, customer_id=won.account.id, currency=currency,
            ordered_on=deal.closed_on or won.won_on, lines=lines, deal_id=deal.id,
            notes=deal.description, updated_at=won.updated_at,
            fallback_tax_rate=fallback_tax_rate, rule=CRM_RULE)
    except ValueError as exc:  # the canonical model's checks, said for this deal
        raise MappingError(f"{where}: {exc}", system=SYSTEM) from None
    for line, ordered in zip(sorted(won.lines, key=lambda x: x.order), won_order.lines,
                             strict=True):
        if line.total is not None and line.total != ordered.net_amount:
            raise MappingError(f"{where}: line {ordered.line_no} is {line.total} {currency} in "
                               f"BottleCRM, its quantity, price and discount give "
                               f"{ordered.net_amount}", system=SYSTEM)
    return won_order


def is_won(deal: Opportunity) -> bool:
    """In a won stage: the stage kind says so, or (a webhook without the kind) CLOSED_WON."""
    if deal.stage_kind is not None:
        return deal.stage_kind == "won"
    return deal.stage == WON_STAGE


def line_values(line_no: int, line: LineItem, currency: str) -> dict[str, Any]:
    name = line.name or (line.product.name if line.product else None)
    sku = line.product.sku if line.product else None
    if not sku:
        raise MappingError(f"line {line_no} ({name or line.id}) names no product with a SKU "
                           "in BottleCRM: link a product that has one", system=SYSTEM)
    description = " - ".join(part for part in (name, line.description) if part) or None
    return {"line_no": line_no, "sku": sku, "description": description,
            "quantity": line.quantity, "unit_price": line.unit_price,
            "discount_percent": _discount_percent(line_no, line, currency),
            "tax_rate": None}


def _discount_percent(line_no: int, line: LineItem, currency: str) -> Decimal:
    if not line.discount_type or not line.discount_value:
        return Decimal(0)
    if line.discount_type == "PERCENTAGE":
        return line.discount_value
    gross = line.quantity * line.unit_price
    if line.discount_type != "FIXED" or not gross:
        raise MappingError(f"line {line_no}: unknown discount type {line.discount_type!r}",
                           system=SYSTEM)
    with localcontext(prec=12):
        percent = (line.discount_value * 100 / gross).normalize()
    expected = gross - line.discount_value
    if line_net_amount(line.quantity, line.unit_price, percent, currency) != expected:
        raise MappingError(f"line {line_no}: a fixed discount of {line.discount_value} on "
                           f"{gross} is no exact percentage", system=SYSTEM)
    return percent


def order_hash(order: Order) -> str:
    """What changes when the CRM-owned content changes (never on the hub's own writes)."""
    return content_hash(order, NOT_OWNED)


def erp_number_note(order: Order, xref: XrefLookup) -> DealNote:
    """order.accepted -> a note on the deal naming the ERP's order number and its totals
    (the ERP's figures: order.accepted carries them)."""
    deal = xref.require("order", order.id, SYSTEM)
    if not order.number:
        raise MappingError(f"order {order.id} was accepted without an ERP number",
                           system=SYSTEM)
    if order.total is None or order.total_tax is None:
        raise MappingError(f"order {order.id} was accepted without the ERP's totals",
                           system=SYSTEM)
    return DealNote(deal_id=deal, marker=f"[{ERP_NUMBER_MARKER} {order.number}]",
                    text=f"ERP order {order.number} confirmed: total {order.total} "
                         f"{order.currency} (net {order.total_net} + tax {order.total_tax})")


def refusal_note(order: Order, xref: XrefLookup) -> DealNote:
    """order.refused -> a note on the deal saying why the ERP did not take the order (both
    amounts named); once per distinct reason."""
    deal = xref.require("order", order.id, SYSTEM)
    reason = order.refusal or "no reason given"
    digest = hashlib.sha256(reason.encode()).hexdigest()[:12]
    return DealNote(deal_id=deal, marker=f"[{ERP_REFUSED_MARKER} {digest}]",
                    text=f"ERP refused this order: {reason}")
