"""The FileDrop flows end to end: real broker, real state store, real folder."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from connectors.filedrop.client import FileDrop
from connectors.filedrop.settings import FileDropSettings
from crmhub import topics
from crmhub.errors import PermanentError, TransientError
from flows import FEEDS, FLOWS, customer_to_filedrop, order_to_filedrop
from tests.conftest import HubFactory, eventually, publish, read_topic
from tests.flows.support import customer_event, order_event


def drop_flows(directory: Path) -> list:  # type: ignore[type-arg]
    drop = FileDrop(FileDropSettings(directory=directory))
    return [replace(customer_to_filedrop.flow, sink=lambda: drop),
            replace(order_to_filedrop.flow, sink=lambda: drop)]


def test_every_flow_and_feed_is_listed_once() -> None:
    names = [flow.name for flow in FLOWS]
    assert names == ["customer_to_filedrop", "order_to_filedrop", "customer_to_erp",
                     "order_to_erp", "customer_facts", "order_approval", "approval_decisions",
                     "order_notices", "payment_notices", "invoice_notices", "crm_webhooks",
                     "order_to_crm", "invoice_to_crm", "payment_to_crm", "invoice_state_to_crm",
                     "shipment_to_crm", "approval_to_crm"]
    assert len({(flow.topic, flow.group) for flow in FLOWS}) == len(FLOWS)
    assert [feed.name for feed in FEEDS] == ["erp_invoices", "erp_payments", "scm_shipments",
                                             "approval_replies", "oa_tasks"]
    assert len({(feed.system, feed.stream) for feed in FEEDS}) == len(FEEDS)


async def test_order_waits_for_its_customer_then_lands_once(make_hub: HubFactory,
                                                            tmp_path: Path) -> None:
    hub = await make_hub(drop_flows(tmp_path))
    won = order_event("O-1", "C-1")
    await publish(hub.bootstrap_servers, topics.ORDER, won, won)
    await eventually(lambda: hub.store.list_parked(), message="order parked")
    assert not (tmp_path / "order").exists()
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event("C-1", "上海星河"))
    order_file = tmp_path / "order" / "O-1.json"
    await eventually(order_file.exists, message="order file written")
    document = json.loads(order_file.read_text("utf-8"))
    assert document["customer_file"] == "customer/C-1.json"
    assert document["total"] == str(won.data.total)
    customer = json.loads((tmp_path / "customer" / "C-1.json").read_text("utf-8"))
    assert customer["name"] == "上海星河"
    await eventually(lambda: hub.store.external_id("order", "O-1", "filedrop")
                     == "order/O-1.json", message="order bound after the write")
    exported = [json.loads(r.value) for r in await read_topic(
        hub.bootstrap_servers, topics.ORDER, 3)]
    assert [e["type"] for e in exported].count("order.exported") == 1
    assert sorted(p.name for p in (tmp_path / "order").iterdir()) == ["O-1.json"]  # no temp files


async def test_unwritable_folder_dead_letters_and_a_missing_one_pauses(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    drop = FileDrop(FileDropSettings(directory=blocked))
    if os.geteuid() != 0:  # root ignores permissions; the classification is what matters
        blocked.chmod(0o500)
        with pytest.raises(PermanentError, match="cannot write"):
            await drop.write("customer", "C-1", {"a": 1})
    file_in_the_way = tmp_path / "file"
    file_in_the_way.write_text("x")
    with pytest.raises(TransientError, match="drop folder unavailable"):
        await FileDrop(FileDropSettings(directory=file_in_the_way)).write("c", "C-1", {})
    with pytest.raises(PermanentError, match="cannot name a file"):
        drop.path_for("customer", "..")
    assert drop.path_for("c", "A/B") != drop.path_for("c", "A_B")  # no two ids share a file
    assert drop.path_for("c", "A/B").name == "A%2FB.json"
