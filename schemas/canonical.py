"""Canonical models: the hub's lingua franca between the CRM, the ERP, the SCM and the OA system.

Conventions every model follows:
- Money, quantities and percentages are `Decimal`, never float. In JSON they are strings in
  plain decimal notation ("1234.50"). JSON input may also give an integer (exact), but never a
  JSON float: a float has already lost precision by the time we see it, so it is rejected with
  a message saying to send a string. Mappings convert a system's floats explicitly
  (`Decimal(str(value))`) where they know the precision is safe.
- Currencies are ISO 4217 alpha-3 codes from `CURRENCIES`; amounts are rounded per currency
  (`minor_units`), by the rounding rule of the system that owns them (`TaxRule`: the hub's
  own is ROUND_HALF_UP, Tryton's ROUND_HALF_EVEN; docs/money.md).
- Times are aware datetimes normalised to UTC; calendar days are `date`.
- Ids are the hub's canonical ids (non-blank strings); external ids live in the xref table.
- Unknown fields are rejected (`extra="forbid"`): a typo in a mapping fails loudly.

Orders and invoices carry their totals and are checked against their lines: line net =
round(quantity * unit_price * (1 - discount/100)); tax is computed per tax-rate group and
rounded per group (the usual ERP way) or per line, half up or half to even, on the rounded
line nets or the exact ones (`TaxRule`: a document from a system is right when its figures
follow one of these rules); total = net + tax. `Order.build` / `Invoice.build` compute all of
that for callers, and `order_totals` gives the figures on their own, by a given rule.

An order line may leave its tax rate open (None: the CRM names none, the ERP's product tax
applies); such an order has no total_tax and no total until the ERP has set them
(order.accepted carries the ERP's figures).
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


def round_money(amount: Decimal, currency: str, rounding: str = ROUND_HALF_UP) -> Decimal:
    """Round to the currency's minor unit, half up unless told (10.005 EUR -> 10.01, 12.5 JPY
    -> 13; with ROUND_HALF_EVEN 10.005 -> 10.00, as Tryton rounds)."""
    exponent = Decimal(1).scaleb(-minor_units(currency))
    with localcontext(prec=60):  # quantize fails past the context precision; be generous
        return amount.quantize(exponent, rounding=rounding)


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
UnitPrice = Annotated[ExactDecimal, Field(ge=0, decimal_places=8)]
"""Unit prices may be finer than the currency's minor unit (3-decimal prices are common; an
ERP keeps a discounted one with up to 6 decimals, Tryton's price_decimal up to 8)."""
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
    tax_rate: Percent | None = Decimal(0)
    net_amount: NonNegativeMoney


class OrderLine(_Line):
    """One line of a sales order.

    tax_rate None: the source names no rate; the ERP's product tax applies (order.won from a
    CRM, whose deal lines carry no tax).
    """


class InvoiceLine(_Line):
    """One line of a customer invoice."""

    tax_rate: Percent = Decimal(0)


class TaxSubtotal(CanonicalModel):
    """Tax of one rate group: base = sum of the group's line nets, amount = round(base * rate)."""

    rate: Percent
    base: NonNegativeMoney
    amount: NonNegativeMoney


class Totals(NamedTuple):
    """A document's figures computed from its lines (see order_totals). Without a tax rate on
    every line, tax_subtotals is empty and total_tax and total are None."""

    line_nets: list[Decimal]
    tax_subtotals: list[TaxSubtotal]
    total_net: Decimal
    total_tax: Decimal | None
    total: Decimal | None


class TaxRule(NamedTuple):
    """How a system computes a document's money from its lines.

    rounding: every rounded figure (line nets, tax), ROUND_HALF_UP or ROUND_HALF_EVEN.
    per_line: tax rounded per line and summed per rate; else once per rate (the document).
    exact_base: tax computed on the exact line amounts (quantity * price, unrounded), as
    Tryton does; else on the rounded line nets.
    """

    rounding: str = ROUND_HALF_UP
    per_line: bool = False
    exact_base: bool = False


#: The hub's own rule, for documents it computes itself (Order.build, Invoice.build).
HUB_RULE = TaxRule()
#: Tryton's: half to even, tax on the exact line amounts, per document (its default
#: account configuration) or per line (tax_rounding "line").
TRYTON_DOCUMENT = TaxRule(ROUND_HALF_EVEN, per_line=False, exact_base=True)
TRYTON_LINE = TaxRule(ROUND_HALF_EVEN, per_line=True, exact_base=True)
#: Every rule a system's figures may follow: validation accepts a document computed by any.
RULES = tuple(TaxRule(mode, per_line, exact)
              for mode in (ROUND_HALF_UP, ROUND_HALF_EVEN)
              for per_line in (False, True) for exact in (False, True))


def line_net_amount(
    quantity: Decimal, unit_price: Decimal, discount_percent: Decimal, currency: str,
    rounding: str = ROUND_HALF_UP,
) -> Decimal:
    """round(quantity * unit_price * (1 - discount/100)) to the currency's minor unit."""
    with localcontext(prec=60):  # exact product; the only rounding is the final one
        gross = quantity * unit_price * (100 - discount_percent) / 100
    return round_money(gross, currency, rounding)


def order_totals(lines: Iterable[_Line], currency: str, rule: TaxRule = HUB_RULE) -> Totals:
    """Net per line, tax per rate (by `rule`), and the document totals.

    Computed from quantity, price and discount; the lines' own net_amount is not used.
    """
    line_nets: list[Decimal] = []
    base_by_rate: dict[Decimal, Decimal] = {}
    tax_by_rate: dict[Decimal, Decimal] = {}
    exact_by_rate: dict[Decimal, Decimal] = {}
    untaxed = False
    with localcontext(prec=60):
        for line in lines:
            exact = line.quantity * line.unit_price * (100 - line.discount_percent) / 100
            net = round_money(exact, currency, rule.rounding)
            line_nets.append(net)
            if line.tax_rate is None:
                untaxed = True
                continue
            rate = line.tax_rate
            base_by_rate[rate] = base_by_rate.get(rate, Decimal(0)) + net
            taxed = exact if rule.exact_base else net
            exact_by_rate[rate] = exact_by_rate.get(rate, Decimal(0)) + taxed
            if rule.per_line:
                tax_by_rate[rate] = tax_by_rate.get(rate, Decimal(0)) + round_money(
                    taxed * rate / 100, currency, rule.rounding)
    total_net = sum(line_nets, Decimal(0))
    if untaxed:
        return Totals(line_nets, [], total_net, None, None)
    subtotals = [
        TaxSubtotal(rate=rate, base=base, amount=tax_by_rate[rate] if rule.per_line else
                    round_money(exact_by_rate[rate] * rate / 100, currency, rule.rounding))
        for rate, base in sorted(base_by_rate.items())
    ]
    total_tax = sum((s.amount for s in subtotals), Decimal(0))
    return Totals(line_nets, subtotals, total_net, total_tax, total_net + total_tax)


_LineT = TypeVar("_LineT", bound=_Line)


def _priced_lines(
    line_type: type[_LineT], lines: Sequence[Mapping[str, Any] | _Line], currency: str,
    rule: TaxRule = HUB_RULE,
) -> list[_LineT]:
    """Lines with net_amount computed; line_no defaults to the position (1-based)."""
    priced: list[_LineT] = []
    for position, line in enumerate(lines, start=1):
        values = dict(line.model_dump() if isinstance(line, _Line) else line)
        values.setdefault("line_no", position)
        # Validate every other field first; the net amount needs validated Decimals.
        draft = line_type.model_validate({**values, "net_amount": 0})
        net = line_net_amount(draft.quantity, draft.unit_price, draft.discount_percent, currency,
                              rule.rounding)
        priced.append(draft.model_copy(update={"net_amount": net}))
    return priced


class _Subtotal(NamedTuple):
    """An expected tax subtotal, as validation computes it (no model: this is the hot path):
    the base the lines give, and the tax amount each rule in RULES gives (in that order)."""

    rate: Decimal
    base: Decimal
    amounts: tuple[Decimal, ...]


def _totals_problems(
    lines: Sequence[_Line], currency: str, total_net: Decimal, total_tax: Decimal | None,
    total: Decimal | None,
) -> tuple[list[str], list[_Subtotal]]:
    """What disagrees between a document's lines and its totals, as readable sentences, and
    the tax subtotals the lines imply (one amount per rule of RULES).

    Rounded figures may follow any rule of RULES (half up or half to even, per rate or per
    line, on rounded or exact line amounts): a document from a system is right when it is
    computed by one rule throughout. Sums are exact. Every document from every system
    passes through here, so it computes each line once, in one decimal context.
    """
    problems: list[str] = []
    numbers = [line.line_no for line in lines]
    if len(set(numbers)) != len(numbers):
        duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
        problems.append(f"line_no must be unique; repeated: {duplicates}")
    unit = Decimal(1).scaleb(-minor_units(currency))
    modes = (ROUND_HALF_UP, ROUND_HALF_EVEN)
    # rate -> [sum of given nets, sum of exact amounts, then the per-line tax sums of RULES'
    # per-line rules in order: (up, nets) (up, exact) (even, nets) (even, exact)]
    sums: dict[Decimal, list[Decimal]] = {}
    given_net = Decimal(0)
    open_rate = False
    with localcontext(prec=60):  # exact products; the only rounding is the explicit one
        for line in lines:
            exact = line.quantity * line.unit_price * (100 - line.discount_percent) / 100
            given = line.net_amount
            given_net += given
            if given != exact.quantize(unit, ROUND_HALF_UP) and \
                    given != exact.quantize(unit, ROUND_HALF_EVEN):
                problems.append(
                    f"line {line.line_no} net_amount is {given}, expected "
                    f"{exact.quantize(unit, ROUND_HALF_UP)} (quantity * unit_price less "
                    f"discount, rounded to {currency})"
                )
            rate = line.tax_rate
            if rate is None:
                open_rate = True
                continue
            row = sums.setdefault(rate, [Decimal(0)] * 6)
            row[0] += given
            row[1] += exact
            for n, (mode, base) in enumerate((m, b) for m in modes for b in (given, exact)):
                row[2 + n] += (base * rate / 100).quantize(unit, mode)
        expected = []
        for rate, row in sorted(sums.items()):
            amounts = []
            for mode, per_line, exact_base in RULES:
                if per_line:
                    amounts.append(row[2 + 2 * modes.index(mode) + exact_base])
                else:
                    amounts.append((row[1 if exact_base else 0] * rate / 100).quantize(unit, mode))
            expected.append(_Subtotal(rate, row[0], tuple(amounts)))
    if total_net != given_net:
        problems.append(f"total_net is {total_net}, expected {given_net}")
    if open_rate:
        if total_tax is not None or total is not None:
            problems.append("total_tax and total must be empty while a line leaves its tax "
                            "rate to the ERP")
        return problems, expected
    if total_tax is None or total is None:
        problems.append("total_tax and total are required when every line has a tax rate")
        return problems, expected
    by_rule = [sum((s.amounts[n] for s in expected), Decimal(0)) for n in range(len(RULES))]
    if total_tax not in by_rule:
        problems.append(f"total_tax is {total_tax}, expected {by_rule[0]}")
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
    """A sales order (a won deal). The CRM owns the lines and their nets; the ERP owns
    `number` and the tax (order.accepted carries the ERP's figures; docs/money.md)."""

    id: Id
    number: str | None = None
    customer_id: Id
    currency: Currency
    ordered_on: date
    lines: list[OrderLine] = Field(min_length=1)
    total_net: NonNegativeMoney
    total_tax: NonNegativeMoney | None
    """None while a line leaves its tax rate to the ERP."""
    total: NonNegativeMoney | None
    """None while a line leaves its tax rate to the ERP."""
    fallback_tax_rate: Percent | None = None
    """For lines without a tax rate whose product carries no customer tax in the ERP: the
    source's explicit fallback (BOTTLECRM_DEFAULT_TAX_RATE); None: such lines are untaxed."""
    owner: Email | None = None
    deal_id: str | None = None
    notes: str | None = None
    refusal: str | None = None
    """Why the ERP refused the order (order.refused), naming both amounts."""
    updated_at: UtcDatetime | None = None

    @property
    def total_or_net(self) -> Decimal:
        """The total, or the net total while the tax is the ERP's to set."""
        return self.total if self.total is not None else self.total_net

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
        """An order with line nets and totals computed (by `rule=`, default HUB_RULE). Lines
        are dicts without net_amount.

        Order.build(id="o-1", customer_id="c-1", currency="EUR", ordered_on=date.today(),
                    lines=[{"sku": "A", "quantity": "2", "unit_price": "9.99"}])
        """
        rule = fields.pop("rule", HUB_RULE)
        priced = _priced_lines(OrderLine, lines, currency, rule)
        totals = order_totals(priced, currency, rule)
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
            if got.amount not in want.amounts:
                problems.append(
                    f"tax subtotal {rate} amount is {got.amount}, expected {want.amounts[0]}"
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
        rule = fields.pop("rule", HUB_RULE)
        priced = _priced_lines(InvoiceLine, lines, currency, rule)
        totals = order_totals(priced, currency, rule)
        assert totals.total is not None  # invoice lines always carry their tax rate
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
