"""Throughput of the shared step vs the broker's own limit, measured in one run.

baseline: a bare aiokafka consumer group reading the same messages and committing per message
          (the same commit discipline as the hub, with no work at all)
hub:      the hub with one flow whose sink does nothing -- so the difference is the step's own
          cost: decode + ledger check + park check + ledger write + ack

Run: make bench  (or python -m benchmarks.step_throughput --events 2000)
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from crmhub import topics
from crmhub.embedded import EmbeddedBroker
from crmhub.hub import Hub
from crmhub.settings import HubSettings
from crmhub.step import Flow, Run
from schemas.canonical import Customer
from schemas.envelope import Event, Source


class NullSink:
    def __init__(self) -> None:
        self.count = 0

    async def write(self, customer_id: str) -> str:
        self.count += 1
        return customer_id


async def on_customer(event: Event[Customer], s: Run, sink: NullSink) -> None:
    external = await s.call(sink.write, event.data.id)
    s.bind("customer", event.data.id, "null", external)


def events(n: int) -> list[bytes]:
    return [Event[Customer](type="customer.upserted", entity="customer", entity_id=f"c-{i}",
                            source=Source(system="bench"), origin="bench",
                            data=Customer(id=f"c-{i}", name=f"Customer {i}", currency="EUR")
                            ).to_bytes() for i in range(n)]


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        batch = [await producer.send(topic, v, key=f"k{i}".encode()) for i, v in enumerate(values)]
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def baseline(bootstrap: str, topic: str, n: int, workers: int) -> float:
    consumers = [AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="bench-baseline",
                                  auto_offset_reset="earliest", enable_auto_commit=False,
                                  session_timeout_ms=2000, heartbeat_interval_ms=500)
                 for _ in range(workers)]
    await asyncio.gather(*(c.start() for c in consumers))
    seen = 0
    started: float | None = None

    async def drain(consumer: AIOKafkaConsumer) -> None:
        nonlocal seen, started
        while seen < n:
            try:
                await asyncio.wait_for(consumer.getone(), 0.5)
            except TimeoutError:
                continue
            started = started or time.monotonic()
            await consumer.commit()
            seen += 1

    await asyncio.gather(*(drain(c) for c in consumers))
    elapsed = time.monotonic() - (started or time.monotonic())
    await asyncio.gather(*(c.stop() for c in consumers))
    return n / elapsed


async def through_hub(bootstrap: str, database_url: str, n: int, workers: int) -> float:
    sink = NullSink()
    flow: Flow[Customer, NullSink] = Flow(
        name="bench", topic=topics.CUSTOMER, group="bench-hub",
        accepts=frozenset({"customer.upserted"}), model=Customer, handler=on_customer,
        sink=lambda: sink, target="null")
    hub = Hub(HubSettings(bootstrap_servers=bootstrap, database_url=database_url,
                          workers_per_flow=workers), [flow])
    await hub.start()
    try:
        while sink.count == 0:  # noqa: ASYNC110 - polling a counter is the measurement
            await asyncio.sleep(0.001)
        started = time.monotonic()
        while sink.count < n:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        rate = (n - 1) / (time.monotonic() - started)
        consumed = hub.metrics.consumed.labels("bench")._value.get()
        if consumed != n:
            print(f"note: the hub consumed {consumed:.0f} messages for {n} events")
        return rate
    finally:
        await hub.stop()


async def main(n: int, workers: int, database_url: str | None) -> dict[str, Any]:
    broker = EmbeddedBroker()
    await broker.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
            hub = Hub(HubSettings(bootstrap_servers=broker.bootstrap_servers, database_url=url),
                      [])
            await hub.create_topics()
            hub.store.close()
            await produce(broker.bootstrap_servers, topics.CUSTOMER, events(n))
            raw = await baseline(broker.bootstrap_servers, topics.CUSTOMER, n, workers)
            ours = await through_hub(broker.bootstrap_servers, url, n, workers)
    finally:
        await broker.stop(grace=0.5)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"events": n, "workers": workers, "state": url.split(":", 1)[0],
            "baseline_per_s": round(raw, 1), "hub_per_s": round(ours, 1),
            "ratio_hub_vs_baseline": round(ours / raw, 3), "max_rss_mb": round(rss_mb, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--database-url", default=None,
                        help="state store (default: a temporary SQLite file)")
    args = parser.parse_args()
    result = asyncio.run(main(args.events, args.workers, args.database_url))
    for key, value in result.items():
        print(f"{key:24} {value}")
