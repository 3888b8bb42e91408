"""The real OA servers, one each per session: Synapse (Matrix), aiosmtpd (mail), Radicale
(CalDAV tasks); and a local receiver that checks the chat robots' signatures like the vendors.

A server that cannot be built or started fails the tests that need it, with the reason.
Tests share each server, so each one makes its own Matrix room, mail recipients and task UIDs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest

from connectors.caldav.settings import CaldavSettings
from connectors.chatbots.settings import ChatbotSettings
from connectors.matrix.settings import MatrixSettings
from connectors.smtp.settings import SmtpSettings
from crmhub.dev.sandbox import synapse
from crmhub.dev.sandbox.oa import MailServer, TaskServer
from crmhub.dev.sandbox.synapse import SynapseServer
from flows.oa import approval_rules
from tests.connectors.tryton.conftest import started as tryton_started

T = TypeVar("T")


def start_or_fail(what: str, start: Callable[[], T]) -> T:
    try:
        return start()
    except RuntimeError as exc:
        pytest.fail(f"the {what} sandbox did not start: {exc}")


@pytest.fixture(scope="session")
def synapse_server() -> Iterator[SynapseServer]:
    server = start_or_fail("Synapse", SynapseServer().start)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mail_server() -> Iterator[MailServer]:
    server = start_or_fail("aiosmtpd", MailServer().start)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def task_server() -> Iterator[TaskServer]:
    server = start_or_fail("Radicale", TaskServer().start)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def erp_server() -> Iterator[Any]:
    """The seeded Tryton sandbox (the ERP the approved orders go to)."""
    yield from tryton_started()


@pytest.fixture(autouse=True)
def _fresh_approval_rules() -> Iterator[None]:
    approval_rules.cache_clear()
    yield
    approval_rules.cache_clear()


@dataclass
class Room:
    """A room of the test's own, with the bot, both approvers and the non-approver in it."""

    server: SynapseServer
    room_id: str
    tokens: dict[str, str]

    def settings(self) -> MatrixSettings:
        return MatrixSettings(url=self.server.url, user=synapse.BOT, password=synapse.PASSWORD,
                              room_id=self.room_id)

    def say(self, who: str, body: str, reply_to: str | None = None) -> str:
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        room = urllib.parse.quote(self.room_id, safe="")
        answer = httpx.put(f"{self.server.url}/_matrix/client/v3/rooms/{room}/send/"
                           f"m.room.message/{uuid.uuid4().hex}", json=content,
                           headers={"Authorization": f"Bearer {self.tokens[who]}"})
        answer.raise_for_status()
        return str(answer.json()["event_id"])

    def messages(self) -> list[dict[str, Any]]:
        room = urllib.parse.quote(self.room_id, safe="")
        answer = httpx.get(f"{self.server.url}/_matrix/client/v3/rooms/{room}/messages",
                           params={"dir": "b", "limit": "100"},
                           headers={"Authorization": f"Bearer {self.tokens[synapse.BOT]}"})
        answer.raise_for_status()
        return [e for e in reversed(answer.json()["chunk"]) if e["type"] == "m.room.message"]


@pytest.fixture
def room(synapse_server: SynapseServer) -> Room:
    tokens = {name: synapse_server.login(name, device_id=f"TEST-{name}")
              for name in synapse.USERS}
    people = [synapse.user_id(n) for n in synapse.USERS if n != synapse.BOT]
    answer = httpx.post(f"{synapse_server.url}/_matrix/client/v3/createRoom",
                        json={"preset": "private_chat", "invite": people,
                              "name": f"approvals {uuid.uuid4().hex[:6]}"},
                        headers={"Authorization": f"Bearer {tokens[synapse.BOT]}"})
    answer.raise_for_status()
    room_id = str(answer.json()["room_id"])
    for name in synapse.USERS:
        if name != synapse.BOT:
            httpx.post(f"{synapse_server.url}/_matrix/client/v3/join/"
                       f"{urllib.parse.quote(room_id, safe='')}", json={},
                       headers={"Authorization": f"Bearer {tokens[name]}"}).raise_for_status()
    return Room(synapse_server, room_id, tokens)


def smtp_settings(server: MailServer) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=server.port or 0,
                        sender="crmhub <crmhub@example.com>")


def caldav_settings(server: TaskServer, calendar: str) -> CaldavSettings:
    return CaldavSettings(url=server.url, username=server.user, password=server.password,
                          calendar=calendar)


def mails_to(server: MailServer, address: str) -> list[Any]:
    return [m for m in server.messages() if address in str(m["To"])]


# -- chat robot receiver ---------------------------------------------------------------------
# Checks each request as the vendors document it, independently of connectors/chatbots.
DINGTALK_SECRET = "SEC-dingtalk-test-secret"
FEISHU_SECRET = "feishu-test-secret"
WECOM_KEY = "wecom-test-key"
MAX_SKEW_SECONDS = 3600  # DingTalk and Feishu refuse timestamps more than an hour off


@dataclass
class RobotReceiver:
    url: str
    accepted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    def settings(self, **overrides: str) -> ChatbotSettings:
        values = dict(
            dingtalk_webhook=f"{self.url}/robot/send?access_token=ding-token",
            dingtalk_secret=DINGTALK_SECRET,
            wecom_webhook=f"{self.url}/cgi-bin/webhook/send?key={WECOM_KEY}",
            feishu_webhook=f"{self.url}/open-apis/bot/v2/hook/feishu-hook",
            feishu_secret=FEISHU_SECRET)
        values.update(overrides)
        return ChatbotSettings(**values)  # type: ignore[arg-type]


def _check_dingtalk(query: dict[str, str]) -> str | None:
    if query.get("access_token") != "ding-token":
        return "bad access_token"
    stamp, sign = query.get("timestamp", ""), query.get("sign", "")
    if not stamp.isdigit() or abs(time.time() * 1000 - int(stamp)) > MAX_SKEW_SECONDS * 1000:
        return "timestamp expired"
    want = base64.b64encode(hmac.new(DINGTALK_SECRET.encode(),
                                     f"{stamp}\n{DINGTALK_SECRET}".encode(),
                                     hashlib.sha256).digest()).decode()
    return None if hmac.compare_digest(sign, want) else "sign mismatch"


def _check_feishu(body: dict[str, Any]) -> str | None:
    stamp, sign = str(body.get("timestamp", "")), str(body.get("sign", ""))
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > MAX_SKEW_SECONDS:
        return "timestamp expired"
    want = base64.b64encode(hmac.new(f"{stamp}\n{FEISHU_SECRET}".encode(), b"",
                                     hashlib.sha256).digest()).decode()
    return None if hmac.compare_digest(sign, want) else "sign mismatch"


@pytest.fixture(scope="session")
def robot_receiver() -> Iterator[RobotReceiver]:
    receiver = RobotReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if parts.path == "/robot/send":
                robot, problem = "dingtalk", _check_dingtalk(query)
                answer = {"errcode": 310000 if problem else 0, "errmsg": problem or "ok"}
            elif parts.path == "/cgi-bin/webhook/send":
                robot = "wecom"
                problem = None if query.get("key") == WECOM_KEY else "invalid webhook url"
                answer = {"errcode": 93000 if problem else 0, "errmsg": problem or "ok"}
            else:
                robot, problem = "feishu", _check_feishu(body)
                answer = {"code": 19021 if problem else 0, "msg": problem or "success"}
            if problem:
                receiver.refused.append((robot, problem))
            else:
                receiver.accepted.append((robot, body))
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
