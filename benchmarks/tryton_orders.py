"""Won orders into a real Tryton (PostgreSQL-backed sandbox): through the hub vs direct.

direct: the connector's own calls (catalogue + place_sale: search, addresses, create, quote,
        confirm, read) from a plain asyncio program, `workers` orders at a time
hub:    the same orders as order.won events through the order_to_erp flow (ledger, xref,
        order.accepted out) with workers_per_flow = `workers`

Both run in one process against the same Tryton, one after the other, with their own
customers already in the ERP, so the ratio is what the hub adds. Also reported: JSON-RPC
calls per order (login excluded) for each path.

Run: python -m benchmarks.tryton_orders --orders 60 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from connectors.tryton.erp import TrytonErp
from connectors.tryton.settings import TrytonSettings
from crmhub.dev.sandbox.tryton import TrytonServer
from crmhub.embedded import EmbeddedBroker
from crmhub.hub import Hub
from crmhub.settings import HubSettings
from flows import customer_to_erp, order_to_erp
from mappings.tryton import customer as customer_mapping
from mappings.tryton import order as order_mapping
from schemas.canonical import Address, Customer, Order
from schemas.envelope import Event, Source

LINES = [{"sku": "WIDGET", "quantity": "3", "unit_price": "12.50", "tax_rate": "19"},
         {"sku": "SEAL-KIT", "quantity": "2", "unit_price": "39.90", "discount_percent": "10",
          "tax_rate": "19"},
         {"sku": "MANUAL", "quantity": "1", "unit_price": "19.00", "tax_rate": "7"}]


def customer(customer_id: str) -> Customer:
    return Customer(id=customer_id, name=f"Bench customer {customer_id}", currency="EUR",
                    addresses=[Address(kind="billing", city="Berlin", country="DE")])


def order(order_id: str, customer_id: str) -> Order:
    return Order.build(id=order_id, customer_id=customer_id, currency="EUR",
                       ordered_on=date.today(), lines=LINES)


class Binds:
    """The xref lookup for the direct path: customer id -> party id, filled up front."""

    def __init__(self, parties: dict[str, str]) -> None:
        self.parties = parties

    def get(self, entity: str, canonical_id: str, system: str) -> str | None:
        return self.parties.get(canonical_id)

    def require(self, entity: str, canonical_id: str, system: str) -> str:
        return self.parties[canonical_id]


async def direct(settings: TrytonSettings, orders: list[Order], workers: int,
                 parties: dict[str, str]) -> tuple[float, float]:
    erp = TrytonErp(settings)
    await erp.client.search("res.user", [], limit=1)  # log in before the clock starts
    slots = asyncio.Semaphore(workers)
    xref = Binds(parties)

    async def place(won: Order) -> None:
        async with slots:
            catalogue = await erp.catalogue(order_mapping.products_wanted(won), won.currency)
            await erp.place_sale(order_mapping.to_sale(won, xref, catalogue))

    calls = erp.calls
    started = time.perf_counter()
    await asyncio.gather(*(place(o) for o in orders))
    elapsed = time.perf_counter() - started
    per_order = (erp.calls - calls) / len(orders)
    await erp.aclose()
    return len(orders) / elapsed, per_order


async def through_hub(settings: TrytonSettings, orders: list[Order], workers: int,
                      customers: list[str], state_url: str) -> tuple[float, float]:
    erps: list[TrytonErp] = []

    def sink() -> TrytonErp:
        erps.append(TrytonErp(settings))
        return erps[-1]

    flows = [replace(customer_to_erp.flow, sink=sink), replace(order_to_erp.flow, sink=sink)]
    broker = EmbeddedBroker()
    await broker.start()
    try:
        hub = Hub(HubSettings(bootstrap_servers=broker.bootstrap_servers,
                              database_url=state_url, workers_per_flow=workers,
                              batch_timeout_ms=20), flows, feeds=[])
        await hub.start()
        try:
            for customer_id in customers:
                await hub.publish_event(_event("customer.upserted", customer(customer_id)),
                                        "bench")
            for customer_id in customers:
                while hub.store.external_id("customer", customer_id, "tryton") is None:
                    if hub.store.list_dead_letters():
                        raise RuntimeError(f"dead letters: {hub.store.list_dead_letters()}")
                    await asyncio.sleep(0.05)
            events = [_event("order.won", o) for o in orders]
            calls = sum(e.calls for e in erps)
            started = time.perf_counter()
            await asyncio.gather(*(hub.publish_event(e, "bench") for e in events))
            while hub.metrics.succeeded.labels("order_to_erp")._value.get() < len(orders):
                if hub.store.list_dead_letters():
                    raise RuntimeError(f"dead letters: {hub.store.list_dead_letters()}")
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
            per_order = (sum(e.calls for e in erps) - calls) / len(orders)
        finally:
            await hub.stop()
    finally:
        await broker.stop()
    return len(orders) / elapsed, per_order


def _event(type: str, data: Customer | Order) -> Event[Any]:
    entity = type.split(".")[0]
    return Event[Any](type=type, entity=entity, entity_id=data.id,
                      source=Source(system="bench", id=data.id), origin="bench", data=data)


async def main(n: int, workers: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    started = time.perf_counter()
    with TrytonServer(backend="postgresql") as server:
        ready = time.perf_counter() - started
        settings = server.settings()
        # the direct path's customers are created the same way the hub creates them
        erp = TrytonErp(settings)
        direct_customers = [f"D{run}-{i}" for i in range(workers)]
        parties = {c: str(await erp.upsert_party(customer_mapping.to_party(customer(c))))
                   for c in direct_customers}
        await erp.aclose()
        direct_orders = [order(f"OD{run}-{i}", direct_customers[i % workers]) for i in range(n)]
        hub_customers = [f"H{run}-{i}" for i in range(workers)]
        hub_orders = [order(f"OH{run}-{i}", hub_customers[i % workers]) for i in range(n)]
        direct_rate, direct_calls = await direct(settings, direct_orders, workers, parties)
        with tempfile.TemporaryDirectory() as tmp:
            hub_rate, hub_calls = await through_hub(
                settings, hub_orders, workers, hub_customers,
                f"sqlite:///{Path(tmp) / 'state.sqlite'}")
    return {"case": "tryton_orders", "orders": n, "workers": workers,
            "tryton_backend": "postgresql", "tryton_start_s": round(ready, 2),
            "direct_orders_per_s": round(direct_rate, 2),
            "hub_orders_per_s": round(hub_rate, 2),
            "tryton_hub_vs_direct": round(hub_rate / direct_rate, 3),
            "rpc_calls_per_order_direct": round(direct_calls, 2),
            "rpc_calls_per_order_hub": round(hub_calls, 2)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=60)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.orders, args.workers))))
