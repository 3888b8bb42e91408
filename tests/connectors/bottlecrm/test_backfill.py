"""`crmhub backfill bottlecrm accounts|deals` against the real BottleCRM, a real Tansu broker
and a SQLite state store: existing records are published once; a re-run publishes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from crmhub import topics
from crmhub.dev.sandbox.bottlecrm import BottleCrmServer
from crmhub.embedded import EmbeddedBroker
from crmhub.store import Store
from tests.conftest import read_topic
from tests.connectors.bottlecrm.conftest import in_thread, new_account, new_deal, unique, win

# The first test to ask for the BottleCRM sandbox may build it: a venv and ~2-3 minutes of
# migrations on a fresh machine.
pytestmark = pytest.mark.timeout(900)


async def backfill(kind: str, env: dict[str, str]) -> tuple[int, str]:
    crmhub = Path(sys.executable).with_name("crmhub")
    proc = await asyncio.create_subprocess_exec(
        str(crmhub), "backfill", "bottlecrm", kind, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return int(proc.returncode or 0), out.decode()


async def events(broker: EmbeddedBroker, topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in await read_topic(broker.bootstrap_servers, topic,
                                                          10_000, timeout=1.5)]


async def test_backfill_publishes_accounts_and_won_deals_once(
        bottlecrm_server: BottleCrmServer, broker: EmbeddedBroker, tmp_path: Path) -> None:
    crm = bottlecrm_server
    quiet = await in_thread(new_account, crm, unique("北京 Quiet Account"))
    won = await in_thread(new_deal, crm)
    await in_thread(win, crm, won.deal_id)
    still_open = await in_thread(new_deal, crm)
    state = f"sqlite:///{tmp_path / 'state.sqlite'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRMHUB_", "BOTTLECRM_"))}
    env.update(CRMHUB_BOOTSTRAP_SERVERS=broker.bootstrap_servers, CRMHUB_DATABASE_URL=state,
               BOTTLECRM_URL=crm.url, BOTTLECRM_TOKEN=crm.token, BOTTLECRM_PAGE_SIZE="2",
               CRMHUB_CONFIG="")

    code, out = await backfill("accounts", env)
    assert code == 0, out
    assert "bottlecrm accounts" in out and " 0 refused" in out
    customers = {e["entity_id"]: e for e in await events(broker, topics.CUSTOMER)}
    assert {quiet, won.account_id, still_open.account_id} <= set(customers)
    assert customers[quiet]["data"]["name"].startswith("北京 Quiet Account")

    code, out = await backfill("deals", env)
    assert code == 0, out
    orders = {e["entity_id"]: e for e in await events(broker, topics.ORDER)}
    assert won.deal_id in orders and still_open.deal_id not in orders
    assert orders[won.deal_id]["type"] == "order.won"
    assert [li["sku"] for li in orders[won.deal_id]["data"]["lines"]] == ["WIDGET", "MANUAL"]

    published = len(await events(broker, topics.CUSTOMER)) + len(await events(broker,
                                                                              topics.ORDER))
    for kind in ("accounts", "deals"):  # nothing changed: nothing new
        code, out = await backfill(kind, env)
        assert code == 0 and " 0 published" in out, out
    again = len(await events(broker, topics.CUSTOMER)) + len(await events(broker, topics.ORDER))
    assert again == published
    store = Store(state)
    assert store.external_id("order", won.deal_id, "bottlecrm") == won.deal_id
    assert store.last_hash("customer", quiet, "bottlecrm")
    store.close()


async def test_backfill_without_a_broker_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRMHUB_", "BOTTLECRM_"))}
    code, out = await backfill("accounts", env)
    assert code == 2 and "CRMHUB_BOOTSTRAP_SERVERS" in out
    code, out = await backfill("leads", env)
    assert code == 2 and "one of accounts, deals" in out
