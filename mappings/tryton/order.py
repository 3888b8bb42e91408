"""Canonical won Order -> Tryton sale.sale values, against the ERP's catalogue. Pure.

The sale's `reference` is the canonical order id: the connector searches it before creating,
so a redelivered order never becomes a second sale. The ERP's reference data (currencies,
products by code, customer taxes by rate) comes in as a Catalogue the connector read; the
customer's party comes from the cross-reference (MissingDependency until it is bound).

Tryton 8.0 sale lines have no discount field: a discount is folded into the unit price
(rounded to Tryton's 4 price digits) and named in the line description.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from connectors.tryton.models import Catalogue, ProductWanted, SaleLineValues, SaleValues
from crmhub.errors import MappingError
from mappings.base import XrefLookup
from schemas.canonical import Order, OrderLine

SYSTEM = "tryton"
PRICE_DIGITS = Decimal("0.0001")


def to_sale(order: Order, xref: XrefLookup, catalogue: Catalogue) -> SaleValues:
    party = int(xref.require("customer", order.customer_id, SYSTEM))
    currency = catalogue.currencies.get(order.currency)
    if currency is None:
        known = ", ".join(sorted(catalogue.currencies)) or "none"
        raise MappingError(f"currency {order.currency} is not set up in the ERP "
                           f"(it has: {known})", system=SYSTEM)
    return SaleValues(
        reference=order.id, party=party, currency=currency, sale_date=order.ordered_on,
        payment_term=catalogue.payment_term,
        description=f"CRM deal {order.deal_id}" if order.deal_id else None,
        comment=order.notes,
        lines=[line_values(line, catalogue) for line in order.lines])


def line_values(line: OrderLine, catalogue: Catalogue) -> SaleLineValues:
    product = catalogue.products.get(line.sku)
    if product is None:
        raise MappingError(f"line {line.line_no}: unknown product {line.sku!r} "
                           f"(no product with this code in the ERP)", system=SYSTEM)
    taxes: list[int] = []
    if line.tax_rate:
        tax = catalogue.taxes.get(line.tax_rate)
        if tax is None:
            raise MappingError(f"line {line.line_no}: no customer tax of {line.tax_rate}% "
                               f"in the ERP", system=SYSTEM)
        taxes.append(tax)
    description = line.description or product.name or line.sku
    unit_price = line.unit_price
    if line.discount_percent:
        unit_price = (line.unit_price * (100 - line.discount_percent) / 100).quantize(
            PRICE_DIGITS, rounding=ROUND_HALF_UP)
        description += f" (list {line.unit_price} less {line.discount_percent}%)"
    return SaleLineValues(product=product.id, quantity=line.quantity, unit=product.uom,
                          unit_price=unit_price, taxes=taxes, description=description)


def products_wanted(order: Order) -> list[ProductWanted]:
    """The products the order's lines name (first line wins for a repeated code)."""
    wanted: dict[str, ProductWanted] = {}
    for line in order.lines:
        wanted.setdefault(line.sku, ProductWanted(
            code=line.sku, name=line.description or line.sku, list_price=line.unit_price,
            tax_rate=line.tax_rate))
    return list(wanted.values())
