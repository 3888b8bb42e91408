"""A fake target system and two flows over it, for tests about the step, not about a system."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from crmhub import topics
from crmhub.errors import PermanentError, TransientError
from crmhub.step import Flow, Run
from schemas.canonical import Customer, Order
from schemas.envelope import Event, Source


@dataclass
class Ledgerbook:
    """Records keyed by reference, searched before create -- idempotent like the ERP connector."""

    records: dict[str, tuple[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    transient_failures: int = 0
    down: bool = False
    reject: set[str] = field(default_factory=set)
    delay: float = 0.0
    active: int = 0
    max_active: int = 0

    async def upsert(self, reference: str, payload: Any) -> str:
        self.calls.append(reference)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.down:
                raise TransientError("ledgerbook refused the connection", system="book")
            if self.transient_failures > 0:
                self.transient_failures -= 1
                raise TransientError("ledgerbook answered 503", system="book")
            if reference in self.reject:
                raise PermanentError(f"ledgerbook refused {reference}: quantity must be positive",
                                     system="book")
            if reference not in self.records:
                self.records[reference] = (f"B{len(self.records) + 1}", payload)
                self.created.append(reference)
            return self.records[reference][0]
        finally:
            self.active -= 1


async def on_customer(event: Event[Customer], s: Run, book: Ledgerbook) -> None:
    customer = event.data
    external = await s.call(book.upsert, f"customer:{customer.id}", customer.name)
    s.bind("customer", customer.id, "book", external)


async def on_order(event: Event[Order], s: Run, book: Ledgerbook) -> None:
    order = event.data
    party = s.xref.require("customer", order.customer_id, "book")
    external = await s.call(book.upsert, f"order:{order.id}", (party, order.notes))
    s.bind("order", order.id, "book", external)
    s.emit(s.follow_up("order.accepted", order.model_copy(update={"number": external}),
                       source_id=external))


def customer_flow(book: Ledgerbook) -> Flow[Customer, Ledgerbook]:
    return Flow(name="customer_to_book", topic=topics.CUSTOMER, group="book-customers",
                accepts=frozenset({"customer.upserted"}), model=Customer, handler=on_customer,
                sink=lambda: book, target="book")


def order_flow(book: Ledgerbook) -> Flow[Order, Ledgerbook]:
    return Flow(name="order_to_book", topic=topics.ORDER, group="book-orders",
                accepts=frozenset({"order.won"}), model=Order, handler=on_order,
                sink=lambda: book, target="book")


def customer_event(customer_id: str, name: str = "ACME") -> Event[Customer]:
    return Event[Customer](type="customer.upserted", entity="customer", entity_id=customer_id,
                           source=Source(system="crm", id=customer_id), origin="crm",
                           data=Customer(id=customer_id, name=name, currency="EUR"))


def order_event(order_id: str, customer_id: str, notes: str = "") -> Event[Order]:
    order = Order.build(id=order_id, customer_id=customer_id, currency="EUR",
                        ordered_on=date(2026, 11, 23), notes=notes or None,
                        lines=[{"sku": "WIDGET", "quantity": "2", "unit_price": "9.99",
                                "tax_rate": "19"}])
    return Event[Order](type="order.won", entity="order", entity_id=order_id,
                        source=Source(system="crm", id=order_id), origin="crm", data=order)
