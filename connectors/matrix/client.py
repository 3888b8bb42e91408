"""Async Matrix client-server API client for the hub's bot, and classify(): the only place
that knows Matrix's HTTP statuses and errcodes.

Logs in once with a fixed device id (Synapse scopes transaction ids per device, so a re-login
keeps `send` idempotent), logs in again when the server says the token is unknown or expired,
and turns 429 `retry_after_ms` into TransientError(retry_after=...). Everything above this
module sees TransientError and PermanentError only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from connectors.http import HttpClient, classify_status, classify_transport, retry_after
from connectors.matrix.settings import MatrixSettings
from crmhub.errors import HubError, PermanentError, TransientError

SYSTEM = "matrix"
_RELOGIN = frozenset({"M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"})


class MatrixFault(Exception):
    """An error answer: HTTP status, Matrix errcode and message, retry_after_ms if any."""

    def __init__(self, what: str, status: int, errcode: str = "", error: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(f"{what}: HTTP {status} {errcode} {error}".strip()[:500])
        self.what, self.status, self.errcode, self.error = what, status, errcode, error
        self.retry_after = retry_after


@dataclass(frozen=True)
class SyncBatch:
    """One /sync answer for one room: its timeline events (oldest first) and the next token."""

    next_batch: str
    events: list[dict[str, Any]]


def _q(value: str) -> str:
    return quote(value, safe="")


class MatrixClient(HttpClient):
    def __init__(self, settings: MatrixSettings, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.http = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"), transport=transport,
            timeout=httpx.Timeout(settings.timeout_seconds + settings.sync_timeout_ms / 1000))
        self.token: str | None = None
        self.user_id: str | None = None
        self.logins = 0
        self._login_lock = asyncio.Lock()

    @classmethod
    def from_env(cls) -> MatrixClient:
        return cls(MatrixSettings())

    @property
    def room_id(self) -> str:
        return self.settings.room_id

    # -- session --------------------------------------------------------------------------
    async def login(self, stale: str | None = None) -> str:
        """Log in (once for concurrent callers); `stale` is the token the server refused."""
        async with self._login_lock:
            if self.token is not None and self.token != stale:
                return self.token
            body = {"type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": self.settings.user},
                    "password": self.settings.password.get_secret_value(),
                    "device_id": self.settings.device_id,
                    "initial_device_display_name": "crmhub"}
            answer = await self._send("login", "POST", "/_matrix/client/v3/login", body, None)
            self.token, self.user_id = str(answer["access_token"]), str(answer["user_id"])
            self.logins += 1
            return self.token

    async def call(self, what: str, method: str, path: str, body: Any = None,
                   params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One authenticated request; a refused token means one fresh login and one retry."""
        token = self.token or await self.login()
        try:
            return await self._send(what, method, path, body, token, params)
        except HubError as exc:
            if getattr(exc.__cause__, "errcode", "") not in _RELOGIN:
                raise
        token = await self.login(stale=token)
        return await self._send(what, method, path, body, token, params)

    async def _send(self, what: str, method: str, path: str, body: Any, token: str | None,
                    params: Mapping[str, str] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            answer = await self.http.request(method, path, json=body, headers=headers,
                                             params=params)
            if answer.status_code != 200:
                raise _fault(what, answer)
            data = answer.json()
        except (httpx.HTTPError, MatrixFault, ValueError) as exc:
            raise classify(exc) from exc
        if not isinstance(data, dict):
            raise PermanentError(f"matrix {what}: answer is not a JSON object", system=SYSTEM)
        return data

    # -- rooms ----------------------------------------------------------------------------
    async def send(self, room_id: str, txn_id: str, content: Mapping[str, Any],
                   event_type: str = "m.room.message") -> str:
        """Send an event; the same txn_id (per device) returns the same event id again."""
        path = (f"/_matrix/client/v3/rooms/{_q(room_id)}/send/{_q(event_type)}/{_q(txn_id)}")
        answer = await self.call("send", "PUT", path, dict(content))
        return str(answer["event_id"])

    async def event(self, room_id: str, event_id: str) -> dict[str, Any]:
        return await self.call("event", "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/event/"
                               f"{_q(event_id)}")

    async def sync(self, room_id: str, since: str | None, limit: int = 200) -> SyncBatch:
        """The room's new timeline events since `since` (None: the recent history).

        A gap (`limited`) is filled from /messages back to `since`, so no event is skipped.
        """
        room_filter = {"room": {"rooms": [room_id], "timeline": {"limit": limit},
                                "state": {"lazy_load_members": True}, "ephemeral":
                                {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
                       "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}}
        params = {"filter": json.dumps(room_filter), "timeout": str(self.settings.sync_timeout_ms)}
        if since:
            params["since"] = since
        answer = await self.call("sync", "GET", "/_matrix/client/v3/sync", params=params)
        room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
        timeline = room.get("timeline", {})
        events = list(timeline.get("events", []))
        if timeline.get("limited") and since and timeline.get("prev_batch"):
            events = await self._gap(room_id, timeline["prev_batch"], since) + events
        return SyncBatch(str(answer["next_batch"]), events)

    async def _gap(self, room_id: str, start: str, stop: str) -> list[dict[str, Any]]:
        older: list[dict[str, Any]] = []
        token: str | None = start
        while token:
            page = await self.call("messages", "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}"
                                   "/messages", params={"from": token, "to": stop, "dir": "b",
                                                        "limit": "200"})
            chunk = page.get("chunk", [])
            older.extend(chunk)
            token = page.get("end") if chunk else None
        return list(reversed(older))


def _fault(what: str, answer: httpx.Response) -> MatrixFault:
    try:
        body = answer.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    retry_ms = body.get("retry_after_ms")
    wait = float(retry_ms) / 1000 if isinstance(retry_ms, int | float) else None
    if wait is None:
        wait = retry_after(answer.headers.get("Retry-After"))
    return MatrixFault(what, answer.status_code, str(body.get("errcode", "")),
                       str(body.get("error", ""))[:200], wait)


def classify(exc: BaseException) -> HubError:
    """Every failure of a Matrix call as TransientError (a retry can help) or PermanentError.
    HTTP statuses go through the shared policy (connectors/http.py)."""
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, httpx.TransportError):
        return classify_transport(SYSTEM, "", exc)
    if not isinstance(exc, MatrixFault):
        return PermanentError(f"matrix: {type(exc).__name__}: {exc}", system=SYSTEM)
    if exc.errcode in _RELOGIN:
        # the access token the bot holds is gone (logout, expiry): call() logs in again and
        # retries once; if that races, the step's retry logs in afresh
        return TransientError(f"matrix {exc.what}: token refused ({exc.errcode})",
                              system=SYSTEM)
    return classify_status(
        SYSTEM, exc.what, 429 if exc.errcode == "M_LIMIT_EXCEEDED" else exc.status,
        f"{exc.errcode} {exc.error}", retry_after=exc.retry_after,
        # Synapse's retry_after_ms is usually there; when not, its limiter refills in seconds
        rate_limit_wait=5.0,
        # Synapse answers a wrong password with 403 M_FORBIDDEN (so the login's 403 pauses);
        # after login, a 403 is the bot's rights in one room and is dead-lettered.
        credential_statuses=frozenset({401, 403}) if exc.what == "login" else frozenset({401}),
        credentials_hint="MATRIX_USER / MATRIX_PASSWORD")
