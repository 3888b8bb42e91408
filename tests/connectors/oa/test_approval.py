"""The approval gate end to end: a real Synapse (requests and replies in a room), a real Tryton
(the ERP the approved orders reach), a real Tansu broker and a real state store.

An order over the limit waits (parked, "awaiting approval"), is decided by an approver's reply
in the room, and then reaches the ERP once -- or, rejected or expired, never."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from connectors.matrix.client import MatrixClient
from connectors.tryton.client import TrytonClient
from connectors.tryton.erp import TrytonErp
from crmhub import topics
from crmhub.dev.sandbox import synapse
from crmhub.feed import Feed
from crmhub.hub import Hub
from crmhub.step import Flow
from flows import (
    approval_decisions,
    approval_replies,
    customer_facts,
    customer_to_erp,
    order_approval,
    order_to_erp,
)
from flows.oa import ApprovalDesk, approval_rules
from mappings.oa.approval import CONTENT_KEY, approval_id
from tests.conftest import HubFactory, eventually, publish, read_topic
from tests.connectors.oa.conftest import Room
from tests.connectors.tryton.conftest import settings_for
from tests.connectors.tryton.test_erp_flows import customer_event, order_event, unique

ALICE, BOB, MALLORY = (synapse.user_id(n) for n in ("alice", "bob", "mallory"))
BIG = [{"sku": "PUMP-200", "quantity": "2", "unit_price": "1450.00", "tax_rate": "19"}]


@pytest.fixture
def rules_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Approvers alice and bob; EUR orders above 1000 need approval."""
    monkeypatch.setenv("APPROVAL_APPROVERS", f"{ALICE},{BOB}")
    monkeypatch.setenv("APPROVAL_AMOUNT_LIMITS", '{"EUR": "1000"}')
    approval_rules.cache_clear()
    return monkeypatch


def gate_flows(room: Room, erp_settings: Any) -> tuple[list[Flow[Any, Any]], list[Feed[Any, Any]]]:
    def desk() -> ApprovalDesk:
        return ApprovalDesk(MatrixClient(room.settings()), approval_rules())

    flows = [replace(customer_to_erp.flow, sink=lambda: TrytonErp(erp_settings)),
             replace(order_to_erp.flow, sink=lambda: TrytonErp(erp_settings)),
             customer_facts.flow, replace(order_approval.flow, sink=desk),
             approval_decisions.flow]
    return flows, [replace(approval_replies.feed, source=desk)]


async def start(make_hub: HubFactory, room: Room, erp_server: Any, **overrides: Any) -> Hub:
    flows, feeds = gate_flows(room, settings_for(erp_server))
    return await make_hub(flows, feeds, poll_interval_seconds=0.2, **overrides)


async def sales_for(erp: TrytonClient, order_id: str) -> list[dict[str, Any]]:
    return await erp.search_read("sale.sale", [("reference", "=", order_id)], ["number"])


async def request_in_room(hub: Hub, room: Room, order_id: str) -> str:
    """The request's event id once the bot posted it (and the order waits for it)."""
    event_id = await eventually(
        lambda: hub.store.external_id("approval_request", approval_id(order_id), "matrix"),
        message="approval request posted", timeout=30)
    [request] = [m for m in room.messages() if m["event_id"] == event_id]
    assert request["sender"] == synapse.user_id(synapse.BOT)
    assert request["content"][CONTENT_KEY]["order_id"] == order_id
    assert "Reply to this message with APPROVE" in request["content"]["body"]
    return str(event_id)


async def decisions(hub: Hub) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in await read_topic(hub.bootstrap_servers,
                                                          topics.APPROVAL, 50, timeout=1.0)
            if json.loads(r.value)["type"] == "approval.decided"]


async def test_order_over_the_limit_waits_is_approved_in_the_room_and_reaches_the_erp_once(
        make_hub: HubFactory, room: Room, erp_server: Any, rules_env: Any) -> None:
    hub = await start(make_hub, room, erp_server)
    customer, order = unique("C"), unique("O")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    won = order_event(order, customer, lines=BIG)
    await publish(hub.bootstrap_servers, topics.ORDER, won, won)  # a redelivery too
    request = await request_in_room(hub, room, order)
    waiting = await eventually(lambda: hub.store.summary()["awaiting_approval"],
                               message="order awaiting approval", timeout=30)
    assert waiting == [order]
    assert hub.store.external_id("order", order, "tryton") is None
    room.say("alice", "> <@crmhub-bot:hub.local> Approval needed ...\n\nAPPROVE fine by me",
             reply_to=request)
    sale = await eventually(lambda: hub.store.external_id("order", order, "tryton"),
                            message="approved order placed in the ERP", timeout=60)
    async with TrytonClient(settings_for(erp_server)) as erp:
        assert [s["id"] for s in await sales_for(erp, order)] == [int(sale)]
    [decided] = [d for d in await decisions(hub) if d["data"]["order_id"] == order]
    assert decided["data"]["state"] == "approved" and decided["data"]["approver"] == ALICE
    assert decided["data"]["comment"] == "fine by me"
    assert hub.store.summary()["awaiting_approval"] == []
    bodies = [m["content"]["body"] for m in room.messages()]
    assert f"Order {order} approved by {ALICE}: fine by me" in bodies
    requested = [json.loads(r.value) for r in await read_topic(
        hub.bootstrap_servers, topics.APPROVAL, 50, timeout=1.0)
        if json.loads(r.value)["type"] == "approval.requested"]
    assert [r["data"]["state"] for r in requested] == ["pending"]  # one request, not two


async def test_rejected_order_never_reaches_the_erp_and_the_decision_says_why(
        make_hub: HubFactory, room: Room, erp_server: Any, rules_env: Any) -> None:
    hub = await start(make_hub, room, erp_server)
    customer, order = unique("C"), unique("O")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    await publish(hub.bootstrap_servers, topics.ORDER, order_event(order, customer, lines=BIG))
    request = await request_in_room(hub, room, order)
    room.say("mallory", "APPROVE", reply_to=request)  # not an approver: nothing happens
    room.say("bob", "REJECT margin too thin, renegotiate", reply_to=request)
    found: list[dict[str, Any]] = []

    async def rejected() -> bool:
        found[:] = [d for d in await decisions(hub) if d["data"]["order_id"] == order]
        return bool(found)

    await eventually(rejected, message="approval.decided published", timeout=30)
    [event] = found
    assert event["entity_id"] == approval_id(order)
    assert (event["data"]["state"], event["data"]["approver"], event["data"]["comment"]) == (
        "rejected", BOB, "margin too thin, renegotiate")
    assert event["data"]["reasons"] == ["total EUR 3,451.00 is above the approval limit of "
                                        "EUR 1,000.00"]
    await eventually(lambda: not hub.store.summary()["awaiting_approval"],
                     message="the order no longer waits", timeout=30)
    async with TrytonClient(settings_for(erp_server)) as erp:
        assert await sales_for(erp, order) == []
    assert hub.store.external_id("order", order, "tryton") is None
    assert hub.store.external_id("approval", order, "oa") == f"rejected:{approval_id(order)}"


async def test_a_reply_from_a_non_approver_changes_nothing(
        make_hub: HubFactory, room: Room, erp_server: Any, rules_env: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    hub = await start(make_hub, room, erp_server)
    customer, order = unique("C"), unique("O")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    await publish(hub.bootstrap_servers, topics.ORDER, order_event(order, customer, lines=BIG))
    request = await request_in_room(hub, room, order)
    room.say("mallory", "APPROVE ship it", reply_to=request)
    room.say("alice", "looks big, let me check")  # chatter, not a reply: ignored too
    await eventually(lambda: "not an approver" in caplog.text,
                     message="the ignored reply is logged", timeout=30)
    assert MALLORY in caplog.text
    assert await decisions(hub) == []
    assert hub.store.summary()["awaiting_approval"] == [order]
    assert hub.store.external_id("order", order, "tryton") is None


async def test_small_orders_pass_the_gate_without_a_request(
        make_hub: HubFactory, room: Room, erp_server: Any, rules_env: Any) -> None:
    hub = await start(make_hub, room, erp_server)
    customer, order = unique("C"), unique("O")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    await publish(hub.bootstrap_servers, topics.ORDER, order_event(order, customer))
    await eventually(lambda: hub.store.external_id("order", order, "tryton"),
                     message="small order placed", timeout=60)
    assert hub.store.external_id("approval", order, "oa") == f"not_required:{approval_id(order)}"
    assert hub.store.external_id("approval_request", approval_id(order), "matrix") is None


async def test_unanswered_request_is_reminded_then_expires_and_never_reaches_the_erp(
        make_hub: HubFactory, room: Room, erp_server: Any, rules_env: Any) -> None:
    rules_env.setenv("APPROVAL_REMINDER_SECONDS", "1")
    rules_env.setenv("APPROVAL_EXPIRY_SECONDS", "4")
    approval_rules.cache_clear()
    hub = await start(make_hub, room, erp_server, park_ttl_seconds=2)
    customer, order = unique("C"), unique("O")
    await publish(hub.bootstrap_servers, topics.CUSTOMER, customer_event(customer))
    await publish(hub.bootstrap_servers, topics.ORDER, order_event(order, customer, lines=BIG))
    await request_in_room(hub, room, order)
    [parked] = await eventually(lambda: hub.store.list_parked(flow="order_to_erp"),
                                message="order parked", timeout=30)
    # the park outlives the approval: park_ttl_seconds is 2 s, the park is kept expiry + 1 h
    assert (parked.expires_at - parked.parked_at).total_seconds() >= 4 + 3600
    await eventually(lambda: any(m["content"]["body"].startswith(f"Reminder: order {order}")
                                 for m in room.messages()), message="reminder", timeout=30)
    found: list[dict[str, Any]] = []

    async def expired() -> bool:
        found[:] = [d for d in await decisions(hub) if d["data"]["order_id"] == order]
        return bool(found)

    await eventually(expired, message="approval expired", timeout=30)
    assert [d["data"]["state"] for d in found] == ["expired"]
    await eventually(lambda: not hub.store.list_parked(flow="order_to_erp"),
                     message="order released", timeout=30)
    reminders = [m for m in room.messages() if m["content"]["body"].startswith("Reminder")]
    assert len(reminders) == 1
    async with TrytonClient(settings_for(erp_server)) as erp:
        assert await sales_for(erp, order) == []
