"""Async JSON-RPC client for Tryton, and classify(): the only place that knows Tryton's
HTTP statuses and fault shapes.

Logs in once (concurrent first calls share the login), reuses the session, logs in again when
the server says the session expired, always accepts gzip, keeps Decimal/date/datetime exact
(Tryton's tagged JSON), and bounds connections and time. Everything above this module sees
TransientError and PermanentError only, never httpx or a raw fault.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx

from connectors.http import HttpClient, classify_status, classify_transport, retry_after
from connectors.tryton.settings import TrytonSettings
from crmhub.errors import HubError, PermanentError, TransientError

SYSTEM = "tryton"
#: Tryton's login rate limiter answers 429 without Retry-After, and its window is long.
RATE_LIMIT_WAIT_SECONDS = 60.0
#: What Tryton means by a bare 4xx (it sends no body with them).
_STATUS_MEANING = {403: "no access to this method", 404: "no such database or method"}
#: Fault texts that mean "try again": lock waits, serialization failures, busy SQLite.
_TRANSIENT_FAULTS = ("deadlock", "could not serialize", "database is locked",
                     "could not obtain lock", "lock timeout", "canceling statement",
                     "server closed the connection", "too many clients")


class TrytonFault(Exception):
    """An answer Tryton gave instead of a result (HTTP status, and the JSON error if any)."""

    def __init__(self, method: str, status: int, error: Any = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{method}: HTTP {status} {error!r}"[:500])
        self.method, self.status, self.error, self.retry_after = method, status, error, retry_after


# --- Tryton's tagged JSON --------------------------------------------------------------------
def encode(value: Any) -> Any:
    """json.dumps default=: the objects Tryton's JSONDecoder turns back into Python values."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, datetime):
        if value.tzinfo is not None:  # Tryton's datetimes are naive UTC
            value = value.astimezone(UTC).replace(tzinfo=None)
        return {"__class__": "datetime", "year": value.year, "month": value.month,
                "day": value.day, "hour": value.hour, "minute": value.minute,
                "second": value.second, "microsecond": value.microsecond}
    if isinstance(value, date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, time):
        return {"__class__": "time", "hour": value.hour, "minute": value.minute,
                "second": value.second, "microsecond": value.microsecond}
    if isinstance(value, timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, bytes | bytearray):
        return {"__class__": "bytes", "base64": base64.encodebytes(value).decode()}
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"cannot send {type(value).__name__} to Tryton")


def decode(obj: dict[str, Any]) -> Any:
    """json.loads object_hook=: tagged objects back to Decimal, date, aware-UTC datetime ..."""
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "datetime":
        return datetime(obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"],
                        obj["second"], obj["microsecond"], tzinfo=UTC)
    if kind == "date":
        return date(obj["year"], obj["month"], obj["day"])
    if kind == "time":
        return time(obj["hour"], obj["minute"], obj["second"], obj["microsecond"])
    if kind == "timedelta":
        return timedelta(seconds=obj["seconds"])
    if kind == "bytes":
        return base64.decodebytes(obj["base64"].encode())
    return obj


# --- client ------------------------------------------------------------------------------------
class TrytonClient(HttpClient):
    def __init__(self, settings: TrytonSettings, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.url = f"{settings.url.rstrip('/')}/{settings.database}/rpc/"
        self.http = httpx.AsyncClient(
            transport=transport, headers={"Accept-Encoding": "gzip",
                                          "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=settings.max_connections,
                                max_keepalive_connections=settings.max_connections),
            timeout=httpx.Timeout(settings.timeout_seconds,
                                  connect=settings.connect_timeout_seconds))
        self.calls = 0  # HTTP requests, login included (benchmarks report calls per order)
        self.logins = 0
        self.context: dict[str, Any] = {}  # the user's preferences: company, language ...
        self._session: str | None = None
        self._login_lock = asyncio.Lock()
        self._ids = 0

    @classmethod
    def from_env(cls) -> TrytonClient:
        return cls(TrytonSettings())

    # -- session
    async def _login(self, stale: str | None) -> str:
        async with self._login_lock:
            if self._session is not None and self._session != stale:
                return self._session  # another call logged in meanwhile
            s = self.settings
            try:
                result = await self._post(
                    "common.db.login",
                    [s.user, {"password": s.password.get_secret_value()}, s.language], None)
                uid, token = int(result[0]), str(result[1])
                session = base64.b64encode(f"{s.user}:{uid}:{token}".encode()).decode()
                self.logins += 1
                self.context = await self._post("model.res.user.get_preferences", [True, {}],
                                                session)
            except TrytonFault as exc:
                # a refused login pauses the flows (classify); the request held the password:
                # keep it out of chains
                raise classify(exc) from None
            self._session = session
            return session

    async def call(self, method: str, *params: Any) -> Any:
        """One RPC call; logs in first if needed and once more if the session expired."""
        session = self._session or await self._login(None)
        try:
            return await self._post(method, list(params), session)
        except TrytonFault as exc:
            if exc.status not in (401, 403) or method.startswith("common."):
                raise classify(exc) from exc
            session = await self._login(session)  # expired or revoked: log in again, once
        try:
            return await self._post(method, list(params), session)
        except TrytonFault as exc:
            raise classify(exc) from exc

    async def _post(self, method: str, params: list[Any], session: str | None) -> Any:
        self._ids += 1
        body = json.dumps({"id": self._ids, "method": method, "params": params},
                          default=encode)
        headers = {"Authorization": f"Session {session}"} if session else {}
        self.calls += 1
        try:
            response = await self.http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise classify(exc, method) from exc
        if response.status_code != 200:
            raise TrytonFault(method, response.status_code,
                              response.text[:300] if response.status_code >= 500 else None,
                              retry_after(response.headers.get("Retry-After")))
        try:
            data = json.loads(response.content, object_hook=decode)
        except ValueError as exc:
            raise TransientError(f"tryton {method}: unreadable answer ({exc})",
                                 system=SYSTEM) from exc
        if data.get("error"):
            raise TrytonFault(method, 200, data["error"])
        return data.get("result")

    def context_with(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {**self.context, **(extra or {})}

    # -- model methods
    async def model(self, model: str, method: str, *args: Any,
                    context: Mapping[str, Any] | None = None) -> Any:
        if self._session is None:
            await self._login(None)  # the context comes with the login
        return await self.call(f"model.{model}.{method}", *args, self.context_with(context))

    async def search(self, model: str, domain: Sequence[Any], *, offset: int = 0,
                     limit: int | None = None, order: Sequence[Any] | None = None,
                     context: Mapping[str, Any] | None = None) -> list[int]:
        return list(await self.model(model, "search", domain, offset, limit, order,
                                     context=context))

    async def read(self, model: str, ids: Sequence[int], fields: Sequence[str], *,
                   context: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        if not ids:
            return []
        rows = await self.model(model, "read", list(ids), list(fields), context=context)
        by_id = {row["id"]: row for row in rows}
        return [by_id[i] for i in ids if i in by_id]

    async def search_read(self, model: str, domain: Sequence[Any], fields: Sequence[str], *,
                          offset: int = 0, limit: int | None = None,
                          order: Sequence[Any] | None = None,
                          context: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return list(await self.model(model, "search_read", domain, offset, limit, order,
                                     list(fields), context=context))

    async def create(self, model: str, values: Sequence[Mapping[str, Any]], *,
                     context: Mapping[str, Any] | None = None) -> list[int]:
        return list(await self.model(model, "create", list(values), context=context))

    async def write(self, model: str, ids: Sequence[int], values: Mapping[str, Any], *,
                    context: Mapping[str, Any] | None = None) -> None:
        await self.model(model, "write", list(ids), dict(values), context=context)

    async def delete(self, model: str, ids: Sequence[int], *,
                     context: Mapping[str, Any] | None = None) -> None:
        await self.model(model, "delete", list(ids), context=context)

    async def button(self, model: str, name: str, ids: Sequence[int], *,
                     context: Mapping[str, Any] | None = None) -> Any:
        return await self.model(model, name, list(ids), context=context)


def classify(exc: BaseException, method: str = "") -> HubError:
    """Every failure of a Tryton call as TransientError (a retry can help) or PermanentError
    (it cannot), with Tryton's own message kept and no credentials. HTTP statuses go through
    the shared policy (connectors/http.py); faults in a 200 answer are Tryton's own."""
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, httpx.TransportError):
        return classify_transport(SYSTEM, method, exc)
    if not isinstance(exc, TrytonFault):
        return PermanentError(f"tryton {method}: {type(exc).__name__}: {exc}", system=SYSTEM)
    method, status, error = exc.method, exc.status, exc.error
    if status != 200:
        login = method == "common.db.login"
        meaning = "" if login else _STATUS_MEANING.get(status, "")
        return classify_status(
            SYSTEM, method, status, str(error) if error else meaning,
            retry_after=exc.retry_after,
            # a minute rather than the hub's short first backoff (see the constant)
            rate_limit_wait=RATE_LIMIT_WAIT_SECONDS,
            # trytond answers a wrong password with 403 (so the login's 403 pauses); after
            # login, a 403 is the user's access to one method and is dead-lettered.
            credential_statuses=frozenset({401, 403}) if login else frozenset({401}),
            credentials_hint="TRYTON_USER / TRYTON_PASSWORD")
    name, detail = _fault(error)
    text = f"tryton {method}: {name}: {detail}" if name else f"tryton {method}: {detail}"
    if name == "ConcurrencyException" or any(w in detail.lower() for w in _TRANSIENT_FAULTS):
        return TransientError(text, system=SYSTEM)
    if "must be unique" in detail:
        # Two writers raced for a sequence or a key (SQLite-backed Tryton does): the retry
        # searches again and finds the record. A lasting duplicate pauses the flow with this
        # message in `crmhub status` rather than losing the write.
        return TransientError(text, system=SYSTEM)
    return PermanentError(text, system=SYSTEM)


def _fault(error: Any) -> tuple[str, str]:
    """(exception name, human message) of a JSON-RPC error: a TrytonException's args are
    [name, args]; any other server exception comes as [text, traceback]."""
    if isinstance(error, list | tuple) and error:
        name, args = error[0], error[1] if len(error) > 1 else ""
        if name in ("UserError", "UserWarning", "ConcurrencyException", "LoginException"):
            if isinstance(args, list | tuple):
                texts = [str(a) for a in args if isinstance(a, str) and a]
                if name == "UserWarning":
                    texts = texts[1:]  # the first item is the warning's key
                return str(name), " - ".join(texts)
            return str(name), str(args)
        return "", str(name)
    return "", str(error)
