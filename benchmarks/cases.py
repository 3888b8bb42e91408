"""The benchmark cases. Each runs in its own process (so its peak RSS and CPU are its own)
against the broker the orchestrator (benchmarks/run.py) started, and prints one JSON object.

raw    the physical limit: aiokafka consume -> json decode -> produce to another topic,
       the sends of a fetched batch awaited together, then one offset commit per batch
hub    the hub's core path (benchmarks/workload.py) on SQLite or PostgreSQL: peak rate over
       the pre-filled input, then latency at a given fraction of that peak
naive  the same work as a plain faststream per-message handler: validate, precheck, map,
       publish (awaited), ledger + xref (one transaction), commit the offset, per message
load   (used by raw and hub) sends order.won at a given rate and times each one from its
       send until its result is read back; runs in its own process
startup  `crmhub run` as a subprocess with the embedded broker and every flow and feed:
       wall time until it prints its ready line, and until /readyz answers 200

Run one by hand: python -m benchmarks.cases hub --bootstrap 127.0.0.1:9092 --events 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks import workload
from crmhub.embedded import free_port
from crmhub.hub import Hub
from crmhub.settings import HubSettings
from crmhub.store import Bind, Store


# -- paced load, from another process ----------------------------------------------------------
async def paced_load(args: argparse.Namespace, in_topic: str, out_topic: str, rate: float,
                     cause: str) -> dict[str, Any]:
    """Latency at `rate`, with the sender and the listener in a process of their own: they
    stand for other services and must not take the measured process's event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.cases", "load", "--bootstrap", args.bootstrap,
        "--in-topic", in_topic, "--out-topic", out_topic, "--latency-rate", str(rate),
        "--latency-seconds", str(args.latency_seconds), "--cause", cause,
        stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if process.returncode or not lines:
        return {"error": f"load process exited with {process.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def load_case(args: argparse.Namespace) -> dict[str, Any]:
    return await workload.paced_latency(
        args.bootstrap, args.in_topic, args.out_topic, args.latency_rate, args.latency_seconds,
        workload.new_run_id(), getattr(workload, args.cause))


# -- raw ---------------------------------------------------------------------------------------
async def raw_passthrough(bootstrap: str, in_topic: str, out_topic: str, group: str,
                          stop_after: int | None, stop: asyncio.Event | None = None,
                          fetch_wait_ms: int = 500) -> tuple[int, float]:
    consumer = AIOKafkaConsumer(in_topic, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                session_timeout_ms=2000, heartbeat_interval_ms=500,
                                max_poll_records=500, fetch_max_wait_ms=fetch_wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await asyncio.gather(consumer.start(), producer.start())
    done, started = 0, 0.0
    try:
        while (stop_after is None or done < stop_after) and not (stop and stop.is_set()):
            batch = await consumer.getmany(timeout_ms=100)
            if not batch:
                continue
            started = started or time.perf_counter()
            sends = []
            for records in batch.values():
                for record in records:
                    json.loads(record.value)
                    sends.append(await producer.send(out_topic, record.value, key=record.key))
            await asyncio.gather(*sends)
            await consumer.commit()
            done += len(sends)
        return done, time.perf_counter() - started
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())


async def raw_case(args: argparse.Namespace) -> dict[str, Any]:
    done, elapsed = await raw_passthrough(args.bootstrap, workload.INPUT, "bench.raw.out",
                                          "bench-raw", args.events)
    result: dict[str, Any] = {"case": "raw", "events": done,
                              "events_per_s": round(done / elapsed, 1)}
    if args.latency_rate:
        paced = f"bench.raw.paced.{workload.new_run_id()}"
        stop = asyncio.Event()
        await workload.create_topics(args.bootstrap, [paced])
        # the hub's default fetch wait (CRMHUB_FETCH_MAX_WAIT_MS): Tansu holds a fetch that
        # long even when records arrive, so the default 500 ms would be the latency
        loop = asyncio.create_task(raw_passthrough(args.bootstrap, paced, "bench.raw.out",
                                                   f"bench-raw-{paced}", None, stop,
                                                   fetch_wait_ms=20))
        await asyncio.sleep(1.5)  # group join
        result["latency"] = await paced_load(args, paced, "bench.raw.out", args.latency_rate,
                                             "same_event")
        stop.set()
        await loop
    result["rss_mb"] = workload.rss_mb()
    return result


# -- hub ---------------------------------------------------------------------------------------
async def hub_case(args: argparse.Namespace) -> dict[str, Any]:
    variant = "postgresql" if args.database_url.startswith("postgresql") else "sqlite"
    store = Store(args.database_url)
    store.migrate()
    for i in range(workload.CUSTOMERS):  # every order's customer is in the ERP already
        store.bind(Bind("customer", workload.customer_id(i), "tryton", str(1000 + i)))
    store.close()
    run = workload.new_run_id()
    paced = f"bench.hub.paced.{run}"
    peak_flow = workload.bench_flow(workload.INPUT, f"bench_{variant}")
    paced_flow = workload.bench_flow(paced, f"bench_{variant}_paced")
    settings = HubSettings(bootstrap_servers=args.bootstrap, database_url=args.database_url,
                           flows=[], http_port=0)
    hub = Hub(settings, [peak_flow, paced_flow], feeds=[])
    await hub.start()
    try:
        consumed = hub.metrics.consumed.labels(peak_flow.name)
        succeeded = hub.metrics.succeeded.labels(peak_flow.name)
        while consumed._value.get() == 0:  # noqa: ASYNC110 - polling a counter is the clock
            await asyncio.sleep(0.001)
        started = time.perf_counter()
        while succeeded._value.get() < args.events:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
        rate = args.events / elapsed
        result: dict[str, Any] = {"case": f"hub_{variant}", "events": args.events,
                                  "events_per_s": round(rate, 1),
                                  "consumed": int(consumed._value.get())}
        result["latency"] = await paced_load(args, paced, workload.OUTPUT_HUB,
                                             rate * args.rate_fraction, "hub_cause")
        result["latency"]["fraction_of_peak"] = args.rate_fraction
        dead = hub.store.list_dead_letters(limit=5)
        if dead:
            result["dead_letters"] = [f"{d.error_class}: {d.error_message}" for d in dead]
    finally:
        await hub.stop()
    result["rss_mb"] = workload.rss_mb()
    return result


# -- naive -------------------------------------------------------------------------------------
async def naive_case(args: argparse.Namespace) -> dict[str, Any]:
    """What a plain faststream service doing the same work one message at a time looks like."""
    from faststream.kafka import KafkaBroker
    from faststream.kafka.annotations import KafkaMessage
    from faststream.middlewares import AckPolicy

    from crmhub.errors import MissingDependency
    from schemas.canonical import Order
    from schemas.envelope import Source, decode_event
    from schemas.state import LedgerStatus

    store = Store(args.database_url)
    store.migrate()
    for i in range(workload.CUSTOMERS):
        store.bind(Bind("customer", workload.customer_id(i), "tryton", str(1000 + i)))
    erp = workload.NullErp()

    class Lookup:
        def get(self, entity: str, canonical_id: str, system: str) -> str | None:
            return store.external_id(entity, canonical_id, system)

        def require(self, entity: str, canonical_id: str, system: str) -> str:
            found = self.get(entity, canonical_id, system)
            if found is None:
                raise MissingDependency(entity, canonical_id, system)
            return found

    broker = KafkaBroker(args.bootstrap)
    done = 0
    started = elapsed = 0.0
    finished = asyncio.Event()

    @broker.subscriber(workload.INPUT, group_id="bench-naive", ack_policy=AckPolicy.MANUAL,
                       auto_offset_reset="earliest", session_timeout_ms=2000,
                       heartbeat_interval_ms=500)
    async def on_order_won(message: KafkaMessage) -> None:
        nonlocal done, started, elapsed
        started = started or time.perf_counter()
        event = decode_event(message.body, Order)
        seen = await asyncio.to_thread(store.precheck, "naive", str(event.event_id),
                                       event.entity, event.entity_id, "tryton")
        if seen.status not in (LedgerStatus.DONE, LedgerStatus.SKIPPED):
            sale = workload.order_mapping.to_sale(event.data, Lookup(), workload.CATALOGUE)
            sale_id, number = await erp.place_sale(sale)
            accepted = event.follow_up("order.accepted",
                                       event.data.model_copy(update={"number": number}),
                                       by="naive", source=Source(system="tryton",
                                                                 id=str(sale_id)))
            await broker.publish(accepted.to_bytes(), "bench.naive.out", key=accepted.key)
            await asyncio.to_thread(store.commit_success, "naive", str(event.event_id),
                                    event.entity, event.entity_id,
                                    [Bind("order", event.data.id, "tryton", str(sale_id),
                                          event.version_key())], 1)
        await message.ack()
        done += 1
        if done == args.events:
            elapsed = time.perf_counter() - started
            finished.set()

    await broker.start()
    try:
        await finished.wait()
    finally:
        await broker.stop()
        store.close()
    return {"case": "naive", "events": args.events,
            "events_per_s": round(args.events / elapsed, 1),
            "rss_mb": workload.rss_mb()}


# -- startup -----------------------------------------------------------------------------------
async def startup_case(args: argparse.Namespace) -> dict[str, Any]:
    """`crmhub run` with the embedded broker and every flow and feed, as a user starts it."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "CRMHUB_DATABASE_URL": f"sqlite:///{Path(tmp) / 'state.sqlite'}",
               "CRMHUB_HTTP_PORT": str(port), "CRMHUB_BOOTSTRAP_SERVERS": "",
               "CRMHUB_LOG_LEVEL": "WARNING", "FILEDROP_DIRECTORY": str(Path(tmp) / "drop")}
        crmhub = str(Path(sys.executable).with_name("crmhub"))
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            crmhub, "run", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        ready_line: float | None = None
        readyz: float | None = None
        said = ""
        try:
            assert process.stdout is not None
            said = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
            if "ready in" in said:
                ready_line = time.perf_counter() - started
            async with httpx.AsyncClient() as client:
                deadline = time.perf_counter() + 30
                while readyz is None and time.perf_counter() < deadline:
                    try:
                        answer = await client.get(f"http://127.0.0.1:{port}/readyz")
                        if answer.status_code == 200:
                            readyz = time.perf_counter() - started
                    except httpx.TransportError:
                        await asyncio.sleep(0.02)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
    return {"case": "startup", "ready_line_s": _round(ready_line), "readyz_s": _round(readyz),
            "hub_says": said.strip()}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


CASES = {"raw": raw_case, "hub": hub_case, "naive": naive_case, "startup": startup_case,
         "load": load_case}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--rate-fraction", type=float, default=0.5)
    parser.add_argument("--latency-rate", type=float, default=0.0)
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    parser.add_argument("--in-topic", default="")
    parser.add_argument("--out-topic", default="")
    parser.add_argument("--cause", default="hub_cause", choices=["hub_cause", "same_event"])
    args = parser.parse_args()
    print(json.dumps(asyncio.run(CASES[args.case](args))), flush=True)


if __name__ == "__main__":
    main()
