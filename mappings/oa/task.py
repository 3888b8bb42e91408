"""Follow-up tasks: an overdue invoice -> a canonical Task -> a CalDAV VTODO, and back.

The task's id is the VTODO's UID and is derived from the invoice, so creating it again is an
upsert of the same task. A VTODO whose STATUS is COMPLETED (or that has a COMPLETED time)
reads back as a completed task.
"""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.extras import absent
from crmhub.errors import MappingError

try:
    from icalendar import Calendar, Todo
except ImportError as exc:  # crmhub[oa] not installed: the CalDAV client refuses to start
    Calendar = Todo = absent("icalendar", "oa", "CalDAV tasks", exc)  # type: ignore[misc]
from mappings.oa.text import Language, money
from schemas.canonical import Invoice, Task

PRODID = "-//crmhub//oa tasks//EN"
_STATES = {"NEEDS-ACTION": "open", "IN-PROCESS": "open", "COMPLETED": "completed",
           "CANCELLED": "cancelled"}


def overdue_task_id(invoice_id: str) -> str:
    return f"crmhub-overdue-{invoice_id}"


def overdue_task(invoice: Invoice, assignee: str | None = None,
                 language: Language = "en") -> Task:
    """Follow up an overdue invoice: due today-ish, for the customer's sales owner."""
    open_amount = money(invoice.amount_residual, invoice.currency, language)
    if language == "zh":
        title = f"跟进逾期发票 {invoice.number}（客户 {invoice.customer_id}，未付 {open_amount}）"
        description = (f"发票 {invoice.number} 已于 {invoice.due_date.isoformat()} 到期。"
                       "请联系客户安排付款，完成后将此任务标记为已完成。")
    else:
        title = (f"Follow up overdue invoice {invoice.number} ({invoice.customer_id}, "
                 f"{open_amount} open)")
        description = (f"Invoice {invoice.number} was due on {invoice.due_date.isoformat()}. "
                       "Contact the customer about the payment, then mark this task completed.")
    return Task(id=overdue_task_id(invoice.id), title=title, description=description,
                assignee=assignee, due_on=invoice.due_date, invoice_id=invoice.id,
                order_id=invoice.order_id)


def to_vtodo(task: Task, stamp: datetime) -> str:
    """The task as an iCalendar VCALENDAR with one VTODO (`stamp` is its DTSTAMP)."""
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    todo = Todo()
    todo.add("uid", task.id)
    todo.add("dtstamp", stamp.astimezone(UTC))
    todo.add("summary", task.title)
    if task.description:
        todo.add("description", task.description)
    if task.due_on:
        todo.add("due", task.due_on)
    todo.add("status", {"open": "NEEDS-ACTION", "completed": "COMPLETED",
                        "cancelled": "CANCELLED"}[task.state])
    if task.completed_at:
        todo.add("completed", task.completed_at)
    if task.assignee:
        todo.add("attendee", f"mailto:{task.assignee}")
    if task.invoice_id:
        todo.add("x-crmhub-invoice", task.invoice_id)
    if task.order_id:
        todo.add("x-crmhub-order", task.order_id)
    calendar.add_component(todo)
    return str(calendar.to_ical().decode())


def from_vtodo(ical: str) -> Task:
    """A task read back from the CalDAV server (edited there by its owner)."""
    try:
        calendar = Calendar.from_ical(ical)
    except ValueError as exc:
        raise MappingError(f"not an iCalendar object: {exc}") from None
    todos = [c for c in calendar.walk("VTODO")]
    if len(todos) != 1:
        raise MappingError(f"expected one VTODO, found {len(todos)}")
    todo = todos[0]
    status = str(todo.get("status", "NEEDS-ACTION")).upper()
    completed = todo.get("completed")
    completed_at = completed.dt if completed is not None else None
    state = _STATES.get(status, "open")
    if completed_at is not None and state == "open":
        state = "completed"
    if isinstance(completed_at, datetime) and completed_at.tzinfo is None:
        completed_at = completed_at.replace(tzinfo=UTC)
    due = todo.get("due")
    due_on = due.dt if due is not None else None
    if isinstance(due_on, datetime):
        due_on = due_on.date()
    attendee = str(todo.get("attendee", "")).removeprefix("mailto:") or None
    return Task(id=str(todo["uid"]), title=str(todo.get("summary", "")) or str(todo["uid"]),
                description=str(todo["description"]) if todo.get("description") else None,
                assignee=attendee, due_on=due_on, state=state,
                invoice_id=str(todo["x-crmhub-invoice"]) if todo.get("x-crmhub-invoice") else None,
                order_id=str(todo["x-crmhub-order"]) if todo.get("x-crmhub-order") else None,
                completed_at=completed_at if state == "completed" else None)
