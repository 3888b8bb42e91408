"""Chat robots against a local receiver that checks signatures the way DingTalk, WeCom and
Feishu document them: signed messages pass, forged or stale ones are refused."""

from __future__ import annotations

import time
from datetime import date

import pytest

from connectors.chatbots.client import ChatRobots, RobotFault, classify
from crmhub.errors import PermanentError, TransientError
from flows.oa import Notifier, NotifySettings
from mappings.oa import chatbot, notice
from schemas.canonical import Order
from tests.connectors.oa.conftest import RobotReceiver


def accepted_notice() -> notice.Notice:
    order = Order.build(id="O-77", number="SO-0077", customer_id="C-7", currency="CNY",
                        ordered_on=date(2026, 11, 30), owner="li.lei@example.com",
                        lines=[{"sku": "PUMP-200", "quantity": "2", "unit_price": "8800",
                                "tax_rate": "13"}])
    return notice.order_accepted(order, "zh")


async def test_each_robot_message_is_signed_and_accepted(robot_receiver: RobotReceiver) -> None:
    robots = ChatRobots(robot_receiver.settings())
    message = accepted_notice()
    before = len(robot_receiver.accepted)
    try:
        assert robots.enabled == ["dingtalk", "wecom", "feishu"]
        for name, payload in (("dingtalk", chatbot.dingtalk(message)),
                              ("wecom", chatbot.wecom(message)),
                              ("feishu", chatbot.feishu(message))):
            assert await robots.send(name, payload) == name
    finally:
        await robots.aclose()
    got = dict(robot_receiver.accepted[before:])
    assert got["dingtalk"]["msgtype"] == "markdown"
    assert "19,888.00 元" in got["dingtalk"]["markdown"]["text"]
    assert got["wecom"]["markdown"]["content"].startswith("## 订单 O-77 已进入 ERP")
    assert got["feishu"]["msg_type"] == "post" and got["feishu"]["sign"]
    assert got["feishu"]["content"]["post"]["zh_cn"]["title"] == message.subject


@pytest.mark.parametrize("robot", ["dingtalk", "feishu"])
async def test_a_forged_signature_is_refused(robot_receiver: RobotReceiver, robot: str) -> None:
    forged = robot_receiver.settings(dingtalk_secret="SEC-not-the-secret",
                                     feishu_secret="not-the-secret")
    robots = ChatRobots(forged)
    try:
        with pytest.raises(PermanentError, match="sign mismatch"):
            await robots.send(robot, {"msgtype": "text", "text": {"content": "hi"}})
    finally:
        await robots.aclose()
    assert robot_receiver.refused[-1] == (robot, "sign mismatch")


@pytest.mark.parametrize("robot", ["dingtalk", "feishu"])
async def test_a_stale_timestamp_is_refused(robot_receiver: RobotReceiver, robot: str) -> None:
    robots = ChatRobots(robot_receiver.settings(), clock=lambda: time.time() - 2 * 3600)
    try:
        with pytest.raises(PermanentError, match="timestamp expired"):
            await robots.send(robot, {"msgtype": "text", "text": {"content": "hi"}})
    finally:
        await robots.aclose()


async def test_a_wrong_wecom_key_is_refused_and_never_shown(
        robot_receiver: RobotReceiver) -> None:
    leaked = "wecom-key-that-must-not-leak"
    robots = ChatRobots(robot_receiver.settings(
        wecom_webhook=f"{robot_receiver.url}/cgi-bin/webhook/send?key={leaked}"))
    try:
        with pytest.raises(PermanentError, match="invalid webhook url") as caught:
            await robots.send("wecom", {"msgtype": "text", "text": {"content": "hi"}})
    finally:
        await robots.aclose()
    assert leaked not in str(caught.value) and caught.value.__cause__ is None


async def test_notifier_posts_one_message_per_enabled_robot(
        robot_receiver: RobotReceiver) -> None:
    robots = ChatRobots(robot_receiver.settings(wecom_webhook=""))
    notifier = Notifier(mailer=None, robots=robots, tasks=None,  # type: ignore[arg-type]
                        settings=NotifySettings())
    before = len(robot_receiver.accepted)
    try:
        assert robots.enabled == ["dingtalk", "feishu"]
        for name in robots.enabled:
            await notifier.chat(name, accepted_notice())
    finally:
        await robots.aclose()
    assert [name for name, _ in robot_receiver.accepted[before:]] == ["dingtalk", "feishu"]


def test_rate_limits_and_outages_are_transient_refusals_permanent() -> None:
    limited = classify(RobotFault("dingtalk", 200, 130101, "send too fast"))
    assert isinstance(limited, TransientError) and limited.retry_after == 60.0
    assert isinstance(classify(RobotFault("wecom", 200, 45009, "freq")), TransientError)
    assert isinstance(classify(RobotFault("feishu", 503, None, "")), TransientError)
    assert isinstance(classify(RobotFault("feishu", 200, 19021, "sign")), PermanentError)
    assert isinstance(classify(ValueError("not json")), PermanentError)
