"""The benchmark workload: realistic won orders, the hub flow that handles them, and the
helpers every case shares (producing the input, a paced producer and a latency listener).

One order.won event is ~1.5 KB of JSON: five lines with two tax rates and a discount, notes,
an owner and a deal id. The flow is the hub's core path with a no-op sink: envelope
validation -> the real Tryton order mapping (xref lookup of the customer, catalogue) ->
sink (no-op) -> bind + ledger -> order.accepted out.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
import uuid
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from itertools import count
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connectors.tryton.models import Catalogue, CatalogueProduct, SaleValues
from crmhub import topics
from crmhub.step import Flow, Run
from mappings.tryton import order as order_mapping
from schemas.canonical import Order
from schemas.envelope import Event, Source

INPUT = "bench.orders.in"  # the peak-rate input every case reads (own consumer group each)
CUSTOMERS = 50
SKUS = ["WIDGET", "PUMP-200", "SEAL-KIT", "VALVE-9", "MANUAL"]
CATALOGUE = Catalogue(
    currencies={"EUR": 1},
    products={sku: CatalogueProduct(id=i + 1, uom=1, name=sku.title())
              for i, sku in enumerate(SKUS)},
    taxes={Decimal("19"): 1, Decimal("7"): 2}, payment_term=1)


def customer_id(i: int) -> str:
    return f"C-{i % CUSTOMERS:04d}"


def won_order(i: int, run: str = "") -> Event[Order]:
    lines = [{"sku": sku, "quantity": str(1 + (i + n) % 7), "unit_price": f"{12.5 + 7 * n:.2f}",
              "discount_percent": "10" if n == 2 else "0", "tax_rate": "7" if n == 4 else "19",
              "description": f"{sku.title()} for site {i % 13} (batch {n + 1})"}
             for n, sku in enumerate(SKUS)]
    order_id = f"O{run}-{i:07d}"
    won = Order.build(id=order_id, customer_id=customer_id(i), currency="EUR",
                      ordered_on=date(2026, 11, 23), lines=lines, owner="sales@example.com",
                      deal_id=f"D-{i:07d}", notes="Deliver to the loading dock, gate 3.")
    return Event[Order](type="order.won", entity="order", entity_id=order_id,
                        source=Source(system="crm", id=order_id), origin="crm",
                        entity_version=1, data=won)


def won_orders(n: int, run: str = "") -> list[bytes]:
    return [won_order(i, run).to_bytes() for i in range(n)]


_SALE_IDS = count(1)  # one sequence per process, like the ERP's


class NullErp:
    """The external sink replaced by a no-op, so the hub itself is measured."""

    async def place_sale(self, sale: SaleValues) -> tuple[int, str]:
        sale_id = next(_SALE_IDS)
        return sale_id, f"S{sale_id:07d}"


async def on_order_won(event: Event[Order], s: Run, erp: NullErp) -> None:
    won = event.data
    sale = order_mapping.to_sale(won, s.xref, CATALOGUE)
    sale_id, number = await s.call(erp.place_sale, sale)
    s.bind("order", won.id, order_mapping.SYSTEM, str(sale_id))
    s.emit(s.follow_up("order.accepted", won.model_copy(update={"number": number}),
                       source_id=str(sale_id)))


def bench_flow(topic: str, name: str = "bench_orders") -> Flow[Order, NullErp]:
    erp = NullErp()
    return Flow(name=name, topic=topic, group=f"{name}-{topic}", accepts=frozenset({"order.won"}),
                model=Order, handler=on_order_won, sink=lambda: erp,
                target=order_mapping.SYSTEM)


OUTPUT_HUB = topics.ORDER  # where the hub's order.accepted goes


# -- producing ---------------------------------------------------------------------------------
async def create_topics(bootstrap: str, names: list[str], partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names
                                   if name not in existing])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Fill a topic as fast as the broker takes it (before any clock starts)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        for start in range(0, len(values), 2000):
            pending = [await producer.send(topic, v, key=_key(v))
                       for v in values[start:start + 2000]]
            await asyncio.gather(*pending)
    finally:
        await producer.stop()


def _key(value: bytes) -> bytes:
    return json.loads(value)["entity_id"].encode()


# -- latency at a given rate -------------------------------------------------------------------
async def paced_latency(bootstrap: str, in_topic: str, out_topic: str, rate: float,
                        seconds: float, run: str,
                        cause_of: Callable[[dict[str, Any]], str | None]) -> dict[str, Any]:
    """Send fresh order.won events at `rate`/s for `seconds` and time each one from its send
    to the moment its result is read from `out_topic`. Percentiles in milliseconds."""
    n = max(20, int(rate * seconds))
    values = won_orders(n, run)
    ids = [json.loads(v)["event_id"] for v in values]
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    listener = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=10)
    await listener.start()
    await listener.topics()  # loads the metadata of every topic
    partitions = [TopicPartition(out_topic, p)
                  for p in sorted(listener.partitions_for_topic(out_topic) or {0})]
    listener.assign(partitions)
    await listener.seek_to_end(*partitions)
    for tp in partitions:
        await listener.position(tp)

    async def listen() -> None:
        while len(seen) < n:
            for records in (await listener.getmany(timeout_ms=100)).values():
                now = time.perf_counter()
                for record in records:
                    cause = cause_of(json.loads(record.value))
                    if cause in sent and cause not in seen:
                        seen[cause] = now

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    listening = asyncio.create_task(listen())
    try:
        tick = 0.01
        started = time.perf_counter()
        for i, (value, event_id) in enumerate(zip(values, ids, strict=True)):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > tick:
                await asyncio.sleep(delay)
            sent[event_id] = time.perf_counter()
            await producer.send(in_topic, value, key=_key(value))
        await asyncio.wait_for(listening, timeout=max(30.0, seconds * 4))
    except TimeoutError:
        pass
    finally:
        listening.cancel()
        await producer.stop()
        await listener.stop()
    waits = sorted((seen[i] - sent[i]) * 1000 for i in seen)
    return {"rate_per_s": round(rate, 1), "events": n, "arrived": len(waits),
            "p50_ms": _pct(waits, 50), "p99_ms": _pct(waits, 99),
            "max_ms": round(waits[-1], 1) if waits else None}


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * p / 100))], 1)


def hub_cause(body: dict[str, Any]) -> str | None:
    return body.get("causation_id") if body.get("type") == "order.accepted" else None


def same_event(body: dict[str, Any]) -> str | None:
    return body.get("event_id")


def rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def new_run_id() -> str:
    return uuid.uuid4().hex[:6]
