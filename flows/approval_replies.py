"""Approvers' replies in the OA chat become decisions; silence becomes a reminder, then expiry.

in:  the approval room, polled with Matrix /sync (a feed: the hub pulls)
out: canonical.approval.v1 (approval.decided: approved / rejected with approver and comment,
     or expired)   key: approval id
cursor: opaque, in the state store (matrix/approvals): the /sync next_batch token plus the
        approvals still pending (seen as the bot's requests in the room), each with its
        request event id and whether it was reminded
A reply counts when it is a Matrix reply (m.relates_to / m.in_reply_to) to a request (or to
its reminder), says APPROVE or REJECT [reason], and comes from one of APPROVAL_APPROVERS;
any other reply changes nothing and is logged. The first decision wins: the event id is
derived from (feed, approval id, "decided"), so a second one is dropped by the ledger.
Reminders and acknowledgements are posted with txn ids "<approval id>.reminder" / ".decided".
idempotency: event ids per approval + Matrix txn ids; re-reading a batch republishes nothing
retry: transient (Matrix down, 429) -> backoff, the cursor stays where it was
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.matrix.client import SYSTEM as MATRIX
from crmhub.feed import Change, Feed, Page
from flows.oa import ApprovalDesk
from mappings.oa import approval
from schemas.canonical import Approval
from schemas.state import utcnow

log = logging.getLogger(__name__)
REMINDER_KEY = "org.crmhub.approval_id"


async def read_replies(desk: ApprovalDesk, position: str | None) -> Page[Approval]:
    matrix, rules, room = desk.matrix, desk.rules, desk.matrix.room_id
    if not rules.enabled:
        return Page([], position or "")  # no approvers: nothing to read, Matrix not needed
    state: dict[str, Any] = json.loads(position) if position else {"since": None, "pending": {}}
    pending: dict[str, dict[str, Any]] = state["pending"]
    if matrix.user_id is None:
        await matrix.login()
    batch = await matrix.sync(room, state["since"])
    decided: list[Approval] = []
    for event in batch.events:
        if event.get("type") != "m.room.message":
            continue
        content, sender = event.get("content") or {}, str(event.get("sender", ""))
        asked = approval.pending_from_content(content)
        if asked is not None and sender == matrix.user_id:
            pending.setdefault(asked.id, {"approval": asked.model_dump(mode="json"),
                                          "event_id": event["event_id"], "reminded": False})
            continue
        target = approval.replied_to(content)
        verdict = approval.read_reply(str(content.get("body", ""))) if target else None
        if target is None or verdict is None:
            continue
        entry = await _request_for(desk, pending, target)
        if entry is None:
            continue
        if sender not in rules.approvers:
            log.warning("reply %s from %s to %s ignored: not an approver", verdict.state,
                        sender, entry["approval"]["id"], extra={"flow": "approval_replies"})
            continue
        at = datetime.fromtimestamp(int(event.get("origin_server_ts", 0)) / 1000, tz=UTC)
        pending.pop(entry["approval"]["id"], None)
        decided.append(approval.decide(Approval.model_validate(entry["approval"]), verdict,
                                       sender, at))
    now = utcnow()
    for approval_id, entry in list(pending.items()):
        asked = Approval.model_validate(entry["approval"])
        if now >= asked.requested_at + timedelta(seconds=rules.expiry_seconds):
            pending.pop(approval_id)
            decided.append(approval.expire(asked, now))
        elif (now >= asked.requested_at + timedelta(seconds=rules.reminder_seconds)
              and not entry["reminded"]):
            content = approval.notice_content(asked, rules.language, "reminder")
            content[REMINDER_KEY] = approval_id
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": entry["event_id"]}}
            await matrix.send(room, f"{approval_id}.reminder", content)
            entry["reminded"] = True
    for done in decided:
        await matrix.send(room, f"{done.id}.decided",
                          approval.notice_content(done, rules.language, "decided"))
    state["since"] = batch.next_batch
    return Page(decided, json.dumps(state, sort_keys=True))


async def _request_for(desk: ApprovalDesk, pending: dict[str, dict[str, Any]],
                       event_id: str) -> dict[str, Any] | None:
    """The pending request a reply answers: by its event id or its reminder's; a request the
    cursor does not know (older than the feed) is read back from the room."""
    for entry in pending.values():
        if entry["event_id"] == event_id:
            return entry
    answered = await desk.matrix.event(desk.matrix.room_id, event_id)
    content = answered.get("content") or {}
    reminded = content.get(REMINDER_KEY)
    if isinstance(reminded, str):
        return pending.get(reminded)
    asked = approval.pending_from_content(content)
    if asked is None or answered.get("sender") != desk.matrix.user_id:
        return None
    return {"approval": asked.model_dump(mode="json"), "event_id": event_id, "reminded": False}


def on_decision(decided: Approval) -> list[Change]:
    return [Change("approval.decided", decided.id, decided, "decided")]


feed = Feed(name="approval_replies", system=MATRIX, stream="approvals", model=Approval,
            source=ApprovalDesk.from_env, read=read_replies,
            stamp=lambda a: a.decided_at or a.requested_at, changes=on_decision,
            record_id=lambda a: a.id, opaque_cursor=True)
