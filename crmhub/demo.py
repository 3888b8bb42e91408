"""The demo scenario: the main job on embedded defaults, driven end to end and narrated.

Embedded Tansu broker, SQLite state under var/demo/, the flows in flows.FLOWS. A won order
arrives before its customer (parked, then replayed), a second order is delivered twice (one
drop), and one message is garbage (dead-lettered, nothing stalls).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from crmhub import topics
from crmhub.hub import Hub
from crmhub.settings import HubSettings
from schemas.canonical import Address, Customer, Order
from schemas.envelope import Event, Source

DEMO_DIR = Path("var/demo")


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)
    say: Callable[[str], None] = print

    def __call__(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:6.2f}s] {text}"
        self.lines.append(line)
        self.say(line)


def demo_settings(directory: Path = DEMO_DIR, **overrides: Any) -> HubSettings:
    values: dict[str, Any] = dict(
        bootstrap_servers="", database_url=f"sqlite:///{directory / 'state.sqlite'}",
        sweep_interval_seconds=0.2, http_port=0,
    )
    values.update(overrides)
    return HubSettings(**values)


def prepare(directory: Path = DEMO_DIR) -> Path:
    """A fresh demo folder: the embedded broker is fresh too, so old state would only confuse."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory / "filedrop"


def _customer(customer_id: str, name: str, city: str, country: str, currency: str) -> Event[Any]:
    data = Customer(id=customer_id, name=name, currency=currency,
                    addresses=[Address(kind="billing", city=city, country=country)])
    return Event[Customer](type="customer.upserted", entity="customer", entity_id=customer_id,
                           source=Source(system="crm", id=customer_id), origin="crm", data=data)


def _order(order_id: str, customer_id: str, currency: str, lines: list[dict[str, str]]
           ) -> Event[Any]:
    data = Order.build(id=order_id, customer_id=customer_id, currency=currency,
                       ordered_on=date.today(), lines=lines, deal_id=f"deal-{order_id}")
    return Event[Order](type="order.won", entity="order", entity_id=order_id,
                        source=Source(system="crm", id=order_id), origin="crm", data=data)


async def run_scenario(hub: Hub, say: Timeline, timeout: float = 30.0) -> bool:
    """Publish the scenario and wait until every expectation holds; True when they all do."""
    store = hub.store
    star = _customer("C-1", "上海星河贸易有限公司", "上海", "CN", "CNY")
    acme = _customer("C-2", "ACME Maschinenbau GmbH", "Stuttgart", "DE", "EUR")
    o1 = _order("O-1001", "C-1", "CNY", [
        {"sku": "PUMP-200", "quantity": "2", "unit_price": "1250.50", "tax_rate": "13"},
        {"sku": "SEAL-KIT", "quantity": "10", "unit_price": "3.125", "tax_rate": "13"}])
    o2 = _order("O-1002", "C-2", "EUR", [
        {"sku": "VALVE-9", "quantity": "4", "unit_price": "99.90", "discount_percent": "5",
         "tax_rate": "19"},
        {"sku": "MANUAL", "quantity": "1", "unit_price": "12.00", "tax_rate": "7"}])

    await hub.publish_event(o1, "demo")
    say(f"order {o1.entity_id} won in the CRM ({o1.data.total} {o1.data.currency}) "
        f"before its customer {star.entity_id} is known downstream")
    await _until(lambda: store.list_parked(), timeout)
    say(f"order {o1.entity_id} parked: {store.list_parked()[0].reason}")

    await hub.publish_event(star, "demo")
    await hub.publish_event(acme, "demo")
    say(f"customers {star.data.name} and {acme.data.name} published")
    await _until(lambda: store.external_id("customer", "C-2", "filedrop"), timeout)
    await hub.publish_event(o2, "demo")
    await hub.publish_event(o2, "demo")
    say(f"order {o2.entity_id} published twice (a redelivery)")
    await hub.publish_raw(topics.ORDER, b"{not json", b"garbage", [])
    say("a garbage message lands on the order topic")

    def finished() -> bool:
        return (store.external_id("order", "O-1001", "filedrop") is not None
                and store.external_id("order", "O-1002", "filedrop") is not None
                and not store.list_parked() and len(store.list_dead_letters()) == 1
                and hub.metrics.duplicates.labels("order_to_filedrop")._value.get() >= 1)

    if not await _until(finished, timeout):
        say(f"scenario did not finish within {timeout}s: {store.summary()}")
        return False
    for entity, entity_id in (("customer", "C-1"), ("customer", "C-2"), ("order", "O-1001"),
                              ("order", "O-1002")):
        say(f"{entity} {entity_id} -> filedrop {store.external_id(entity, entity_id, 'filedrop')}")
    [letter] = store.list_dead_letters()
    say(f"dead letter #{letter.id}: {letter.error_message} "
        f"({letter.topic}[{letter.partition}]@{letter.offset}); the partition kept flowing")
    say(f"duplicates skipped by the ledger: "
        f"{int(hub.metrics.duplicates.labels('order_to_filedrop')._value.get())}")
    return True


async def _until(check: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return True
        await asyncio.sleep(0.1)
    return False
