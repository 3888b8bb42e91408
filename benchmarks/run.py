"""`make bench`: every benchmark case in one run, one JSON object per case, then a summary.

One Tansu broker for the run; the input topic is filled once with N order.won events and every
case reads the same messages with its own consumer group. Each case runs in its own process
(benchmarks/cases.py), one after another, so its CPU and peak RSS are its own. Absolute figures
drift with the machine and its load; the ratios are what to quote, all from this one run.

Run: make bench [N=10000]   or   python -m benchmarks.run --events 10000
The last line is `BENCH {json}` (see docs/performance.md for how to read each figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from benchmarks import workload
from crmhub.embedded import EmbeddedBroker

PG_ADMIN_URL = os.environ.get("CRMHUB_BENCH_PG", os.environ.get(
    "CRMHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"))


PROFILE_DIR = os.environ.get("CRMHUB_BENCH_PROFILE", "")


def case(name: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run one case in its own process; its last stdout line is its JSON result.

    With CRMHUB_BENCH_PROFILE=DIR the hub cases run under py-spy (pip install py-spy) and
    leave collapsed stacks in DIR (one file per case; flamegraph.pl or speedscope read them).
    """
    command = [sys.executable, "-m", *name.split(), *args]
    if PROFILE_DIR and name.endswith(" hub"):
        store = "postgresql" if "postgresql" in " ".join(args) else "sqlite"
        os.makedirs(PROFILE_DIR, exist_ok=True)
        command = ["py-spy", "record", "--format", "raw", "--rate", "200", "--nonblocking",
                   "-o", os.path.join(PROFILE_DIR, f"hub_{store}.txt"), "--", *command]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"case": name, "error": f"timed out after {timeout:.0f}s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"case": name, "error": f"exit {done.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def postgres_database() -> tuple[str, str] | None:
    """A scratch PostgreSQL database for the hub's PostgreSQL variant (None: no server)."""
    import psycopg

    name = f"crmhub_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        return None
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return name, f"{base}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def emit(result: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(result), flush=True)
    return result


def ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if isinstance(a, int | float) and isinstance(b, int | float) and b \
        else None


async def fill_input(n: int) -> EmbeddedBroker:
    broker = EmbeddedBroker()
    await broker.start()
    await workload.create_topics(broker.bootstrap_servers,
                                 [workload.INPUT, "bench.raw.out", "bench.naive.out"])
    await workload.produce(broker.bootstrap_servers, workload.INPUT, workload.won_orders(n))
    return broker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="N, the peak-rate input")
    parser.add_argument("--naive-events", type=int, default=2_000,
                        help="the naive baseline reads the first min(N, this) events")
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    parser.add_argument("--latency-rate", type=float, default=0.0,
                        help="the raw case's paced rate (default: half the hub's peak)")
    parser.add_argument("--tryton-orders", type=int, default=20,
                        help="orders per path into Tryton (0: skip that case)")
    parser.add_argument("--tryton-workers", type=int, default=4)
    parser.add_argument("--cases", default="hub,hub_pg,raw,naive,startup,tryton",
                        help="comma-separated subset (profiling runs, quick checks)")
    args = parser.parse_args()
    wanted = set(args.cases.split(","))
    skipped: dict[str, Any] = {"skipped": True}
    n = args.events
    started = time.perf_counter()

    loop = asyncio.new_event_loop()
    broker = loop.run_until_complete(fill_input(n))
    bootstrap = ["--bootstrap", broker.bootstrap_servers]
    sized = [*bootstrap, "--events", str(n), "--latency-seconds", str(args.latency_seconds)]
    try:
        with_sqlite = f"sqlite:///var/bench-{uuid.uuid4().hex[:8]}.sqlite"
        hub = emit(case("benchmarks.cases hub", *sized, "--database-url", with_sqlite)
                   if "hub" in wanted else {"case": "hub_sqlite", **skipped})
        scratch = postgres_database() if "hub_pg" in wanted else None
        if "hub_pg" not in wanted:
            hub_pg = emit({"case": "hub_postgresql", **skipped})
        elif scratch is None:
            hub_pg = emit({"case": "hub_postgresql", "error": f"no PostgreSQL at {PG_ADMIN_URL}"})
        else:
            try:
                hub_pg = emit(case("benchmarks.cases hub", *sized, "--database-url", scratch[1]))
            finally:
                drop_database(scratch[0])
        hub_rate = hub.get("events_per_s")
        raw_rate = args.latency_rate or (hub_rate * 0.5 if hub_rate else 0)
        raw_args = [*sized, "--latency-rate", str(raw_rate)]
        raw = emit(case("benchmarks.cases raw", *raw_args)
                   if "raw" in wanted else {"case": "raw", **skipped})
        naive = emit(case("benchmarks.cases naive", *bootstrap, "--events",
                          str(min(n, args.naive_events)), "--database-url",
                          f"sqlite:///var/bench-naive-{uuid.uuid4().hex[:8]}.sqlite")
                     if "naive" in wanted else {"case": "naive", **skipped})
    finally:
        loop.run_until_complete(broker.stop(grace=0.5))
        loop.close()
        for leftover in ("var",):
            for name in os.listdir(leftover) if os.path.isdir(leftover) else []:
                if name.startswith("bench-"):
                    os.remove(os.path.join(leftover, name))
    startup = emit(case("benchmarks.cases startup")
                   if "startup" in wanted else {"case": "startup", **skipped})
    if args.tryton_orders and "tryton" in wanted:
        tryton = emit(case("benchmarks.tryton_orders", "--orders", str(args.tryton_orders),
                           "--workers", str(args.tryton_workers)))
    else:
        tryton = emit({"case": "tryton_orders", "skipped": True})

    latency = hub.get("latency") or {}
    summary = {
        "events": n,
        "hub_events_per_s": hub.get("events_per_s"),
        "hub_pg_events_per_s": hub_pg.get("events_per_s"),
        "raw_events_per_s": raw.get("events_per_s"),
        "naive_events_per_s": naive.get("events_per_s"),
        "hub_vs_raw": ratio(hub.get("events_per_s"), raw.get("events_per_s")),
        "hub_pg_vs_raw": ratio(hub_pg.get("events_per_s"), raw.get("events_per_s")),
        "hub_vs_naive": ratio(hub.get("events_per_s"), naive.get("events_per_s")),
        "p50_ms": latency.get("p50_ms"),
        "p99_ms": latency.get("p99_ms"),
        "latency_rate_per_s": latency.get("rate_per_s"),
        "raw_p99_ms": (raw.get("latency") or {}).get("p99_ms"),
        "hub_pg_p99_ms": (hub_pg.get("latency") or {}).get("p99_ms"),
        "rss_mb": max((r.get("rss_mb") or 0) for r in (hub, hub_pg)) or None,
        "tryton_hub_vs_direct": tryton.get("tryton_hub_vs_direct"),
        "rpc_calls_per_order_hub": tryton.get("rpc_calls_per_order_hub"),
        "startup_s": startup.get("ready_line_s"),
        "startup_readyz_s": startup.get("readyz_s"),
        "errors": [r["case"] for r in (hub, hub_pg, raw, naive, startup, tryton) if "error" in r],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print("BENCH " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
