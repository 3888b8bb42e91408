"""Canonical models: the hub's lingua franca between the CRM, the ERP, the SCM and the OA system.

Conventions every model follows:
- Money, quantities and percentages are `Decimal`, never float. In JSON they are strings in
  plain decimal notation ("1234.50"). JSON input may also give an integer (exact), but never a
  JSON float: a float has already lost precision by the time we see it, so it is rejected with
  a message saying to send a string. Mappings convert a system's floats explicitly
  (`Decimal(str(value))`) where they know the precision is safe.
- Currencies are ISO 4217 alpha-3 codes from `CURRENCIES`; amounts are rounded per currency
  (`minor_units`) with ROUND_HALF_UP.
- Times are aware datetimes normalised to UTC; calendar days are `date`.
- Ids are the hub's canonical ids (non-blank strings); external ids live in the xref table.
- Unknown fields are rejected (`extra="forbid"`): a typo in a mapping fails loudly.

Orders and invoices carry their totals and are checked against their lines: line net =
round(quantity * unit_price * (1 - discount/100)); tax is computed per tax-rate group and
rounded per group (the usual ERP way); total = net + tax. `Order.build` / `Invoice.build`
compute all of that for callers, and `order_totals` gives the figures on their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from typing import Annotated, Any, Literal, NamedTuple, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

# --- currencies ----------------------------------------------------------------------------

# ISO 4217 list one, currencies in circulation (2025), including ANG and its successor XCG
# while both are legal tender. Deliberately left out: fund codes (BOV, CHE, CHW, CLF, COU,
# MXV, USN, UYI, UYW), precious metals (XAU, XAG, XPD, XPT), bond-market units, XDR, XSU,
# XUA, and the testing / no-currency codes XTS and XXX: nothing the hub syncs is priced in them.
CURRENCIES: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP
    MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR
    RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER
    ZAR ZMW ZWG
    """.split()
)

# Currencies whose minor unit is not 2 decimals (ISO 4217 "minor unit" column).
_ZERO_DECIMAL = frozenset("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split())
_THREE_DECIMAL = frozenset("BHD IQD JOD KWD LYD OMR TND".split())


def minor_units(currency: str) -> int:
    """Decimals of the currency's minor unit: JPY 0, EUR 2, KWD 3. Unknown code -> ValueError."""
    _check_currency(currency)
    if currency in _ZERO_DECIMAL:
        return 0
    if currency in _THREE_DECIMAL:
        return 3
    return 2


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half up to the currency's minor unit (10.005 EUR -> 10.01, 12.5 JPY -> 13)."""
    exponent = Decimal(1).scaleb(-minor_units(currency))
    with localcontext(prec=60):  # quantize fails past the context precision; be generous
        return amount.quantize(exponent, rounding=ROUND_HALF_UP)


def _check_currency(code: str) -> str:
    if code not in CURRENCIES:
        raise ValueError(f"unknown ISO 4217 currency code {code!r}")
    return code


# --- field types ---------------------------------------------------------------------------

_DECIMAL_TEXT = re.compile(r"^-?\d+(\.\d+)?$")
_DECIMAL_PATTERN = _DECIMAL_TEXT.pattern


def _exact_decimal_input(value: object) -> object:
    """Refuse inputs that may already have lost precision (floats) or are not plain numbers."""
    if type(value) is str:  # the JSON case, checked first: it runs for every amount decoded
        if _DECIMAL_TEXT.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not a plain decimal number such as '12.50'")
        return value
    if isinstance(value, bool | float):
        raise ValueError(
            f"{value!r} is a {type(value).__name__}; send decimals as strings such as '12.50'"
        )
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise ValueError(f"{value!r} is not a plain decimal number such as '12.50'")
    return value


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")  # plain notation, trailing zeros kept: "1234.50", never "1E+3"


ExactDecimal = Annotated[
    Decimal,
    BeforeValidator(_exact_decimal_input),
    PlainSerializer(_decimal_text, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": _DECIMAL_PATTERN}, mode="serialization"),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "pattern": _DECIMAL_PATTERN}, {"type": "integer"}]},
        mode="validation",
    ),
]
"""A Decimal that is a string in JSON. The base of Money, Quantity and Percent."""

Money = ExactDecimal
"""An amount in the currency of the record that holds it."""
NonNegativeMoney = Annotated[ExactDecimal, Field(ge=0)]
PositiveMoney = Annotated[ExactDecimal, Field(gt=0)]
UnitPrice = Annotated[ExactDecimal, Field(ge=0, decimal_places=4)]
"""Unit prices may be finer than the currency's minor unit (3-decimal prices are common)."""
Quantity = Annotated[ExactDecimal, Field(gt=0)]
Percent = Annotated[ExactDecimal, Field(ge=0, le=100)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$"),
               AfterValidator(_not_blank)]
"""A canonical id (the Kafka key of the entity's events)."""
Text = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]
Currency = Annotated[
    str,
    AfterValidator(_check_currency),
    WithJsonSchema({"type": "string", "enum": sorted(CURRENCIES)}),
]
"""An ISO 4217 alpha-3 code from CURRENCIES, upper case."""
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
"""ISO 3166-1 alpha-2, upper case."""
Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)]
"""Checked loosely: something@domain.tld; the mail system is the real judge."""
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


class CanonicalModel(BaseModel):
    """Base of every canonical model: unknown fields are an error."""

    # Attribute docstrings become field descriptions in the exported JSON Schema.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


# --- parties -------------------------------------------------------------------------------


class Address(CanonicalModel):
    kind: Literal["billing", "shipping", "other"]
    street: str | None = None
    street2: str | None = None
    city: str | None = None
    postal_code: str | None = None
    region: str | None = None
    country: CountryCode


class Contact(CanonicalModel):
    name: Text
    email: Email | None = None
    phone: str | None = None
    role: str | None = None


class Customer(CanonicalModel):
    """A customer account. The CRM owns its commercial fields, the ERP its credit hold."""

    id: Id
    name: Text
    legal_name: str | None = None
    tax_id: str | None = None
    currency: Currency
    addresses: list[Address] = Field(default_factory=list)
    contacts: list[Contact] = Field(default_factory=list)
    credit_hold: bool = False
    owner: Email | None = None
    """The sales owner's e-mail."""
    updated_at: UtcDatetime | None = None


# --- lines and totals ----------------------------------------------------------------------


class _Line(CanonicalModel):
    """Fields shared by order and invoice lines. net_amount is checked by the document."""

    line_no: int = Field(ge=1)
    sku: Text
    description: str | None = None
    quantity: Quantity
    unit: Text = "unit"
    unit_price: UnitPrice
    discount_percent: Percent = Decimal(0)
    tax_rate: Percent = Decimal(0)
    net_amount: NonNegativeMoney


class OrderLine(_Line):
    """One line of a sales order."""


class InvoiceLine(_Line):
    """One line of a customer invoice."""


class TaxSubtotal(CanonicalModel):
    """Tax of one rate group: base = sum of the group's line nets, amount = round(base * rate)."""

    rate: Percent
    base: NonNegativeMoney
    amount: NonNegativeMoney


class Totals(NamedTuple):
    """A document's figures computed from its lines (see order_totals)."""

    line_nets: list[Decimal]
    tax_subtotals: list[TaxSubtotal]
    total_net: Decimal
    total_tax: Decimal
    total: Decimal


def line_net_amount(
    quantity: Decimal, unit_price: Decimal, discount_percent: Decimal, currency: str
) -> Decimal:
    """round_half_up(quantity * unit_price * (1 - discount/100)) to the currency's minor unit."""
    with localcontext(prec=60):  # exact product; the only rounding is the final one
        gross = quantity * unit_price * (100 - discount_percent) / 100
    return round_money(gross, currency)


def order_totals(lines: Iterable[_Line], currency: str) -> Totals:
    """Net per line, tax per rate group (rounded per group), and the document totals.

    Computed from quantity, price and discount; the lines' own net_amount is not used.
    """
    line_nets: list[Decimal] = []
    base_by_rate: dict[Decimal, Decimal] = {}
    for line in lines:
        net = line_net_amount(line.quantity, line.unit_price, line.discount_percent, currency)
        line_nets.append(net)
        base_by_rate[line.tax_rate] = base_by_rate.get(line.tax_rate, Decimal(0)) + net
    subtotals = [
        TaxSubtotal(rate=rate, base=base, amount=round_money(base * rate / 100, currency))
        for rate, base in sorted(base_by_rate.items())
    ]
    total_net = sum(line_nets, Decimal(0))
    total_tax = sum((s.amount for s in subtotals), Decimal(0))
    return Totals(line_nets, subtotals, total_net, total_tax, total_net + total_tax)


_LineT = TypeVar("_LineT", bound=_Line)


def _priced_lines(
    line_type: type[_LineT], lines: Sequence[Mapping[str, Any] | _Line], currency: str
) -> list[_LineT]:
    """Lines with net_amount computed; line_no defaults to the position (1-based)."""
    priced: list[_LineT] = []
    for position, line in enumerate(lines, start=1):
        values = dict(line.model_dump() if isinstance(line, _Line) else line)
        values.setdefault("line_no", position)
        # Validate every other field first; the net amount needs validated Decimals.
        draft = line_type.model_validate({**values, "net_amount": 0})
        net = line_net_amount(draft.quantity, draft.unit_price, draft.discount_percent, currency)
        priced.append(draft.model_copy(update={"net_amount": net}))
    return priced


def _rounding_of(given: Decimal, exact: Decimal, currency: str) -> bool:
    """True when `given` is `exact` rounded to the currency half up or half to even.

    The hub rounds half up; ERPs such as Tryton round half to even. A document from a system
    is right when its figures are either, and the hub never re-rounds a system's figures.
    """
    return given in (round_money(exact, currency), _round_half_even(exact, currency))


def _round_half_even(amount: Decimal, currency: str) -> Decimal:
    with localcontext(prec=60):
        return amount.quantize(Decimal(1).scaleb(-minor_units(currency)),
                               rounding=ROUND_HALF_EVEN)


class _Subtotal(NamedTuple):
    """An expected tax subtotal, as validation computes it (no model: this is the hot path)."""

    rate: Decimal
    base: Decimal
    amount: Decimal


def _totals_problems(
    lines: Sequence[_Line], currency: str, total_net: Decimal, total_tax: Decimal, total: Decimal
) -> tuple[list[str], list[_Subtotal]]:
    """What disagrees between a document's lines and its totals, as readable sentences, and
    the tax subtotals the lines imply (computed as order_totals does).

    Rounded figures may be rounded half up or half to even (see _rounding_of); sums are exact.
    Every document from every system passes through here, so it computes each line once, in
    one decimal context.
    """
    problems: list[str] = []
    numbers = [line.line_no for line in lines]
    if len(set(numbers)) != len(numbers):
        duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
        problems.append(f"line_no must be unique; repeated: {duplicates}")
    unit = Decimal(1).scaleb(-minor_units(currency))
    computed_base: dict[Decimal, Decimal] = {}  # rate -> sum of the nets the hub computes
    given_base: dict[Decimal, Decimal] = {}  # rate -> sum of the nets the document gives
    with localcontext(prec=60):  # exact products; the only rounding is the explicit one
        for line in lines:
            exact = line.quantity * line.unit_price * (100 - line.discount_percent) / 100
            net = exact.quantize(unit, rounding=ROUND_HALF_UP)
            given = line.net_amount
            if given != net and given != exact.quantize(unit, rounding=ROUND_HALF_EVEN):
                problems.append(
                    f"line {line.line_no} net_amount is {given}, expected {net} "
                    f"(quantity * unit_price less discount, rounded to {currency})"
                )
            rate = line.tax_rate
            computed_base[rate] = computed_base.get(rate, Decimal(0)) + net
            given_base[rate] = given_base.get(rate, Decimal(0)) + given
        expected = [_Subtotal(rate, base, (base * rate / 100).quantize(unit, ROUND_HALF_UP))
                    for rate, base in sorted(computed_base.items())]
        expected_tax = sum((subtotal.amount for subtotal in expected), Decimal(0))
        half_even_tax = sum(((base * rate / 100).quantize(unit, ROUND_HALF_EVEN)
                             for rate, base in given_base.items()), Decimal(0))
        given_net = sum(given_base.values(), Decimal(0))
    if total_net != given_net:
        problems.append(f"total_net is {total_net}, expected {given_net}")
    if total_tax not in (expected_tax, half_even_tax):
        problems.append(f"total_tax is {total_tax}, expected {expected_tax}")
    if total != total_net + total_tax:
        problems.append(f"total is {total}, expected {total_net + total_tax}")
    return problems, expected


def _check_minor_units(amount: Decimal, currency: str, field: str) -> None:
    if round_money(amount, currency) != amount:
        raise ValueError(
            f"{field} {amount} has more decimals than {currency} allows ({minor_units(currency)})"
        )


# --- documents -----------------------------------------------------------------------------


class Order(CanonicalModel):
    """A sales order (a won deal). The ERP sets `number`; the CRM owns the rest."""

    id: Id
    number: str | None = None
    customer_id: Id
    currency: Currency
    ordered_on: date
    lines: list[OrderLine] = Field(min_length=1)
    total_net: NonNegativeMoney
    total_tax: NonNegativeMoney
    total: NonNegativeMoney
    owner: Email | None = None
    deal_id: str | None = None
    notes: str | None = None
    updated_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _totals_match_lines(self) -> Self:
        problems, _ = _totals_problems(
            self.lines, self.currency, self.total_net, self.total_tax, self.total
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def build(
        cls, *, currency: str, lines: Sequence[Mapping[str, Any] | _Line], **fields: Any
    ) -> Self:
        """An order with line nets and totals computed. Lines are dicts without net_amount.

        Order.build(id="o-1", customer_id="c-1", currency="EUR", ordered_on=date.today(),
                    lines=[{"sku": "A", "quantity": "2", "unit_price": "9.99"}])
        """
        priced = _priced_lines(OrderLine, lines, currency)
        totals = order_totals(priced, currency)
        return cls(
            currency=currency,
            lines=priced,
            total_net=totals.total_net,
            total_tax=totals.total_tax,
            total=totals.total,
            **fields,
        )


PaymentState = Literal["not_paid", "partially_paid", "paid", "overdue"]


def payment_state_for(amount_residual: Decimal, total: Decimal) -> PaymentState:
    """The state an invoice's residual implies (never "overdue": that needs today's date)."""
    if amount_residual == 0:
        return "paid"
    if amount_residual == total:
        return "not_paid"
    return "partially_paid"


class Invoice(CanonicalModel):
    """A posted customer invoice. The ERP owns it, including its payment state.

    payment_state and amount_residual agree: paid <=> residual 0; not_paid => residual = total;
    partially_paid => 0 < residual < total; overdue => residual > 0.
    """

    id: Id
    number: Text
    order_id: Id | None = None
    customer_id: Id
    currency: Currency
    issued_on: date
    due_date: date
    lines: list[InvoiceLine] = Field(min_length=1)
    tax_subtotals: list[TaxSubtotal] = Field(default_factory=list)
    total_net: NonNegativeMoney
    total_tax: NonNegativeMoney
    total: NonNegativeMoney
    amount_residual: NonNegativeMoney
    payment_state: PaymentState
    updated_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems, expected = _totals_problems(
            self.lines, self.currency, self.total_net, self.total_tax, self.total
        )
        problems += self._tax_subtotal_problems(expected)
        if self.due_date < self.issued_on:
            problems.append(f"due_date {self.due_date} is before issued_on {self.issued_on}")
        problems += self._payment_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _tax_subtotal_problems(self, expected: list[_Subtotal]) -> list[str]:
        given = {s.rate: s for s in self.tax_subtotals}
        if len(given) != len(self.tax_subtotals):
            return ["tax_subtotals must have one entry per rate"]
        wanted = {s.rate: s for s in expected}
        problems = [
            f"tax subtotal at rate {rate} has no lines at that rate"
            for rate in sorted(given.keys() - wanted.keys())
        ]
        for rate, want in wanted.items():
            got = given.get(rate)
            if got is None:
                if rate != 0:  # untaxed lines often get no tax row in an ERP: allowed
                    problems.append(f"tax subtotal missing for rate {rate} (base {want.base})")
                continue
            base = sum((line.net_amount for line in self.lines if line.tax_rate == rate),
                       Decimal(0))
            if got.base != base:
                problems.append(f"tax subtotal {rate} base is {got.base}, expected {base}")
            with localcontext(prec=60):
                exact = got.base * rate / 100
            if got.amount != want.amount and not _rounding_of(got.amount, exact, self.currency):
                problems.append(
                    f"tax subtotal {rate} amount is {got.amount}, expected {want.amount}"
                )
        return problems

    def _payment_problems(self) -> list[str]:
        residual, total, state = self.amount_residual, self.total, self.payment_state
        try:
            _check_minor_units(residual, self.currency, "amount_residual")
        except ValueError as exc:
            return [str(exc)]
        if residual > total:
            return [f"amount_residual {residual} exceeds total {total}"]
        if (state == "paid") != (residual == 0):
            return [f"payment_state {state!r} does not fit amount_residual {residual}"]
        if state == "partially_paid" and not 0 < residual < total:
            return [f"payment_state 'partially_paid' needs 0 < amount_residual < {total}"]
        if state == "not_paid" and residual != total:
            return [f"payment_state 'not_paid' needs amount_residual == total ({total})"]
        return []

    @classmethod
    def build(
        cls, *, currency: str, lines: Sequence[Mapping[str, Any] | _Line], **fields: Any
    ) -> Self:
        """An invoice with nets, tax subtotals and totals computed.

        amount_residual defaults to the total and payment_state to what the residual implies.
        """
        priced = _priced_lines(InvoiceLine, lines, currency)
        totals = order_totals(priced, currency)
        fields.setdefault("amount_residual", totals.total)
        residual = Decimal(fields["amount_residual"])
        fields.setdefault("payment_state", payment_state_for(residual, totals.total))
        return cls(
            currency=currency,
            lines=priced,
            tax_subtotals=totals.tax_subtotals,
            total_net=totals.total_net,
            total_tax=totals.total_tax,
            total=totals.total,
            **fields,
        )


class PaymentAllocation(CanonicalModel):
    """The part of a payment applied to one invoice."""

    invoice_id: Id
    amount: PositiveMoney


class Payment(CanonicalModel):
    """Money received from a customer; allocations may leave part of it unapplied."""

    id: Id
    customer_id: Id
    currency: Currency
    amount: PositiveMoney
    received_on: date
    method: str | None = None
    reference: str | None = None
    allocations: list[PaymentAllocation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _allocations_fit(self) -> Self:
        _check_minor_units(self.amount, self.currency, "amount")
        for allocation in self.allocations:
            _check_minor_units(allocation.amount, self.currency, "allocation amount")
        allocated = sum((a.amount for a in self.allocations), Decimal(0))
        if allocated > self.amount:
            raise ValueError(
                f"allocations total {allocated} exceeds the payment amount {self.amount}"
            )
        return self


class ShipmentLine(CanonicalModel):
    sku: Text
    quantity: Quantity


class Shipment(CanonicalModel):
    """A delivery of (part of) an order. The SCM owns it."""

    id: Id
    order_id: Id
    customer_id: Id | None = None
    state: Literal["dispatched", "delivered", "cancelled"]
    carrier: str | None = None
    tracking_ref: str | None = None
    dispatched_at: UtcDatetime | None = None
    delivered_at: UtcDatetime | None = None
    lines: list[ShipmentLine] = Field(default_factory=list)

    @model_validator(mode="after")
    def _delivered_after_dispatch(self) -> Self:
        if self.dispatched_at and self.delivered_at and self.delivered_at < self.dispatched_at:
            raise ValueError(
                f"delivered_at {self.delivered_at} is before dispatched_at {self.dispatched_at}"
            )
        return self


class Approval(CanonicalModel):
    """An approval request for an order in the OA system, and its decision."""

    id: Id
    order_id: Id
    state: Literal["pending", "approved", "rejected", "expired"]
    reasons: list[str] = Field(default_factory=list)
    """Why approval is needed (e.g. "total above 50000 EUR")."""
    approver: str | None = None
    comment: str | None = None
    requested_at: UtcDatetime
    decided_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _decision_time(self) -> Self:
        if self.state in ("approved", "rejected") and self.decided_at is None:
            raise ValueError(f"decided_at is required when state is {self.state!r}")
        if self.state == "pending" and self.decided_at is not None:
            raise ValueError("decided_at must be empty while the approval is pending")
        if self.decided_at is not None and self.decided_at < self.requested_at:
            raise ValueError(
                f"decided_at {self.decided_at} is before requested_at {self.requested_at}"
            )
        return self


class Task(CanonicalModel):
    """A follow-up task for a person, kept in the OA system's task list (a CalDAV VTODO)."""

    id: Id
    """The VTODO's UID: deterministic from what caused the task (e.g. the overdue invoice)."""
    title: Text
    description: str | None = None
    assignee: Email | None = None
    due_on: date | None = None
    state: Literal["open", "completed", "cancelled"] = "open"
    invoice_id: Id | None = None
    order_id: Id | None = None
    completed_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _completion_time(self) -> Self:
        if self.state != "completed" and self.completed_at is not None:
            raise ValueError("completed_at is only set when the task is completed")
        return self
