"""Follow-up tasks completed by their owners come back as events (a feed: CalDAV cannot push).

in:  the CalDAV task list (CALDAV_CALENDAR), polled with a sync token (RFC 6578)
out: canonical.task.v1 (task.completed)   key: task id (the VTODO UID)
cursor: the server's sync token, opaque, in the state store (caldav/tasks)
idempotency: event id = (feed, type, task id, "completed"): once per task
retry: transient (server down) -> backoff; a VTODO that cannot be read -> DLQ, move on
Only the hub's own tasks (UID crmhub-...) are reported.
"""

from __future__ import annotations

from connectors.caldav.client import SYSTEM, CaldavTodo, TaskList
from crmhub.feed import Change, Feed, Page
from mappings.oa.task import from_vtodo


async def read_changes(tasks: TaskList, position: str | None) -> Page[CaldavTodo]:
    return await tasks.changes(position)


def on_todo(record: CaldavTodo) -> list[Change]:
    if not record.uid.startswith("crmhub-"):
        return []
    todo = from_vtodo(record.ical)
    if todo.state != "completed":
        return []
    return [Change("task.completed", todo.id, todo, "completed")]


feed = Feed(name="oa_tasks", system=SYSTEM, stream="tasks", model=CaldavTodo,
            source=TaskList.from_env, read=read_changes, stamp=lambda r: r.seen_at,
            changes=on_todo, record_id=lambda r: r.uid, opaque_cursor=True)
