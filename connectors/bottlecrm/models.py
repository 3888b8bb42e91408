"""BottleCRM's own payload shapes (django-crm 1.35 REST API and webhooks). Extra ignored.

Decimals come as JSON strings ("12.50") and stay exact; blank strings mean "not set".
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CrmModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _blank_to_none(value: Any) -> Any:
    return None if value == "" else value


class Webhook(CrmModel):
    """One webhook delivery as BottleCRM sends it, plus the delivery id from its header.

    `id` is the event's id (the same for every endpoint it fans out to), `delivery` the
    delivery's (the same for every retry of it), `data` the record as the event describes it.
    """

    id: str = Field(min_length=1, max_length=64)
    event: str = Field(min_length=1, max_length=128)
    delivery: str = Field(min_length=1, max_length=64)
    created_at: datetime | None = None
    org_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def record_id(self) -> str:
        """The CRM record the event is about (the payload id for a ping)."""
        record = self.data.get("id")
        return str(record) if record else self.id

    @property
    def updated_at(self) -> datetime | None:
        stamp = self.data.get("updated_at")
        try:
            return datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
        except ValueError:
            return None


class Ref(CrmModel):
    """A related record as BottleCRM nests it: {id, name}."""

    id: str
    name: str | None = None


class Account(CrmModel):
    id: str
    name: str
    email: str | None = None
    phone: str | None = None
    website: str | None = None
    industry: str | None = None
    currency: str | None = None
    address_line: str | None = None
    city: str | None = None
    state: str | None = None
    postcode: str | None = None
    country: str | None = None
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    _blank = field_validator("email", "phone", "website", "industry", "currency",
                             "address_line", "city", "state", "postcode", "country",
                             mode="before")(_blank_to_none)


class Contact(CrmModel):
    id: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    title: str | None = None
    account: Ref | str | None = None

    _blank = field_validator("first_name", "last_name", "email", "phone", "title",
                             mode="before")(_blank_to_none)

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p) or self.id


class Product(CrmModel):
    id: str
    name: str | None = None
    sku: str | None = None
    price: Decimal | None = None

    _blank = field_validator("sku", "name", mode="before")(_blank_to_none)


class LineItem(CrmModel):
    """An opportunity line item: a product (or free text) with quantity and price."""

    id: str
    product: Product | None = None
    name: str | None = None
    description: str | None = None
    quantity: Decimal
    unit_price: Decimal
    discount_type: str | None = None
    discount_value: Decimal = Decimal(0)
    discount_amount: Decimal = Decimal(0)
    subtotal: Decimal | None = None
    total: Decimal | None = None
    order: int = 0

    _blank = field_validator("name", "description", "discount_type", mode="before")(
        _blank_to_none)


class Opportunity(CrmModel):
    """A deal. `stage` is the stage code (CLOSED_WON ...), `stage_kind` open/won/lost."""

    id: str
    name: str
    account: Ref | None = None
    pipeline: str | Ref | None = None
    stage: str | None = None
    stage_kind: str | None = None
    currency: str | None = None
    amount: Decimal | None = None
    probability: int | None = None
    closed_on: date | None = None
    description: str | None = None
    contacts: list[Ref | dict[str, Any]] = Field(default_factory=list)
    line_items: list[LineItem] = Field(default_factory=list)
    assigned_to: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    _blank = field_validator("stage", "stage_kind", "currency", mode="before")(_blank_to_none)


class Comment(CrmModel):
    id: str
    comment: str = ""


class Payment(CrmModel):
    id: str
    amount: Decimal
    payment_date: date | None = None
    payment_method: str | None = None
    reference_number: str | None = None
    notes: str | None = None


class Invoice(CrmModel):
    id: str
    invoice_number: str | None = None
    invoice_title: str | None = None
    status: str
    total_amount: Decimal | None = None
    amount_paid: Decimal | None = None
    amount_due: Decimal | None = None
    currency: str | None = None
    issue_date: date | None = None
    due_date: date | None = None


class InvoiceDraft(CrmModel):
    """What invoice_to_crm asks BottleCRM to create (POST /api/invoices/)."""

    model_config = ConfigDict(extra="forbid")

    reference: str = Field(description="the canonical invoice id, carried in the title")
    invoice_title: str
    account_id: str
    opportunity_id: str | None = None
    currency: str
    issue_date: date
    due_date: date
    notes: str = ""
    line_items: list[dict[str, Any]]
    total: Decimal = Field(description="the ERP's total: what BottleCRM must compute")


class PaymentDraft(CrmModel):
    """A payment to record on a CRM invoice; `reference_number` makes it idempotent."""

    model_config = ConfigDict(extra="forbid")

    amount: Decimal
    payment_date: date
    payment_method: str = "BANK_TRANSFER"
    reference_number: str
    notes: str = ""


class DealNote(CrmModel):
    """A note (comment) the hub puts on a deal; `marker` makes it idempotent (a comment that
    already carries it is not posted again). `stage` also moves the deal (with `closed_on`,
    which BottleCRM requires for a closed stage)."""

    model_config = ConfigDict(extra="forbid")

    deal_id: str
    marker: str
    text: str
    stage: str | None = None
    closed_on: date | None = None

    @property
    def comment(self) -> str:
        return f"{self.text} {self.marker}"
