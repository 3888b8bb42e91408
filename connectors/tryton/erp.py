"""The ERP side of Tryton: customers as parties, won orders as confirmed sales, and the
invoice and payment reads the change feeds poll.

Every write is idempotent by a reference the hub puts into the record and searches before
creating: a party carries the identifier `crmhub:<customer id>`, a sale's `reference` is the
canonical order id. A crash between the ERP write and the hub's ledger write therefore never
creates a second party or sale; the redelivery finds the record and finishes what is left
(quote, confirm). Reference data (currencies, products and their customer taxes, taxes,
countries, the price precision and tax rounding) is read once and cached; a code the cache
lacks is looked up again before it is called unknown.

Money (docs/money.md): a sale is checked before it is confirmed -- the line amounts and
totals the ERP computed must be the ones the mapping expected (SaleValues.expected); if not,
the draft is deleted and the order refused (AmountMismatch, both amounts named). After
confirming, the sale's own figures are read back (PlacedSale) for what goes to the CRM.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from connectors.tryton.client import TrytonClient
from connectors.tryton.models import (
    IDENTIFIER_PREFIX,
    AddressValues,
    Catalogue,
    CatalogueProduct,
    PartyValues,
    PlacedLine,
    PlacedSale,
    ProductWanted,
    SaleFigures,
    SaleLineValues,
    SaleValues,
    TrytonInvoice,
    TrytonInvoiceLine,
    TrytonPaymentLine,
    TrytonTax,
)
from connectors.tryton.settings import TrytonSettings
from crmhub.errors import AmountMismatch, PermanentError

SYSTEM = "tryton"
#: How long reference data (currencies, taxes) is trusted before it is read again.
REFERENCE_TTL = 300.0


class TrytonErp:
    def __init__(self, settings: TrytonSettings, client: TrytonClient | None = None) -> None:
        self.settings = settings
        self.client = client or TrytonClient(settings)
        self._currencies: dict[str, int] = {}
        self._taxes: dict[Decimal, int] = {}
        self._tax_rates: dict[int, Decimal | None] = {}
        self._countries: dict[str, int] = {}
        self._products: dict[str, CatalogueProduct] = {}
        self._price_digits = 4
        self._tax_rounding = "document"
        self._discounts = False
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    @classmethod
    def from_env(cls) -> TrytonErp:
        return cls(TrytonSettings())

    async def aclose(self) -> None:
        await self.client.aclose()

    @property
    def calls(self) -> int:
        """JSON-RPC requests so far (login included): benchmarks report calls per order."""
        return self.client.calls

    # -- customers -----------------------------------------------------------------------------
    async def upsert_party(self, party: PartyValues) -> int:
        """Create the party, or bring an existing one (found by identifier) up to date."""
        c = self.client
        found = await c.search("party.party", [("identifiers.code", "=", party.identifier)],
                               limit=2)
        if len(found) > 1:
            raise PermanentError(f"{len(found)} parties carry the identifier "
                                 f"{party.identifier!r}: merge them in Tryton", system=SYSTEM)
        countries = await self._country_ids(a.country_code for a in party.addresses)
        if not found:
            values: dict[str, Any] = {
                "name": party.name,
                "identifiers": [("create", [{"type": None, "code": party.identifier}])],
                "addresses": [("create", [_address(a, countries) for a in party.addresses])],
                "contact_mechanisms": [("create", [m.model_dump() for m in
                                                   party.contact_mechanisms])],
            }
            (party_id,) = await c.create("party.party", [values])
            return int(party_id)
        party_id = int(found[0])
        changes = await self._party_changes(party_id, party, countries)
        if changes:
            await c.write("party.party", [party_id], changes)
        return party_id

    async def _party_changes(self, party_id: int, party: PartyValues,
                             countries: dict[str, int]) -> dict[str, Any]:
        """What to write so the ERP party equals the CRM's: the CRM owns these fields."""
        c = self.client
        current, addresses, mechanisms = await asyncio.gather(
            c.read("party.party", [party_id], ["name"]),
            c.search_read("party.address", [("party", "=", party_id)],
                          ["street", "postal_code", "city", "country", "invoice", "delivery"],
                          order=[("sequence", "ASC"), ("id", "ASC")]),
            c.search_read("party.contact_mechanism", [("party", "=", party_id)],
                          ["type", "value", "name"]))
        changes: dict[str, Any] = {}
        if current[0]["name"] != party.name:
            changes["name"] = party.name
        address_ops: list[tuple[Any, ...]] = []
        for wanted, existing in zip(party.addresses, addresses, strict=False):
            values = _address(wanted, countries)
            if any(existing.get(k) != v for k, v in values.items()):
                address_ops.append(("write", [existing["id"]], values))
        if len(party.addresses) > len(addresses):
            address_ops.append(("create", [_address(a, countries)
                                           for a in party.addresses[len(addresses):]]))
        if len(addresses) > len(party.addresses):  # used by old sales: deactivate, not delete
            address_ops.append(("write", [a["id"] for a in addresses[len(party.addresses):]],
                                {"active": False}))
        if address_ops:
            changes["addresses"] = address_ops
        wanted_mechanisms = {(m.type, m.value): m for m in party.contact_mechanisms}
        have = {(m["type"], m["value"]): m for m in mechanisms}
        mechanism_ops: list[tuple[Any, ...]] = []
        stale = [m["id"] for key, m in have.items() if key not in wanted_mechanisms]
        if stale:
            mechanism_ops.append(("delete", stale))
        new = [m.model_dump() for key, m in wanted_mechanisms.items() if key not in have]
        if new:
            mechanism_ops.append(("create", new))
        for key, m in wanted_mechanisms.items():
            if key in have and (have[key]["name"] or None) != m.name:
                mechanism_ops.append(("write", [have[key]["id"]], {"name": m.name}))
        if mechanism_ops:
            changes["contact_mechanisms"] = mechanism_ops
        return changes

    async def _country_ids(self, codes: Iterable[str | None]) -> dict[str, int]:
        wanted = {code for code in codes if code}
        missing = wanted - set(self._countries)
        if missing:
            rows = await self.client.search_read("country.country",
                                                 [("code", "in", sorted(missing))], ["code"])
            self._countries.update({r["code"]: r["id"] for r in rows})
        unknown = wanted - set(self._countries)
        if unknown:
            raise PermanentError(f"country {', '.join(sorted(unknown))} is not set up in the "
                                 "ERP (import the countries into Tryton)", system=SYSTEM)
        return self._countries

    # -- orders --------------------------------------------------------------------------------
    async def catalogue(self, wanted: Sequence[ProductWanted], currency: str) -> Catalogue:
        """The reference data an order needs. With TRYTON_AUTO_CREATE_PRODUCTS on, products
        the ERP lacks are created first; otherwise the mapping names the unknown codes."""
        codes = {product.code for product in wanted}
        async with self._lock:
            stale = time.monotonic() - self._read_at > REFERENCE_TTL
            if stale or currency not in self._currencies:
                await self._read_reference()
            if codes - set(self._products):
                await self._read_products(codes - set(self._products))
            if self.settings.auto_create_products:
                await self._create_products([p for p in wanted if p.code not in self._products])
            products = {k: v for k, v in self._products.items() if k in codes}
            await self._known_tax_rates({t for p in products.values() for t in p.customer_taxes})
        return Catalogue(currencies=self._currencies, products=products, taxes=self._taxes,
                         tax_rates={t: _percent(r) for t, r in self._tax_rates.items()},
                         price_digits=self._price_digits,
                         tax_rounding="line" if self._tax_rounding == "line" else "document",
                         discounts=self._discounts)

    async def _read_reference(self) -> None:
        c = self.client
        currencies, taxes, line_fields, configuration = await asyncio.gather(
            c.search_read("currency.currency", [], ["code"]),
            c.search_read("account.tax", [("type", "=", "percentage"), ("parent", "=", None)],
                          ["rate"], order=[("id", "ASC")]),
            c.model("sale.line", "fields_get", ["unit_price", "base_price"]),
            c.read("account.configuration", [1], ["tax_rounding"]))
        # the digits the server reports are its [product] price_decimal: "[null, 6]"
        digits = line_fields["unit_price"].get("digits")
        if isinstance(digits, str):
            digits = json.loads(digits)
        if isinstance(digits, list) and isinstance(digits[-1], int):
            self._price_digits = digits[-1]
        self._discounts = "base_price" in line_fields
        self._tax_rounding = (configuration[0].get("tax_rounding") if configuration else None
                              ) or "document"
        self._currencies = {r["code"]: r["id"] for r in currencies}
        by_rate: dict[Decimal, int] = {}
        for tax in taxes:
            self._tax_rates[tax["id"]] = tax["rate"]
            by_rate.setdefault((tax["rate"] * 100).normalize(), tax["id"])  # lowest id wins
        self._taxes = by_rate
        self._read_at = time.monotonic()

    async def _read_products(self, codes: set[str]) -> None:
        rows = await self.client.search_read(
            "product.product", [("code", "in", sorted(codes)), ("salable", "=", True)],
            ["code", "rec_name", "sale_uom", "default_uom",
             "template.account_category.customer_taxes_used"])
        for row in rows:
            category = (row.get("template.") or {}).get("account_category.") or {}
            self._products[row["code"]] = CatalogueProduct(
                id=row["id"], uom=row.get("sale_uom") or row["default_uom"], name=row["rec_name"],
                customer_taxes=category.get("customer_taxes_used") or [])

    async def _create_products(self, missing: Sequence[ProductWanted]) -> None:
        """Create products in the accounting category that carries their customer tax."""
        if not missing:
            return
        c = self.client
        units = await c.search("product.uom", [("symbol", "=", "u")], limit=1)
        if not units:
            raise PermanentError("no unit of measure 'u' to auto-create products with",
                                 system=SYSTEM)
        templates = []
        for product in missing:
            domain: list[Any] = [("accounting", "=", True)]
            tax = self._taxes.get(product.tax_rate)
            if tax is not None:
                domain.append(("customer_taxes", "=", tax))
            categories = await c.search("product.category", domain, limit=1)
            templates.append({
                "name": product.name, "code": product.code, "type": "goods", "salable": True,
                "list_price": product.list_price, "default_uom": units[0],
                "sale_uom": units[0], "account_category": categories[0] if categories else None,
                "products": [("create", [{}])]})
        await c.create("product.template", templates)
        await self._read_products({product.code for product in missing})

    async def place_sale(self, sale: SaleValues) -> PlacedSale:
        """Find the sale by reference or create it, check the ERP's figures against the
        expected ones, then quote and confirm it; its figures read back after confirming."""
        c = self.client
        found = await c.search_read("sale.sale", [("reference", "=", sale.reference)],
                                    ["number", "state"], limit=1)
        if found:
            sale_id, state = found[0]["id"], found[0]["state"]
            if state in ("confirmed", "processing", "done"):
                return await self._placed(sale_id)
        else:
            sale_id, state = await self._create_sale(sale), "draft"
        if state == "cancelled":
            raise PermanentError(f"sale {found[0]['number'] or sale_id} for order "
                                 f"{sale.reference!r} was cancelled in the ERP", system=SYSTEM)
        await self._check_figures(sale_id, state, sale)
        if state == "draft":
            await c.button("sale.sale", "quote", [sale_id])
        await c.button("sale.sale", "confirm", [sale_id])
        return await self._placed(sale_id)

    async def _check_figures(self, sale_id: int, state: str, sale: SaleValues) -> None:
        """Refuse the sale (AmountMismatch; a draft is deleted, so a replay after a fix starts
        afresh) when the ERP computed other amounts than the expected ones."""
        erp = (await self._figures(sale_id)).figures
        differences = sale.expected.differences(erp)
        if not differences:
            return
        if state == "draft":
            await self.client.delete("sale.sale", [sale_id])
        currency, want = sale.currency_code, sale.expected
        raise AmountMismatch(
            f"order {sale.reference}: the ERP computed total {erp.total} {currency} (net "
            f"{erp.untaxed} + tax {erp.tax}), the CRM's amounts give {want.total} {currency} "
            f"(net {want.untaxed} + tax {want.tax}); {'; '.join(differences)}", system=SYSTEM)

    async def _placed(self, sale_id: int) -> PlacedSale:
        read = await self._figures(sale_id)
        return PlacedSale(id=sale_id, number=read.row["number"], state=read.row["state"],
                          lines=read.lines, untaxed_amount=read.figures.untaxed,
                          tax_amount=read.figures.tax, total_amount=read.figures.total)

    async def _figures(self, sale_id: int) -> _SaleRead:
        """The sale's number, state, line amounts and taxes and totals, as the ERP has them."""
        c = self.client
        (row,), lines = await asyncio.gather(
            c.read("sale.sale", [sale_id], ["number", "state", "untaxed_amount", "tax_amount",
                                            "total_amount"]),
            c.search_read("sale.line", [("sale", "=", sale_id), ("type", "=", "line")],
                          ["amount", "taxes"], order=[("sequence", "ASC"), ("id", "ASC")]))
        await self._known_tax_rates({t for line in lines for t in line["taxes"]})
        return _SaleRead(row, [PlacedLine(amount=line["amount"], tax_rates=[
            _percent(self._tax_rates.get(t)) for t in line["taxes"]]) for line in lines],
            SaleFigures(lines=[line["amount"] for line in lines], untaxed=row["untaxed_amount"],
                        tax=row["tax_amount"], total=row["total_amount"]))

    async def _create_sale(self, sale: SaleValues) -> int:
        addresses = await self.client.search_read(
            "party.address", [("party", "=", sale.party)], ["invoice", "delivery"],
            order=[("sequence", "ASC"), ("id", "ASC")])
        if not addresses:
            raise PermanentError(f"the customer's party {sale.party} has no address: Tryton "
                                 "needs one to quote a sale", system=SYSTEM)
        invoice = next((a for a in addresses if a["invoice"]), addresses[0])
        delivery = next((a for a in addresses if a["delivery"]), addresses[0])
        values = sale.model_dump(exclude={"lines", "expected", "currency_code"})
        values.update(invoice_address=invoice["id"], shipment_address=delivery["id"], lines=[
            ("create", [_line(line) for line in sale.lines])])
        (sale_id,) = await self.client.create("sale.sale", [values])
        return int(sale_id)

    # -- invoices and payments (read by the feeds) ---------------------------------------------
    async def changed_invoices(self, since: datetime | None) -> list[TrytonInvoice]:
        """Posted and paid customer invoices changed since `since`, payment lines included."""
        domain: list[Any] = [("type", "=", "out"), ("state", "in", ["posted", "paid"])]
        if since is not None:
            domain.append(["OR", ("write_date", ">=", since), ("create_date", ">=", since),
                           ("payment_lines.write_date", ">=", since),
                           ("payment_lines.create_date", ">=", since)])
        ids = await self.client.search("account.invoice", domain, order=[("id", "ASC")])
        return await self.read_invoices(ids)

    async def overdue_invoices(self, today: date) -> list[TrytonInvoice]:
        """Posted invoices with an unpaid line due before today: overdue needs no change in
        the ERP to happen, so no change feed sees it."""
        # lines_to_pay cannot be searched; the move's lines can (a posted invoice is unpaid)
        ids = await self.client.search("account.invoice", [
            ("type", "=", "out"), ("state", "=", "posted"),
            ("move.lines.maturity_date", "<", today)], order=[("id", "ASC")])
        return await self.read_invoices(ids)

    async def read_invoices(self, ids: Sequence[int]) -> list[TrytonInvoice]:
        if not ids:
            return []
        c = self.client
        ids = list(ids)
        invoices, lines, taxes, sales = await asyncio.gather(
            c.read("account.invoice", ids, [
                "number", "state", "party", "currency", "invoice_date", "untaxed_amount",
                "tax_amount", "total_amount", "amount_to_pay", "payment_lines",
                "lines_to_pay", "write_date", "create_date"]),
            c.search_read("account.invoice.line", [("invoice", "in", ids), ("type", "=", "line")],
                          ["invoice", "product", "description", "quantity", "unit",
                           "unit_price", "amount", "taxes"], order=[("sequence", "ASC"),
                                                                    ("id", "ASC")]),
            c.search_read("account.invoice.tax", [("invoice", "in", ids)],
                          ["invoice", "base", "amount", "tax"]),
            c.search_read("sale.sale", [("invoices", "in", ids)], ["reference", "invoices"]))
        move_line_ids = sorted({i for inv in invoices
                                for i in [*inv["payment_lines"], *inv["lines_to_pay"]]})
        product_ids = sorted({ln["product"] for ln in lines if ln["product"]})
        unit_ids = sorted({ln["unit"] for ln in lines if ln["unit"]})
        move_lines, products, units, identifiers, currencies = await asyncio.gather(
            c.read("account.move.line", move_line_ids, [
                "date", "debit", "credit", "amount_second_currency", "second_currency",
                "maturity_date", "reconciliation", "journal.rec_name", "description",
                "write_date",
                "create_date"]),
            c.read("product.product", product_ids, ["code"]),
            c.read("product.uom", unit_ids, ["symbol"]),
            party_identifiers(c, {inv["party"] for inv in invoices}),
            self._currency_codes())
        await self._known_tax_rates({t for ln in lines for t in ln["taxes"]}
                                    | {t["tax"] for t in taxes if t["tax"]})
        by_id = {row["id"]: row for row in move_lines}
        product_codes = {p["id"]: p["code"] for p in products}
        unit_symbols = {u["id"]: u["symbol"] for u in units}
        reference = {i: s["reference"] for s in sales for i in s["invoices"]}
        result = []
        for inv in invoices:
            currency = currencies[inv["currency"]]
            payments = [_payment_line(by_id[i], inv["currency"]) for i in inv["payment_lines"]]
            # due = the earliest instalment still open (an instalment paid on time is not due)
            open_lines = [by_id[i] for i in inv["lines_to_pay"]
                          if by_id[i]["reconciliation"] is None] or [
                              by_id[i] for i in inv["lines_to_pay"]]
            maturities = [line["maturity_date"] for line in open_lines if line["maturity_date"]]
            stamps = [change_stamp(inv)] + [change_stamp(by_id[i]) for i in inv["payment_lines"]]
            result.append(TrytonInvoice(
                id=inv["id"], number=inv["number"], state=inv["state"], party=inv["party"],
                party_identifier=identifiers.get(inv["party"]), currency_code=currency,
                invoice_date=inv["invoice_date"], due_date=min(maturities, default=None),
                order_reference=reference.get(inv["id"]),
                lines=[TrytonInvoiceLine(
                    product_code=product_codes.get(ln["product"]),
                    description=ln["description"], quantity=Decimal(str(ln["quantity"])),
                    unit=unit_symbols.get(ln["unit"], "unit"), unit_price=ln["unit_price"],
                    amount=ln["amount"],
                    tax_rates=[r for t in ln["taxes"] if (r := self._tax_rates.get(t))])
                    for ln in lines if ln["invoice"] == inv["id"]],
                taxes=[TrytonTax(rate=self._tax_rates.get(t["tax"]), base=t["base"],
                                 amount=t["amount"]) for t in taxes if t["invoice"] == inv["id"]],
                untaxed_amount=inv["untaxed_amount"], tax_amount=inv["tax_amount"],
                total_amount=inv["total_amount"], amount_to_pay=inv["amount_to_pay"],
                payments=payments, changed_at=max(stamps)))
        return result

    async def _currency_codes(self) -> dict[int, str]:
        if not self._currencies:
            await self._read_reference()
        return {v: k for k, v in self._currencies.items()}

    async def _known_tax_rates(self, tax_ids: set[int]) -> None:
        missing = sorted(tax_ids - set(self._tax_rates))
        if missing:
            for row in await self.client.read("account.tax", missing, ["rate"]):
                self._tax_rates[row["id"]] = row["rate"]


@dataclass(frozen=True)
class _SaleRead:
    row: dict[str, Any]
    lines: list[PlacedLine]
    figures: SaleFigures


def _line(line: SaleLineValues) -> dict[str, Any]:
    values: dict[str, Any] = {
        "type": "line", "product": line.product,
        "quantity": float(line.quantity),  # a Float field in Tryton
        "unit": line.unit, "unit_price": line.unit_price, "description": line.description,
        "taxes": [("add", line.taxes)]}
    if line.base_price is not None:
        values["base_price"] = line.base_price
    return values


def _percent(rate: Decimal | None) -> Decimal | None:
    """A Tryton tax rate (a fraction, 0.19) in percent (19)."""
    return None if rate is None else (rate * 100).normalize()


def _address(address: AddressValues, countries: dict[str, int]) -> dict[str, Any]:
    return {"street": address.street, "postal_code": address.postal_code, "city": address.city,
            "country": countries[address.country_code] if address.country_code else None,
            "party_name": address.party_name, "invoice": address.invoice,
            "delivery": address.delivery}


async def party_identifiers(client: TrytonClient, parties: Iterable[int]) -> dict[int, str]:
    """party id -> the hub's identifier code (crmhub:<customer id>), for parties that have one."""
    rows = await client.search_read(
        "party.identifier", [("party", "in", sorted(parties)),
                             ("code", "like", IDENTIFIER_PREFIX + "%")], ["party", "code"])
    return {row["party"]: row["code"] for row in rows}


def change_stamp(row: dict[str, Any]) -> datetime:
    """A record's newest change on the server's clock (write_date is empty until a write)."""
    stamp = row.get("write_date") or row["create_date"]
    assert isinstance(stamp, datetime)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _payment_line(row: dict[str, Any], invoice_currency: int) -> TrytonPaymentLine:
    """A receivable line paying an out invoice is a credit; in the invoice's currency."""
    if row["second_currency"] == invoice_currency and row["amount_second_currency"] is not None:
        amount = -row["amount_second_currency"]
    else:
        amount = row["credit"] - row["debit"]
    journal = row.get("journal.") or {}
    return TrytonPaymentLine(id=row["id"], date=row["date"], amount=amount,
                             journal=journal.get("rec_name"),
                             reference=row["description"] or None)
