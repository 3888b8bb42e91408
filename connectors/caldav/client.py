"""Follow-up tasks in a CalDAV task list (the `caldav` library, run in a thread), and
classify(): the only place that knows the library's and the server's errors.

`upsert` writes a VTODO by its UID (the same task again overwrites it, never duplicates);
a task its owner already completed or cancelled is left as it is. `changes(token)` reads what
changed since a sync token (RFC 6578; the library falls back to a full listing when the server
has forgotten the token) and returns the next token.
"""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import datetime
from typing import Any

from connectors.extras import absent, require

try:
    import caldav
    import niquests
    from caldav.lib import error as dav_error
except ImportError as exc:  # crmhub[oa] not installed: refused when tasks are configured
    caldav = niquests = dav_error = absent("caldav", "oa", "CalDAV tasks", exc)
from pydantic import BaseModel, ConfigDict

from connectors.caldav.settings import CaldavSettings
from connectors.http import classify_status, classify_transport
from crmhub.errors import HubError, PermanentError, TransientError
from crmhub.feed import Page
from mappings.oa.task import from_vtodo, to_vtodo
from schemas.canonical import Task
from schemas.state import utcnow

SYSTEM = "caldav"


class CaldavTodo(BaseModel):
    """One VTODO as the server holds it (what the tasks feed reads)."""

    model_config = ConfigDict(extra="ignore")

    uid: str
    ical: str
    seen_at: datetime


class TaskList:
    def __init__(self, settings: CaldavSettings) -> None:
        require(caldav)
        self.settings = settings
        self._client: Any = None
        self._calendar: Any = None
        self._lock = threading.Lock()  # one request at a time on the library's session

    @classmethod
    def from_env(cls) -> TaskList:
        return cls(CaldavSettings())

    async def aclose(self) -> None:
        client, self._client, self._calendar = self._client, None, None
        if client is not None:
            await asyncio.to_thread(client.close)

    def _tasks(self) -> Any:
        if self._calendar is None:
            s = self.settings
            client_class: Any = caldav.DAVClient  # typed loosely by the library
            # An explicit URL (its TLS policy is checked in CaldavSettings): no DNS-based
            # service discovery that could send the client somewhere else.
            self._client = client_class(url=s.url, username=s.username,
                                        password=s.password.get_secret_value(),
                                        timeout=s.timeout_seconds, enable_rfc6764=False,
                                        ssl_verify_cert=str(s.ca_file) if s.ca_file else True)
            principal = self._client.principal()
            found = [c for c in principal.calendars()
                     if c.url.path.rstrip("/").endswith("/" + s.calendar)]
            self._calendar = found[0] if found else principal.make_calendar(
                name=s.calendar, cal_id=s.calendar, supported_calendar_component_set=["VTODO"])
        return self._calendar

    async def _run(self, what: str, fn: Any, *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                try:
                    return fn(*args)
                except Exception:
                    self._calendar = None  # reconnect next time
                    raise
        try:
            return await asyncio.to_thread(locked)
        except Exception as exc:
            raise classify(exc, what) from exc

    async def upsert(self, task: Task) -> str:
        """Create or update the VTODO with the task's UID; returns the UID."""
        def write() -> str:
            calendar = self._tasks()
            try:
                existing = calendar.todo_by_uid(task.id)
            except dav_error.NotFoundError:
                existing = None
            if existing is not None and from_vtodo(existing.data).state != "open":
                return task.id  # its owner finished it: do not reopen it
            calendar.add_todo(ical=to_vtodo(task, stamp=utcnow()))
            return task.id
        return str(await self._run("upsert", write))

    async def get(self, uid: str) -> Task | None:
        def read() -> Task | None:
            calendar = self._tasks()  # a 404 here is a wrong URL, not a missing task
            try:
                return from_vtodo(calendar.todo_by_uid(uid).data)
            except dav_error.NotFoundError:
                return None
        result = await self._run("get", read)
        return result if isinstance(result, Task) else None

    async def complete(self, uid: str) -> None:
        """Mark a task completed, as its owner would in a task app (demo and tests)."""
        def done() -> None:
            todo = self._tasks().todo_by_uid(uid)
            todo.complete()
        await self._run("complete", done)

    async def changes(self, token: str | None) -> Page[CaldavTodo]:
        """VTODOs changed since `token` (None: all), and the token to read from next."""
        def read() -> Page[CaldavTodo]:
            collection = self._tasks().objects_by_sync_token(sync_token=token or None,
                                                             load_objects=True)
            now = utcnow()
            records = []
            for item in collection:
                data = item.data if getattr(item, "data", None) else None
                if data and "VTODO" in data:
                    uid = str(item.icalendar_component.get("uid", ""))
                    records.append(CaldavTodo(uid=uid, ical=data, seen_at=now))
            return Page(records, str(collection.sync_token or token or ""))
        page = await self._run("changes", read)
        assert isinstance(page, Page)
        return page


def classify(exc: BaseException, what: str = "") -> HubError:
    """Every CalDAV failure as a hub error: connection problems and timeouts can pass; HTTP
    statuses go through the shared policy (connectors/http.py)."""
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, niquests.exceptions.SSLError):  # configuration: pause, say what
        return TransientError(f"caldav {what}: TLS with the server failed (its certificate "
                              f"does not verify?): {str(exc)[:200]}; check CALDAV_CA_FILE "
                              "and CALDAV_URL", system=SYSTEM)
    if isinstance(exc, niquests.exceptions.ConnectionError | niquests.exceptions.Timeout
                  | TimeoutError | ConnectionError):
        return classify_transport(SYSTEM, what, exc)
    status = _status_of(exc) if isinstance(exc, dav_error.DAVError) else None
    if isinstance(exc, dav_error.DAVError) and status is not None:
        # The library keeps no response headers, so no Retry-After: a 429 or 503 waits the
        # hub's own backoff. Radicale answers a wrong password with 401 (the default).
        return classify_status(SYSTEM, what, status, f"{type(exc).__name__}: {exc.reason}",
                               credentials_hint="CALDAV_USERNAME / CALDAV_PASSWORD")
    return PermanentError(f"caldav {what}: {type(exc).__name__}: {str(exc)[:300]}",
                          system=SYSTEM)


def _status_of(exc: dav_error.DAVError) -> int | None:
    """The HTTP status of a library error: its `status`, else the one its reason starts with
    (errors raised before the library kept statuses read "503 Service Unavailable ...")."""
    if isinstance(exc.status, int):
        return exc.status
    found = re.match(r"\s*([1-5]\d\d)\b", str(exc.reason))
    return int(found.group(1)) if found else None
