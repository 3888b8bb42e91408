"""Canonical won Order -> Tryton sale.sale values, against the ERP's catalogue; and the ERP's
confirmed sale back as the accepted Order. Pure.

The sale's `reference` is the canonical order id: the connector searches it before creating,
so a redelivered order never becomes a second sale. The ERP's reference data (currencies,
products by code with their customer taxes, taxes by rate, its price precision and tax
rounding) comes in as a Catalogue the connector read; the customer's party comes from the
cross-reference (MissingDependency until it is bound).

Money (docs/money.md): the CRM owns each line's net, the ERP the tax. A line's unit price is
the list price less the discount when the ERP keeps that many decimals; otherwise the price
nearest to it whose line amount (quantity x price, rounded half to even as Tryton does) is
the CRM's net. With sale discounts in the ERP the list price goes in as the line's base
price, so the ERP shows the discount. Taxes are the line's rate when the order names one,
else the product's customer taxes, else the order's fallback rate. The figures the ERP must
compute come along (SaleValues.expected, by the ERP's own tax rounding); a line no price can
represent, or a tax that would differ from the tax on the CRM's own amounts, is refused
(AmountMismatch, both amounts named) before anything is written.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from connectors.tryton.models import (
    Catalogue,
    PlacedSale,
    ProductWanted,
    SaleFigures,
    SaleLineValues,
    SaleValues,
)
from crmhub.errors import AmountMismatch, MappingError
from mappings.base import XrefLookup
from schemas.canonical import (
    TRYTON_DOCUMENT,
    TRYTON_LINE,
    Order,
    OrderLine,
    minor_units,
    order_totals,
    round_money,
)

SYSTEM = "tryton"


def to_sale(order: Order, xref: XrefLookup, catalogue: Catalogue) -> SaleValues:
    party = int(xref.require("customer", order.customer_id, SYSTEM))
    currency = catalogue.currencies.get(order.currency)
    if currency is None:
        known = ", ".join(sorted(catalogue.currencies)) or "none"
        raise MappingError(f"currency {order.currency} is not set up in the ERP "
                           f"(it has: {known})", system=SYSTEM)
    lines = [line_values(line, catalogue, order.currency, order.fallback_tax_rate)
             for line in order.lines]
    return SaleValues(
        reference=order.id, party=party, currency=currency, sale_date=order.ordered_on,
        payment_term=catalogue.payment_term,
        description=f"CRM deal {order.deal_id}" if order.deal_id else None,
        comment=order.notes, lines=lines, currency_code=order.currency,
        expected=expected_figures(order, lines, catalogue))


def line_values(line: OrderLine, catalogue: Catalogue, currency: str,
                fallback_tax_rate: Decimal | None = None) -> SaleLineValues:
    product = catalogue.products.get(line.sku)
    if product is None:
        raise MappingError(f"line {line.line_no}: unknown product {line.sku!r} "
                           f"(no product with this code in the ERP)", system=SYSTEM)
    if line.tax_rate is not None:
        taxes = [_tax_of_rate(line.line_no, line.tax_rate, catalogue)] if line.tax_rate else []
    elif product.customer_taxes:
        taxes = list(product.customer_taxes)
    elif fallback_tax_rate:
        taxes = [_tax_of_rate(line.line_no, fallback_tax_rate, catalogue)]
    else:
        taxes = []
    description = line.description or product.name or line.sku
    if line.discount_percent:
        description += f" (list {line.unit_price} less {line.discount_percent.normalize():f}%)"
    step = Decimal(1).scaleb(-catalogue.price_digits)
    base_price = line.unit_price if catalogue.discounts and _fits(line.unit_price, step) else None
    return SaleLineValues(product=product.id, quantity=line.quantity, unit=product.uom,
                          unit_price=unit_price(line, currency, catalogue.price_digits),
                          base_price=base_price, taxes=taxes, description=description)


def _tax_of_rate(line_no: int, rate: Decimal, catalogue: Catalogue) -> int:
    tax = catalogue.taxes.get(rate)
    if tax is None:
        raise MappingError(f"line {line_no}: no customer tax of {rate}% in the ERP",
                           system=SYSTEM)
    return tax


def _fits(value: Decimal, step: Decimal) -> bool:
    return value == value.quantize(step)


def unit_price(line: OrderLine, currency: str, digits: int) -> Decimal:
    """The unit price, with at most `digits` decimals, whose Tryton line amount is the line's
    net: the discounted price itself when it fits and gives the net, else the nearest one
    that does. AmountMismatch when none does (the quantity is too large for the precision)."""
    step = Decimal(1).scaleb(-digits)
    half = Decimal(1).scaleb(-minor_units(currency)) / 2
    net, quantity = line.net_amount, line.quantity
    with localcontext(prec=60):
        exact = line.unit_price * (100 - line.discount_percent) / 100
        if _fits(exact, step) and _amount(quantity, exact, currency) == net:
            return exact
        # the prices whose line amount rounds to the net lie in [low, high]
        low, high = (net - half) / quantity, (net + half) / quantity
        nearest = min(max(exact, low), high).quantize(step, ROUND_HALF_EVEN)
        candidates = sorted({nearest - step, nearest, nearest + step},
                            key=lambda price: abs(price - exact))
        for price in candidates:
            if price >= 0 and _amount(quantity, price, currency) == net:
                return _plain(price)
        closest = candidates[0]
    raise AmountMismatch(
        f"line {line.line_no} ({line.sku}): the CRM's net is {net} {currency} "
        f"({quantity} x {line.unit_price} less {line.discount_percent.normalize():f}%), but "
        f"with the {digits} price decimals the ERP keeps the nearest unit price {closest} "
        f"gives {_amount(quantity, closest, currency)} {currency}: raise the ERP's price "
        f"precision ([product] price_decimal)", system=SYSTEM)


def _plain(value: Decimal) -> Decimal:
    """Without trailing zeros: 11.423750 -> 11.42375, 10.000000 -> 10."""
    value = value.normalize()
    return value.quantize(Decimal(1)) if value == value.to_integral() else value


def _amount(quantity: Decimal, price: Decimal, currency: str) -> Decimal:
    """A Tryton sale line's amount: quantity x unit price, rounded half to even."""
    with localcontext(prec=60):
        return round_money(quantity * price, currency, ROUND_HALF_EVEN)


def expected_figures(order: Order, lines: list[SaleLineValues], catalogue: Catalogue
                     ) -> SaleFigures:
    """What the ERP computes for these sale lines, by its own tax rounding: the CRM's nets,
    and the tax on the exact line amounts (quantity x the unit price sent). AmountMismatch
    when that tax differs from the same rule applied to the CRM's own amounts."""
    rule = TRYTON_LINE if catalogue.tax_rounding == "line" else TRYTON_DOCUMENT
    rates = [_rate(line, values, catalogue) for line, values in zip(order.lines, lines,
                                                                      strict=True)]
    # model_construct: the ERP's unit prices may have more decimals than a canonical price
    sent = order_totals([OrderLine.model_construct(
        line_no=n, sku="", net_amount=Decimal(0), quantity=values.quantity,
        unit_price=values.unit_price, discount_percent=Decimal(0), tax_rate=rate)
        for n, (values, rate) in enumerate(zip(lines, rates, strict=True), 1)],
        order.currency, rule)
    own = order_totals([line.model_copy(update={"tax_rate": rate})
                        for line, rate in zip(order.lines, rates, strict=True)],
                       order.currency, rule)
    assert sent.total_tax is not None and sent.total is not None and own.total_tax is not None
    assert sent.line_nets == [line.net_amount for line in order.lines]  # unit_price() did it
    if sent.total_tax != own.total_tax:
        raise AmountMismatch(
            f"order {order.id}: the ERP would compute net {sent.total_net} + tax "
            f"{sent.total_tax} = {sent.total} {order.currency} on its unit prices, the CRM's "
            f"amounts give net {order.total_net} + tax {own.total_tax} = "
            f"{order.total_net + own.total_tax} {order.currency}", system=SYSTEM)
    return SaleFigures(lines=sent.line_nets, untaxed=sent.total_net, tax=sent.total_tax,
                       total=sent.total)


def _rate(line: OrderLine, values: SaleLineValues, catalogue: Catalogue) -> Decimal:
    """The line's tax rate in percent, from the taxes the sale line gets."""
    known = {tax: rate for rate, tax in catalogue.taxes.items()} | catalogue.tax_rates
    rates = [known.get(tax) for tax in values.taxes]
    if any(rate is None for rate in rates):
        raise MappingError(f"line {line.line_no}: product {line.sku} has a tax that is not a "
                           "percentage (only percentage taxes are synced)", system=SYSTEM)
    return sum((rate for rate in rates if rate is not None), Decimal(0))


def accepted(won: Order, sale: PlacedSale) -> Order:
    """The won order as the ERP confirmed it: its number, each line's tax rate and amount,
    and the totals, all the ERP's figures (order.accepted)."""
    if len(sale.lines) != len(won.lines):
        raise MappingError(f"sale {sale.number} has {len(sale.lines)} lines, the order "
                           f"{len(won.lines)}", system=SYSTEM)
    lines = [line.model_copy(update={
        "tax_rate": sum((r for r in erp.tax_rates if r is not None), Decimal(0)),
        "net_amount": erp.amount}) for line, erp in zip(won.lines, sale.lines, strict=True)]
    return Order.model_validate({
        **won.model_dump(exclude={"lines"}), "lines": [line.model_dump() for line in lines],
        "number": sale.number, "total_net": sale.untaxed_amount,
        "total_tax": sale.tax_amount, "total": sale.total_amount})


def refused(won: Order, reason: str) -> Order:
    """The won order the ERP did not take, and why (order.refused)."""
    return won.model_copy(update={"refusal": reason})


def products_wanted(order: Order) -> list[ProductWanted]:
    """The products the order's lines name (first line wins for a repeated code)."""
    wanted: dict[str, ProductWanted] = {}
    for line in order.lines:
        wanted.setdefault(line.sku, ProductWanted(
            code=line.sku, name=line.description or line.sku, list_price=line.unit_price,
            tax_rate=line.tax_rate if line.tax_rate is not None else
            order.fallback_tax_rate or Decimal(0)))
    return list(wanted.values())
