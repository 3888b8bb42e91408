"""Canonical models: exact money, currency rules, totals checked against lines, state rules."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from crmhub.errors import DecodeError
from schemas.canonical import (
    CURRENCIES,
    TRYTON_LINE,
    Address,
    Approval,
    Contact,
    Customer,
    Invoice,
    Order,
    Payment,
    PaymentAllocation,
    Shipment,
    ShipmentLine,
    TaxSubtotal,
    line_net_amount,
    minor_units,
    order_totals,
    round_money,
)
from schemas.envelope import Event, Source, decode_event

D = Decimal


def won_order(**overrides: Any) -> Order:
    """An order with a 3-decimal price, a discount and two tax rates."""
    fields: dict[str, Any] = {
        "id": "order-1001",
        "customer_id": "cust-42",
        "currency": "EUR",
        "ordered_on": date(2024, 5, 2),
        "owner": "li.na@example.com",
        "deal_id": "deal-77",
        "lines": [
            {"sku": "BOLT-M8", "quantity": "1200", "unit_price": "0.125", "tax_rate": "19"},
            {
                "sku": "PUMP-200",
                "quantity": "3",
                "unit_price": "19.99",
                "discount_percent": "15",
                "tax_rate": "19",
            },
            {"sku": "MANUAL", "quantity": "1", "unit_price": "12.50", "tax_rate": "7"},
        ],
    }
    fields.update(overrides)
    return Order.build(**fields)


def order_payload(**changes: Any) -> dict[str, Any]:
    """The JSON body of won_order(), with top-level fields changed."""
    body: dict[str, Any] = json.loads(won_order().model_dump_json())
    body.update(changes)
    return body


def floats_in(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in floats_in(v)]
    if isinstance(value, list):
        return [f for v in value for f in floats_in(v)]
    return []


# --- money ---------------------------------------------------------------------------------


def test_order_round_trips_through_json_with_money_as_strings() -> None:
    order = won_order()
    text = order.model_dump_json()
    body = json.loads(text)

    assert body["total_net"] == "213.47"
    assert body["lines"][0]["unit_price"] == "0.125"
    assert body["lines"][1]["discount_percent"] == "15"
    again = Order.model_validate_json(text)
    assert again == order
    assert isinstance(again.total, Decimal)
    assert again.model_dump_json() == text


def test_serialised_order_contains_no_json_floats() -> None:
    body = json.loads(won_order().model_dump_json())

    assert floats_in(body) == []
    assert all(isinstance(line["net_amount"], str) for line in body["lines"])


def test_json_float_amount_is_rejected_with_advice_to_send_a_string() -> None:
    body = order_payload(total_net=210.47)

    with pytest.raises(ValidationError) as caught:
        Order.model_validate_json(json.dumps(body))

    assert "total_net" in str(caught.value)
    assert "as strings" in str(caught.value)


def test_python_float_is_rejected_too() -> None:
    with pytest.raises(ValidationError, match="float"):
        PaymentAllocation(invoice_id="inv-1", amount=0.1)


def test_json_integer_amounts_are_exact() -> None:
    order = Order.build(
        id="o-int",
        customer_id="c-1",
        currency="JPY",
        ordered_on=date(2024, 1, 5),
        lines=[{"sku": "TEA", "quantity": 3, "unit_price": 1500, "tax_rate": 10}],
    )
    body = json.loads(order.model_dump_json())
    body["total"] = 4950  # a JSON integer, not a string

    again = Order.model_validate_json(json.dumps(body))

    assert again.total == D("4950")
    assert again.total_tax == D("450")


def test_exponent_notation_strings_are_rejected() -> None:
    with pytest.raises(ValidationError, match="plain decimal"):
        PaymentAllocation(invoice_id="inv-1", amount="1E+2")


def test_three_decimal_unit_price_is_rounded_half_up_on_the_line() -> None:
    order = won_order(lines=[{"sku": "NUT", "quantity": "5", "unit_price": "0.125"}])

    # 5 * 0.125 = 0.625 -> 0.63 with ROUND_HALF_UP (banker's rounding would give 0.62)
    assert order.lines[0].net_amount == D("0.63")
    assert order.total == D("0.63")


def test_unit_price_with_more_than_eight_decimals_is_rejected() -> None:
    assert won_order(lines=[{"sku": "NUT", "quantity": "8", "unit_price": "0.12345678"}]
                     ).lines[0].net_amount == D("0.99")
    with pytest.raises(ValidationError, match="8 decimal places"):
        won_order(lines=[{"sku": "NUT", "quantity": "1", "unit_price": "0.123456789"}])


def test_discount_is_applied_before_rounding() -> None:
    order = won_order(
        lines=[{"sku": "PUMP", "quantity": "3", "unit_price": "19.99", "discount_percent": "15"}]
    )

    # 3 * 19.99 * 0.85 = 50.9745
    assert order.lines[0].net_amount == D("50.97")


def test_tax_is_computed_per_rate_group_not_per_line() -> None:
    lines = [
        {"sku": "A", "quantity": "1", "unit_price": "0.03", "tax_rate": "19"},
        {"sku": "B", "quantity": "1", "unit_price": "0.03", "tax_rate": "19"},
        {"sku": "C", "quantity": "1", "unit_price": "10.00", "tax_rate": "7"},
    ]
    order = won_order(lines=lines)

    # 19% group: 0.06 * 0.19 = 0.0114 -> 0.01 (per line it would be 0.01 + 0.01)
    # 7% group: 10.00 * 0.07 = 0.70
    assert order.total_tax == D("0.71")
    assert order.total == D("10.77")
    # a system that rounds tax per line (Tryton's tax_rounding "line") says 0.72: its rule
    per_line_tax = order_payload(lines=json.loads(order.model_dump_json())["lines"])
    per_line_tax.update(total_net="10.06", total_tax="0.72", total="10.78")
    assert Order.model_validate(per_line_tax).total_tax == D("0.72")
    assert order_totals(order.lines, "EUR", TRYTON_LINE).total_tax == D("0.72")
    # no rule gives 0.73
    per_line_tax.update(total_tax="0.73", total="10.79")
    with pytest.raises(ValidationError, match="total_tax is 0.73, expected 0.71"):
        Order.model_validate(per_line_tax)


def test_order_totals_lists_one_subtotal_per_rate() -> None:
    order = won_order()

    totals = order_totals(order.lines, "EUR")

    assert totals.tax_subtotals == [
        TaxSubtotal(rate=D("7"), base=D("12.50"), amount=D("0.88")),
        TaxSubtotal(rate=D("19"), base=D("200.97"), amount=D("38.18")),
    ]
    assert totals.total == totals.total_net + totals.total_tax == order.total


@pytest.mark.parametrize(
    ("currency", "units"),
    [
        ("EUR", 2),
        ("USD", 2),
        ("CNY", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("VND", 0),
        ("CLP", 0),
        ("ISK", 0),
        ("UGX", 0),
        ("BHD", 3),
        ("KWD", 3),
        ("OMR", 3),
        ("JOD", 3),
        ("TND", 3),
        ("LYD", 3),
        ("IQD", 3),
    ],
)
def test_minor_units_per_currency(currency: str, units: int) -> None:
    assert minor_units(currency) == units


def test_round_money_rounds_half_up_to_the_minor_unit() -> None:
    assert round_money(D("0.125"), "EUR") == D("0.13")
    assert round_money(D("2.5"), "JPY") == D("3")
    assert round_money(D("1.0005"), "KWD") == D("1.001")
    assert line_net_amount(D("2"), D("0.0025"), D("0"), "EUR") == D("0.01")


def test_currency_list_is_the_active_iso_list() -> None:
    assert 150 <= len(CURRENCIES) <= 165
    assert {"EUR", "USD", "CNY", "JPY", "GBP", "CHF", "KWD", "VES", "SLE", "ZWG"} <= CURRENCIES
    # withdrawn codes, and codes nothing is priced in
    assert not {"DEM", "FRF", "HRK", "VEF", "BYR", "XXX", "XTS", "XAU"} & CURRENCIES
    assert all(len(code) == 3 and code.isupper() for code in CURRENCIES)


@pytest.mark.parametrize("code", ["XYZ", "eur", "EURO", "DEM"])
def test_unknown_currency_is_rejected_naming_the_code(code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Customer(id="c-1", name="Acme", currency=code)

    assert repr(code) in str(caught.value)
    assert caught.value.errors()[0]["loc"] == ("currency",)


def test_unknown_currency_in_an_order_json_is_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown ISO 4217 currency code 'ABC'"):
        Order.model_validate_json(json.dumps(order_payload(currency="ABC")))
    with pytest.raises(ValueError, match="'ABC'"):
        minor_units("ABC")


# --- order totals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "wrong", "expected"),
    [
        ("total_net", "213.48", "213.47"),
        ("total_tax", "39.00", "39.06"),
        ("total", "252.52", "252.53"),
    ],
)
def test_totals_mismatch_is_rejected_naming_the_field(
    field: str, wrong: str, expected: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(order_payload(**{field: wrong}))

    assert f"{field} is {wrong}, expected {expected}" in str(caught.value)


def test_line_net_amount_mismatch_names_the_line() -> None:
    body = order_payload()
    body["lines"][1]["net_amount"] = "59.97"  # the discount was forgotten

    with pytest.raises(ValidationError, match="line 2 net_amount is 59.97, expected 50.97"):
        Order.model_validate(body)


def test_amounts_finer_than_the_currency_are_a_mismatch() -> None:
    body = order_payload()
    body["lines"][2]["net_amount"] = "12.501"

    with pytest.raises(ValidationError, match="line 3 net_amount is 12.501, expected 12.50"):
        Order.model_validate(body)


def test_line_numbers_must_be_unique() -> None:
    body = order_payload()
    body["lines"][2]["line_no"] = 1

    with pytest.raises(ValidationError, match=r"repeated: \[1\]"):
        Order.model_validate(body)


def test_order_needs_at_least_one_line() -> None:
    with pytest.raises(ValidationError) as caught:
        Order.model_validate(order_payload(lines=[], total_net="0", total_tax="0", total="0"))

    assert caught.value.errors()[0]["loc"] == ("lines",)


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        Order.model_validate(order_payload(colour="blue"))


def test_build_keeps_given_line_numbers_and_fields() -> None:
    order = won_order(
        lines=[{"line_no": 10, "sku": "A", "quantity": "1", "unit_price": "1", "unit": "kg"}],
        number="SO-2024-0042",
        notes="急单 / rush order",
    )

    assert order.lines[0].line_no == 10
    assert order.lines[0].unit == "kg"
    assert order.number == "SO-2024-0042"
    assert order.notes == "急单 / rush order"


# --- parties -------------------------------------------------------------------------------


def test_chinese_customer_name_and_address_are_preserved() -> None:
    customer = Customer(
        id="cust-cn-1",
        name="上海明远贸易有限公司",
        legal_name="上海明远贸易有限公司",
        tax_id="91310115MA1K3XXXXX",
        currency="CNY",
        addresses=[
            Address(
                kind="billing",
                street="浦东新区世纪大道100号",
                street2="环球金融中心 28 楼",
                city="上海",
                postal_code="200120",
                region="上海市",
                country="CN",
            )
        ],
        contacts=[Contact(name="王小明", email="wang.xm@example.cn", role="采购经理")],
    )

    text = customer.model_dump_json()
    again = Customer.model_validate_json(text)

    assert again == customer
    assert again.name == "上海明远贸易有限公司"
    assert again.addresses[0].street == "浦东新区世纪大道100号"
    assert "浦东新区世纪大道100号" in text  # written as UTF-8, not \u escapes
    assert again.contacts[0].name == "王小明"


@pytest.mark.parametrize("country", ["cn", "CHN", "C", "1A"])
def test_country_must_be_two_upper_case_letters(country: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Address(kind="shipping", country=country)

    assert caught.value.errors()[0]["loc"] == ("country",)


def test_contact_email_is_checked_loosely() -> None:
    assert (
        Contact(name="Ana", email="ana+sales@mail.example.pt").email == "ana+sales@mail.example.pt"
    )
    with pytest.raises(ValidationError):
        Contact(name="Ana", email="ana at example")
    with pytest.raises(ValidationError):
        Customer(id="c-1", name="Acme", currency="EUR", owner="not-an-email")


def test_blank_ids_and_names_are_rejected() -> None:
    with pytest.raises(ValidationError, match="blank"):
        Customer(id="   ", name="Acme", currency="EUR")
    with pytest.raises(ValidationError):
        Customer(id="c-1", name="", currency="EUR")


def test_times_are_normalised_to_utc_and_naive_times_rejected() -> None:
    shanghai = timezone(timedelta(hours=8))
    customer = Customer(
        id="c-1",
        name="Acme",
        currency="EUR",
        updated_at=datetime(2024, 5, 2, 18, 0, tzinfo=shanghai),
    )

    assert customer.updated_at == datetime(2024, 5, 2, 10, 0, tzinfo=UTC)
    assert customer.updated_at is not None and customer.updated_at.utcoffset() == timedelta(0)
    assert '"updated_at":"2024-05-02T10:00:00Z"' in customer.model_dump_json()
    with pytest.raises(ValidationError, match="timezone"):
        Customer(id="c-1", name="Acme", currency="EUR", updated_at=datetime(2024, 5, 2, 18, 0))


# --- invoices ------------------------------------------------------------------------------


def posted_invoice(**overrides: Any) -> Invoice:
    fields: dict[str, Any] = {
        "id": "inv-5001",
        "number": "INV/2024/0042",
        "order_id": "order-1001",
        "customer_id": "cust-42",
        "currency": "EUR",
        "issued_on": date(2024, 5, 10),
        "due_date": date(2024, 6, 9),
        "lines": [
            {"sku": "BOLT-M8", "quantity": "1200", "unit_price": "0.125", "tax_rate": "19"},
            {"sku": "MANUAL", "quantity": "1", "unit_price": "12.50", "tax_rate": "7"},
        ],
    }
    fields.update(overrides)
    return Invoice.build(**fields)


def invoice_payload(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(posted_invoice().model_dump_json())
    body.update(changes)
    return body


def test_built_invoice_is_unpaid_with_residual_equal_to_total() -> None:
    invoice = posted_invoice()

    assert invoice.total == D("191.88")  # nets 150.00 + 12.50, tax 28.50 + 0.88
    assert invoice.amount_residual == invoice.total
    assert invoice.payment_state == "not_paid"
    assert [s.rate for s in invoice.tax_subtotals] == [D("7"), D("19")]
    assert Invoice.model_validate_json(invoice.model_dump_json()) == invoice


@pytest.mark.parametrize(
    ("residual", "state"),
    [
        ("0", "paid"),
        ("100.00", "partially_paid"),
        ("191.88", "not_paid"),
        ("50", "overdue"),
        ("191.88", "overdue"),
    ],
)
def test_consistent_payment_states_are_accepted(residual: str, state: str) -> None:
    invoice = Invoice.model_validate(invoice_payload(amount_residual=residual, payment_state=state))

    assert invoice.payment_state == state
    assert invoice.amount_residual == D(residual)


@pytest.mark.parametrize(
    ("residual", "state", "complaint"),
    [
        ("10.00", "paid", "'paid' does not fit amount_residual 10.00"),
        ("0", "partially_paid", "does not fit amount_residual 0"),
        ("0", "overdue", "does not fit amount_residual 0"),
        ("191.88", "partially_paid", "needs 0 < amount_residual < 191.88"),
        ("100.00", "not_paid", "'not_paid' needs amount_residual == total"),
        ("200.00", "not_paid", "amount_residual 200.00 exceeds total 191.88"),
        ("10.005", "partially_paid", "more decimals than EUR allows"),
    ],
)
def test_inconsistent_payment_state_is_rejected(residual: str, state: str, complaint: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Invoice.model_validate(invoice_payload(amount_residual=residual, payment_state=state))

    assert complaint in str(caught.value)


def test_negative_residual_is_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        Invoice.model_validate(invoice_payload(amount_residual="-1.00"))

    assert caught.value.errors()[0]["loc"] == ("amount_residual",)


def test_build_derives_payment_state_from_residual() -> None:
    assert posted_invoice(amount_residual="0").payment_state == "paid"
    assert posted_invoice(amount_residual="91.88").payment_state == "partially_paid"
    assert posted_invoice(payment_state="overdue").payment_state == "overdue"


def test_invoice_due_date_cannot_precede_issue_date() -> None:
    with pytest.raises(ValidationError, match="due_date 2024-05-01 is before issued_on 2024-05-10"):
        Invoice.model_validate(invoice_payload(due_date="2024-05-01"))


def test_invoice_tax_subtotal_is_checked_against_lines() -> None:
    body = invoice_payload()
    body["tax_subtotals"][1]["amount"] = "28.49"

    with pytest.raises(ValidationError, match="tax subtotal 19 amount is 28.49, expected 28.50"):
        Invoice.model_validate(body)


def test_invoice_missing_tax_subtotal_is_rejected() -> None:
    body = invoice_payload()
    del body["tax_subtotals"][0]

    with pytest.raises(ValidationError, match="tax subtotal missing for rate 7"):
        Invoice.model_validate(body)


def test_invoice_may_omit_the_zero_rate_subtotal() -> None:
    lines = [
        {"sku": "SERVICE", "quantity": "2", "unit_price": "50", "tax_rate": "0"},
        {"sku": "BOOK", "quantity": "1", "unit_price": "20", "tax_rate": "7"},
    ]
    body = json.loads(posted_invoice(lines=lines).model_dump_json())
    assert [s["rate"] for s in body["tax_subtotals"]] == ["0", "7"]
    del body["tax_subtotals"][0]

    invoice = Invoice.model_validate(body)

    assert invoice.total == D("121.40")


# --- payments, shipments, approvals -------------------------------------------------------


def test_payment_allocations_may_not_exceed_the_amount() -> None:
    with pytest.raises(
        ValidationError, match="allocations total 150.00 exceeds the payment amount 100.00"
    ):
        Payment(
            id="pay-1",
            customer_id="cust-42",
            currency="EUR",
            amount=D("100.00"),
            received_on=date(2024, 5, 20),
            allocations=[
                PaymentAllocation(invoice_id="inv-1", amount=D("80.00")),
                PaymentAllocation(invoice_id="inv-2", amount=D("70.00")),
            ],
        )


def test_payment_may_be_partly_unallocated_and_round_trips() -> None:
    payment = Payment(
        id="pay-2",
        customer_id="cust-42",
        currency="EUR",
        amount=D("100.00"),
        received_on=date(2024, 5, 20),
        method="bank_transfer",
        reference="SEPA-123",
        allocations=[PaymentAllocation(invoice_id="inv-1", amount=D("60.00"))],
    )

    body = json.loads(payment.model_dump_json())

    assert body["amount"] == "100.00"
    assert body["allocations"][0]["amount"] == "60.00"
    assert Payment.model_validate(body) == payment


@pytest.mark.parametrize(("currency", "amount"), [("EUR", "10.001"), ("JPY", "10.5")])
def test_payment_amount_must_fit_the_currency(currency: str, amount: str) -> None:
    with pytest.raises(ValidationError, match=f"more decimals than {currency} allows"):
        Payment(
            id="p", customer_id="c", currency=currency, amount=D(amount), received_on=date.today()
        )


def test_payment_amount_must_be_positive() -> None:
    with pytest.raises(ValidationError) as caught:
        Payment(id="p", customer_id="c", currency="EUR", amount=D("0"), received_on=date.today())

    assert caught.value.errors()[0]["loc"] == ("amount",)


def test_shipment_round_trips_and_delivery_cannot_precede_dispatch() -> None:
    dispatched = datetime(2024, 5, 3, 8, 0, tzinfo=UTC)
    shipment = Shipment(
        id="shp-1",
        order_id="order-1001",
        state="delivered",
        carrier="SF Express",
        tracking_ref="SF1234567890",
        dispatched_at=dispatched,
        delivered_at=dispatched + timedelta(days=2),
        lines=[ShipmentLine(sku="BOLT-M8", quantity=D("1200"))],
    )

    assert Shipment.model_validate_json(shipment.model_dump_json()) == shipment
    with pytest.raises(ValidationError, match="delivered_at .* is before dispatched_at"):
        shipment.model_validate(
            {**shipment.model_dump(), "delivered_at": dispatched - timedelta(hours=1)}
        )
    with pytest.raises(ValidationError):
        ShipmentLine(sku="BOLT-M8", quantity=D("0"))


REQUESTED = datetime(2024, 5, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("state", ["approved", "rejected"])
def test_decided_approval_needs_decided_at(state: str) -> None:
    with pytest.raises(ValidationError, match=f"decided_at is required when state is '{state}'"):
        Approval(id="apr-1", order_id="order-1001", state=state, requested_at=REQUESTED)


def test_pending_approval_has_no_decision_time() -> None:
    with pytest.raises(ValidationError, match="pending"):
        Approval(
            id="apr-1",
            order_id="order-1001",
            state="pending",
            requested_at=REQUESTED,
            decided_at=REQUESTED + timedelta(hours=1),
        )


def test_decision_cannot_precede_request() -> None:
    with pytest.raises(ValidationError, match="is before requested_at"):
        Approval(
            id="apr-1",
            order_id="order-1001",
            state="approved",
            requested_at=REQUESTED,
            decided_at=REQUESTED - timedelta(minutes=1),
        )


def test_valid_approvals() -> None:
    approved = Approval(
        id="apr-1",
        order_id="order-1001",
        state="approved",
        approver="zhang.wei@example.com",
        reasons=["total above 50000 EUR", "new customer"],
        comment="同意",
        requested_at=REQUESTED,
        decided_at=REQUESTED + timedelta(hours=3),
    )
    expired = Approval(id="apr-2", order_id="order-1002", state="expired", requested_at=REQUESTED)

    assert Approval.model_validate_json(approved.model_dump_json()) == approved
    assert approved.reasons == ["total above 50000 EUR", "new customer"]
    assert expired.decided_at is None


# --- property: helper-built orders always validate and round-trip exactly -----------------


def _half_up(value: Fraction, decimals: int) -> Fraction:
    """Independent oracle: round a non-negative exact fraction half up."""
    scale = 10**decimals
    return Fraction(math.floor(value * scale + Fraction(1, 2)), scale)


thousandths = st.integers(min_value=1, max_value=10_000_000).map(lambda n: D(n).scaleb(-3))
prices = st.integers(min_value=0, max_value=100_000_000).map(lambda n: D(n).scaleb(-3))
discounts = st.one_of(
    st.just(D(0)), st.integers(min_value=0, max_value=10_000).map(lambda n: D(n).scaleb(-2))
)
rate_pairs = st.sampled_from(
    [(D("19"), D("7")), (D("20"), D("5.5")), (D("13"), D("9")), (D("0"), D("21"))]
)
lines_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "quantity": thousandths,
            "unit_price": prices,
            "discount_percent": discounts,
            "rate_index": st.integers(min_value=0, max_value=1),
        }
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(
    lines=lines_strategy, rates=rate_pairs, currency=st.sampled_from(["EUR", "JPY", "KWD", "CNY"])
)
def test_built_orders_always_validate_and_round_trip_exactly(
    lines: list[dict[str, Any]], rates: tuple[Decimal, Decimal], currency: str
) -> None:
    order_lines = [
        {
            "sku": f"SKU-{n}",
            "quantity": line["quantity"],
            "unit_price": line["unit_price"],
            "discount_percent": line["discount_percent"],
            "tax_rate": rates[line["rate_index"]],
        }
        for n, line in enumerate(lines)
    ]
    order = Order.build(
        id="o-prop",
        customer_id="c-prop",
        currency=currency,
        ordered_on=date(2024, 1, 1),
        lines=order_lines,
    )

    text = order.model_dump_json()
    again = Order.model_validate_json(text)
    assert again == order
    assert again.model_dump_json() == text
    assert floats_in(json.loads(text)) == []

    # The same figures from exact fractions, rounded independently.
    decimals = minor_units(currency)
    nets = [
        _half_up(
            Fraction(line["quantity"])
            * Fraction(line["unit_price"])
            * (1 - Fraction(line["discount_percent"]) / 100),
            decimals,
        )
        for line in order_lines
    ]
    assert [Fraction(line.net_amount) for line in order.lines] == nets
    base_by_rate: dict[Decimal, Fraction] = {}
    for net, line in zip(nets, order_lines, strict=True):
        base_by_rate[line["tax_rate"]] = base_by_rate.get(line["tax_rate"], Fraction(0)) + net
    tax = sum(
        (_half_up(base * Fraction(rate) / 100, decimals) for rate, base in base_by_rate.items()),
        Fraction(0),
    )
    assert Fraction(order.total_net) == sum(nets, Fraction(0))
    assert Fraction(order.total_tax) == tax
    assert order.total == order.total_net + order.total_tax


# --- envelope ------------------------------------------------------------------------------


def won_event(order: Order) -> Event[Order]:
    return Event[Order](
        type="order.won",
        entity="order",
        entity_id=order.id,
        source=Source(system="bottlecrm", id="deal-77"),
        origin="bottlecrm",
        data=order,
    )


def test_order_event_round_trips_through_decode_event() -> None:
    order = won_order()
    event = won_event(order)

    decoded = decode_event(event.to_bytes(), Order)

    assert decoded == event
    assert decoded.data == order
    assert isinstance(decoded.data.lines[0].unit_price, Decimal)
    assert decoded.key == b"order-1001"
    assert json.loads(event.to_bytes())["data"]["total"] == "252.53"


def test_event_with_bad_order_totals_is_a_decode_error_naming_the_problem() -> None:
    body = json.loads(won_event(won_order()).to_bytes())
    body["data"]["total"] = "1.00"

    with pytest.raises(DecodeError, match="total is 1.00, expected 252.53"):
        decode_event(json.dumps(body).encode(), Order)


def test_event_with_float_money_is_a_decode_error() -> None:
    body = json.loads(won_event(won_order()).to_bytes())
    body["data"]["total"] = 252.53

    with pytest.raises(DecodeError, match="data.total"):
        decode_event(json.dumps(body).encode(), Order)


def test_invoice_rounded_half_to_even_by_the_erp_is_accepted() -> None:
    """Tryton rounds 37.50 x 19% = 7.125 to 7.12 (half to even); the hub would say 7.13."""
    built = Invoice.build(id="tryton-invoice-1", number="INV-1", customer_id="C-1",
                          currency="EUR", issued_on=date(2026, 11, 23),
                          due_date=date(2026, 11, 23),
                          lines=[{"sku": "WIDGET", "quantity": "3", "unit_price": "12.50",
                                  "tax_rate": "19"}])
    assert built.total_tax == D("7.13")
    payload = json.loads(built.model_dump_json())
    payload["tax_subtotals"][0]["amount"] = "7.12"
    payload.update(total_tax="7.12", total="44.62", amount_residual="44.62")
    assert Invoice.model_validate(payload).total == D("44.62")
    payload["tax_subtotals"][0]["amount"] = "7.11"
    payload.update(total_tax="7.11", total="44.61", amount_residual="44.61")
    with pytest.raises(ValidationError, match="tax subtotal 19 amount is 7.11, expected 7.13"):
        Invoice.model_validate(payload)
