"""Group chat robots (DingTalk, WeCom, Feishu): signing, sending, and classify(), the only
place that knows their answer codes.

Signing, as each vendor documents it:
- DingTalk: `timestamp` (ms) and `sign` = urlencode(base64(HMAC-SHA256(key=secret,
  msg="<timestamp>\\n<secret>"))) appended to the webhook's query.
- Feishu: `timestamp` (s) and `sign` = base64(HMAC-SHA256(key="<timestamp>\\n<secret>",
  msg="")) added to the JSON body.
- WeCom: no signature; the `key` in the webhook URL is the credential.
The webhook URLs hold credentials: they never appear in errors or logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx

from connectors.chatbots.settings import ChatbotSettings
from connectors.http import classify_status, classify_transport, retry_after
from crmhub.errors import HubError, PermanentError, TransientError

SYSTEM = "chatbots"
ROBOTS = ("dingtalk", "wecom", "feishu")

#: Answer codes that mean "too many messages, later": DingTalk 130101 (send too fast),
#: WeCom 45009 (api freq out of limit), Feishu 9499 / 11232 (frequency limited), and the
#: vendors' "system busy" codes (-1).
_RATE_LIMITED = {130101, 45009, 9499, 11232, -1}


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class RobotFault(Exception):
    def __init__(self, robot: str, status: int, code: int | None, message: str,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{robot}: HTTP {status} code {code} {message}"[:300])
        self.robot, self.status, self.code, self.message = robot, status, code, message
        self.retry_after = retry_after


class ChatRobots:
    def __init__(self, settings: ChatbotSettings, *, clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.http = httpx.AsyncClient(timeout=settings.timeout_seconds, transport=transport)

    @classmethod
    def from_env(cls) -> ChatRobots:
        return cls(ChatbotSettings())

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def enabled(self) -> list[str]:
        s = self.settings
        webhooks = {"dingtalk": s.dingtalk_webhook, "wecom": s.wecom_webhook,
                    "feishu": s.feishu_webhook}
        return [name for name in ROBOTS if webhooks[name].get_secret_value()]

    def request(self, robot: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The URL and body to POST for one robot, signed as that robot wants."""
        s = self.settings
        if robot == "dingtalk":
            url = s.dingtalk_webhook.get_secret_value()
            secret = s.dingtalk_secret.get_secret_value()
            if secret:
                stamp = int(self.clock() * 1000)
                sign = urllib.parse.quote_plus(dingtalk_sign(secret, stamp))
                url += ("&" if "?" in url else "?") + f"timestamp={stamp}&sign={sign}"
            return url, payload
        if robot == "feishu":
            secret = s.feishu_secret.get_secret_value()
            body = dict(payload)
            if secret:
                stamp = int(self.clock())
                body = {"timestamp": str(stamp), "sign": feishu_sign(secret, stamp), **payload}
            return s.feishu_webhook.get_secret_value(), body
        if robot == "wecom":
            return s.wecom_webhook.get_secret_value(), payload
        raise PermanentError(f"unknown chat robot {robot!r}", system=SYSTEM)

    async def send(self, robot: str, payload: dict[str, Any]) -> str:
        """Post one message; returns the robot's name. Errors never show the webhook URL."""
        url, body = self.request(robot, payload)
        try:
            answer = await self.http.post(url, json=body)
            try:
                data = answer.json() if answer.content else {}
            except ValueError:
                if answer.status_code == 200:
                    raise  # a 200 that is not JSON: the URL is not a robot's
                data = {}  # a proxy's or a busy server's page: its status decides
            code = data.get("errcode", data.get("code", 0)) if isinstance(data, dict) else None
            if answer.status_code != 200 or code not in (0, None):
                message = str(data.get("errmsg", data.get("msg", "")) if isinstance(data, dict)
                              else "")[:200]
                raise RobotFault(robot, answer.status_code,
                                 code if isinstance(code, int) else None, message,
                                 retry_after(answer.headers.get("Retry-After")))
        except (httpx.HTTPError, RobotFault, ValueError) as exc:
            raise classify(exc, robot) from None  # the cause holds the URL: not chained
        return robot


def classify(exc: BaseException, robot: str = "") -> HubError:
    """Every robot failure as a hub error: the vendors' rate-limit codes wait a minute, other
    error codes in a 200 answer (bad signature, bad key, bad payload) are refusals, and HTTP
    statuses go through the shared policy (connectors/http.py)."""
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, httpx.TransportError):
        # the webhook URL is the credential: keep even httpx's message out, as a proxy's
        # error text may quote the URL
        return classify_transport(SYSTEM, robot, exc, show_message=False)
    if isinstance(exc, RobotFault):
        if exc.code in _RATE_LIMITED:
            return TransientError(f"{exc}", system=SYSTEM, retry_after=60.0)
        if exc.status == 200:
            return PermanentError(f"{exc}", system=SYSTEM)
        return classify_status(
            SYSTEM, robot, exc.status, f"code {exc.code} {exc.message}",
            retry_after=exc.retry_after,
            # A refused robot key is dead-lettered, not paused: robots are optional extras
            # in notice flows that also send mail, and one wrong key must not hold back the
            # mails; its dead letters replay once the key is fixed.
            refused_credentials_pause=False, credentials_hint=f"CHATBOTS_{robot.upper()}_*")
    return PermanentError(f"{robot} robot: {type(exc).__name__}", system=SYSTEM)
