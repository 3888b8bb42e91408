"""Tryton's own payload shapes: what the hub writes into the ERP and what its feeds read back.

Write side (built by mappings/tryton from canonical models, sent by connectors.tryton.erp):
PartyValues, SaleValues. Read side (read by the erp's feeds, mapped to canonical events):
TrytonInvoice, TrytonShipment. `Catalogue` is the ERP's reference data an order mapping needs
(currencies, products by code, customer taxes by rate), read by the connector and handed to
the pure mapping as plain data. Extra fields are ignored: Tryton adds fields between versions.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: The identifier type-less code that carries the hub's canonical customer id on a party.
IDENTIFIER_PREFIX = "crmhub:"


class TrytonModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- write side ---------------------------------------------------------------------------

class AddressValues(TrytonModel):
    street: str | None = None
    postal_code: str | None = None
    city: str | None = None
    country_code: str | None = None
    party_name: str | None = None
    invoice: bool = False
    delivery: bool = False


class ContactMechanismValues(TrytonModel):
    type: Literal["email", "phone", "mobile", "website", "other"]
    value: str
    name: str | None = None


class PartyValues(TrytonModel):
    """A customer as party.party: found again by its identifier code `crmhub:<customer id>`."""

    identifier: str
    name: str
    addresses: list[AddressValues] = Field(default_factory=list)
    contact_mechanisms: list[ContactMechanismValues] = Field(default_factory=list)


class CatalogueProduct(TrytonModel):
    id: int
    uom: int
    name: str = ""
    #: the product's customer taxes (its accounting category's), as tax ids
    customer_taxes: list[int] = Field(default_factory=list)


class ProductWanted(TrytonModel):
    """A product an order line needs: created like this when auto-creation is on."""

    code: str
    name: str
    list_price: Decimal
    tax_rate: Decimal


class Catalogue(TrytonModel):
    """Reference data of the ERP an order needs, keyed the canonical way (codes and rates)."""

    currencies: dict[str, int] = Field(default_factory=dict)
    products: dict[str, CatalogueProduct] = Field(default_factory=dict)
    #: customer percentage taxes by rate in percent ("19" -> tax id)
    taxes: dict[Decimal, int] = Field(default_factory=dict)
    #: the rate in percent of every tax the products name (tax id -> "19"); None: not a
    #: percentage tax
    tax_rates: dict[int, Decimal | None] = Field(default_factory=dict)
    payment_term: int | None = None
    #: decimals the ERP keeps in a sale line's unit price (trytond's [product] price_decimal,
    #: as the server reports the field's digits)
    price_digits: int = 4
    #: the company's tax rounding (account.configuration tax_rounding)
    tax_rounding: Literal["document", "line"] = "document"
    #: sale lines have a base price and discount (the trytond-sale-discount module)
    discounts: bool = False


class SaleLineValues(TrytonModel):
    product: int
    quantity: Decimal
    unit: int
    unit_price: Decimal
    #: the list price before the discount (sent only where sale lines have one)
    base_price: Decimal | None = None
    taxes: list[int] = Field(default_factory=list)
    description: str


class SaleFigures(TrytonModel):
    """A sale's money as the ERP computes it: line amounts (in line order) and totals."""

    lines: list[Decimal]
    untaxed: Decimal
    tax: Decimal
    total: Decimal

    def differences(self, erp: SaleFigures) -> list[str]:
        """Where `erp` (what the ERP computed) differs from these expected figures."""
        found = [f"line {n}: {want} expected, {got} in the ERP"
                 for n, (want, got) in enumerate(zip(self.lines, erp.lines, strict=False), 1)
                 if want != got]
        if len(self.lines) != len(erp.lines):
            found.append(f"{len(self.lines)} lines expected, {len(erp.lines)} in the ERP")
        found += [f"{name}: {want} expected, {got} in the ERP" for name, want, got in (
            ("untaxed", self.untaxed, erp.untaxed), ("tax", self.tax, erp.tax),
            ("total", self.total, erp.total)) if want != got]
        return found


class SaleValues(TrytonModel):
    """A won order as sale.sale: `reference` = canonical order id, searched before creating."""

    reference: str
    party: int
    currency: int
    sale_date: date
    payment_term: int | None = None
    description: str | None = None
    comment: str | None = None
    lines: list[SaleLineValues] = Field(min_length=1)
    #: what the ERP must compute for the lines: checked before the sale is confirmed
    expected: SaleFigures
    currency_code: str


class PlacedLine(TrytonModel):
    amount: Decimal
    #: the rates of the line's taxes in percent (19); None: not a percentage tax
    tax_rates: list[Decimal | None] = Field(default_factory=list)


class PlacedSale(TrytonModel):
    """A confirmed sale, with the ERP's own figures read back after confirming."""

    id: int
    number: str
    state: str
    lines: list[PlacedLine] = Field(default_factory=list)
    untaxed_amount: Decimal
    tax_amount: Decimal
    total_amount: Decimal


# --- read side ----------------------------------------------------------------------------

class TrytonTax(TrytonModel):
    """One tax of an invoice (account.invoice.tax); rate is a fraction (0.19)."""

    rate: Decimal | None
    base: Decimal
    amount: Decimal


class TrytonInvoiceLine(TrytonModel):
    product_code: str | None = None
    description: str | None = None
    quantity: Decimal
    unit: str = "unit"
    unit_price: Decimal
    amount: Decimal
    tax_rates: list[Decimal] = Field(default_factory=list)


class TrytonPaymentLine(TrytonModel):
    """A move line paying an invoice (account.invoice payment_lines), in invoice currency."""

    id: int
    date: date
    amount: Decimal
    journal: str | None = None
    reference: str | None = None


class TrytonInvoice(TrytonModel):
    id: int
    number: str | None
    state: Literal["draft", "validated", "posted", "paid", "cancelled"]
    party: int
    party_identifier: str | None = None
    currency_code: str
    invoice_date: date | None
    due_date: date | None
    order_reference: str | None = None
    lines: list[TrytonInvoiceLine]
    taxes: list[TrytonTax] = Field(default_factory=list)
    untaxed_amount: Decimal
    tax_amount: Decimal
    total_amount: Decimal
    amount_to_pay: Decimal
    payments: list[TrytonPaymentLine] = Field(default_factory=list)
    #: the newest change stamp of the invoice and its payment lines (server clock, UTC)
    changed_at: datetime


class TrytonShipmentMove(TrytonModel):
    product_code: str | None
    quantity: Decimal


class TrytonShipment(TrytonModel):
    id: int
    number: str | None
    state: str
    party: int
    party_identifier: str | None = None
    order_reference: str | None = None
    reference: str | None = None
    shipped_at: datetime | None = None
    done_at: datetime | None = None
    moves: list[TrytonShipmentMove] = Field(default_factory=list)
    changed_at: datetime
