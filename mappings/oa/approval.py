"""The approval gate, pure: which won orders need approval, the request posted to the OA chat
(Matrix), and how an approver's reply becomes a decision.

Rules are data (`ApprovalRules`, filled from APPROVAL_* settings by the flows). Reasons are
kept structured so each message can say them in its own language; `Approval.reasons` carries
them in English. The request's Matrix content carries the approval itself under
`org.crmhub.approval`, so a reply can be matched to it from the room alone.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crmhub.errors import MissingDependency
from mappings.base import XrefLookup
from mappings.oa.text import Language, esc, money
from schemas.canonical import Approval, Order

SYSTEM = "oa"
#: Key of the approval inside the request's Matrix event content.
CONTENT_KEY = "org.crmhub.approval"

_APPROVE = {"APPROVE", "APPROVED", "YES", "OK", "批准", "同意"}
_REJECT = {"REJECT", "REJECTED", "NO", "拒绝", "驳回"}
_FINAL = ("approved", "rejected", "expired")


class ApprovalRules(BaseModel):
    """When a won order needs approval, who decides, and how long they have."""

    model_config = ConfigDict(extra="forbid")

    amount_limits: dict[str, Decimal] = Field(default_factory=lambda: {
        "EUR": Decimal(50_000), "USD": Decimal(50_000), "CNY": Decimal(350_000),
        "JPY": Decimal(7_500_000)})
    """Order total (tax included) above which approval is needed, per currency. A currency
    without a limit never needs approval for its amount."""
    discount_percent: Decimal | None = Decimal(15)
    """A line discount above this percentage needs approval (None: no discount rule)."""
    credit_hold: bool = True
    """Orders of customers on credit hold need approval."""
    approvers: list[str] = Field(default_factory=list)
    """Matrix user ids who may decide. Empty: the gate is off, no order waits."""
    reminder_seconds: float = Field(default=4 * 3600, gt=0)
    """One reminder in the room after this long without a decision."""
    expiry_seconds: float = Field(default=48 * 3600, gt=0)
    """Then the approval expires and the order never reaches the ERP. Orders waiting for
    approval stay parked at least this + 1 h, whatever CRMHUB_PARK_TTL_SECONDS says."""
    language: Language = "en"
    """Language of the room messages (en, zh)."""

    @property
    def enabled(self) -> bool:
        return bool(self.approvers)


class Reason(BaseModel):
    """Why an order needs approval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Literal["amount", "discount", "credit_hold"]
    currency: str | None = None
    value: Decimal | None = None
    limit: Decimal | None = None
    customer_id: str | None = None
    line_no: int | None = None


class CustomerFacts(BaseModel):
    """What the gate and the notices keep about a customer (from canonical.customer.v1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    credit_hold: bool = False
    owner: str | None = None


def approval_id(order_id: str) -> str:
    """The approval of an order: deterministic, so a repeated request is the same one."""
    return f"approval-{order_id}"


def facts_external_id(customer_id: str, facts: CustomerFacts) -> str:
    """Customer facts as the xref's external id (unique per customer: it starts with the id)."""
    text = f"{customer_id}\t{'hold' if facts.credit_hold else 'ok'}\t{facts.owner or ''}"
    return text if len(text) <= 256 else f"{customer_id}\t{'hold' if facts.credit_hold else 'ok'}\t"


def read_facts(external_id: str | None) -> CustomerFacts:
    """The facts bound by customer_facts; an unknown customer is not on hold and has no owner."""
    if not external_id:
        return CustomerFacts()
    _, hold, owner = (external_id.split("\t") + ["", ""])[:3]
    return CustomerFacts(credit_hold=hold == "hold", owner=owner or None)


def customer_facts(order: Order, xref: XrefLookup) -> CustomerFacts:
    return read_facts(xref.get("customer", order.customer_id, SYSTEM))


def needs_approval(order: Order, rules: ApprovalRules,
                   facts: CustomerFacts | None = None) -> list[Reason]:
    """Every reason this won order needs approval; empty when it may go straight on."""
    reasons: list[Reason] = []
    limit = rules.amount_limits.get(order.currency)
    if limit is not None and order.total_or_net > limit:
        reasons.append(Reason(code="amount", currency=order.currency, value=order.total_or_net,
                              limit=limit))
    if rules.discount_percent is not None:
        for line in order.lines:
            if line.discount_percent > rules.discount_percent:
                reasons.append(Reason(code="discount", value=line.discount_percent,
                                      limit=rules.discount_percent, line_no=line.line_no))
                break
    if rules.credit_hold and facts is not None and facts.credit_hold:
        reasons.append(Reason(code="credit_hold", customer_id=order.customer_id))
    return reasons


def describe(reason: Reason, language: Language = "en") -> str:
    if reason.code == "amount":
        assert reason.value is not None and reason.limit is not None and reason.currency
        total, limit = (money(reason.value, reason.currency, language),
                        money(reason.limit, reason.currency, language))
        if language == "zh":
            return f"订单总额 {total} 超过审批限额 {limit}"
        return f"total {total} is above the approval limit of {limit}"
    if reason.code == "discount":
        if language == "zh":
            return f"第 {reason.line_no} 行折扣 {reason.value}% 超过 {reason.limit}%"
        return (f"line {reason.line_no} has a discount of {reason.value}% "
                f"(more than {reason.limit}%)")
    if language == "zh":
        return f"客户 {reason.customer_id} 处于信用冻结状态"
    return f"customer {reason.customer_id} is on credit hold"


def request(order: Order, reasons: list[Reason], requested_at: datetime) -> Approval:
    """The pending approval of an order."""
    return Approval(id=approval_id(order.id), order_id=order.id, state="pending",
                    reasons=[describe(reason) for reason in reasons], requested_at=requested_at)


def request_content(order: Order, reasons: list[Reason], approval: Approval,
                    language: Language = "en") -> dict[str, Any]:
    """The Matrix message asking for approval: text, HTML, and the approval for the replies."""
    total = money(order.total_or_net, order.currency, language)
    why = [describe(reason, language) for reason in reasons]
    deal = f" (deal {order.deal_id})" if order.deal_id and language == "en" else (
        f"（商机 {order.deal_id}）" if order.deal_id else "")
    if language == "zh":
        title = f"订单 {order.id}{deal or ' '}需要审批：客户 {order.customer_id}，总额 {total}"
        ask = "请回复本消息：APPROVE（批准）或 REJECT 原因（驳回）。"
        label = "原因"
    else:
        title = (f"Approval needed for order {order.id}{deal}: customer {order.customer_id}, "
                 f"total {total}")
        ask = "Reply to this message with APPROVE, or REJECT and a reason."
        label = "Why"
    body = "\n".join([title, *(f"- {label}: {w}" for w in why), ask, f"[{approval.id}]"])
    items = "".join(f"<li>{esc(w)}</li>" for w in why)
    formatted = (f"<p><strong>{esc(title)}</strong></p><ul>{items}</ul><p>{esc(ask)}</p>"
                 f"<p><code>{esc(approval.id)}</code></p>")
    return {"msgtype": "m.text", "body": body, "format": "org.matrix.custom.html",
            "formatted_body": formatted,
            CONTENT_KEY: approval.model_dump(mode="json")}


def pending_from_content(content: dict[str, Any]) -> Approval | None:
    """The approval a request message carries (None: not one of our requests)."""
    data = content.get(CONTENT_KEY)
    if not isinstance(data, dict):
        return None
    try:
        approval = Approval.model_validate(data)
    except ValueError:
        return None
    return approval if approval.state == "pending" else None


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["approved", "rejected"]
    comment: str | None = None


def read_reply(body: str) -> Verdict | None:
    """APPROVE / REJECT <reason> from a reply's text (the quoted fallback lines are skipped);
    None when the reply says neither."""
    lines = [line.strip() for line in body.splitlines()
             if line.strip() and not line.lstrip().startswith(">")]
    if not lines:
        return None
    text = " ".join(lines)
    match = re.match(r"^([A-Za-z]+|批准|同意|拒绝|驳回)[\s:：,，.。!-]*(.*)$", text, re.S)
    if match is None:
        return None
    word, rest = match.group(1), match.group(2).strip()
    keyword = word.upper() if word.isascii() else word
    if keyword in _APPROVE:
        return Verdict(state="approved", comment=rest or None)
    if keyword in _REJECT:
        return Verdict(state="rejected", comment=rest or None)
    return None


def replied_to(content: dict[str, Any]) -> str | None:
    """The event id a message replies to (m.relates_to / m.in_reply_to), if any."""
    relates = content.get("m.relates_to")
    if not isinstance(relates, dict):
        return None
    reply = relates.get("m.in_reply_to")
    if isinstance(reply, dict) and isinstance(reply.get("event_id"), str):
        return str(reply["event_id"])
    return None


def decide(pending: Approval, verdict: Verdict, approver: str, at: datetime) -> Approval:
    return pending.model_copy(update={"state": verdict.state, "approver": approver,
                                      "comment": verdict.comment,
                                      "decided_at": max(at, pending.requested_at)})


def expire(pending: Approval, at: datetime) -> Approval:
    return pending.model_copy(update={"state": "expired", "decided_at": at,
                                      "comment": "no decision in time"})


def notice_content(approval: Approval, language: Language = "en",
                   kind: Literal["reminder", "decided"] = "decided") -> dict[str, Any]:
    """The bot's follow-up in the room: a reminder, or the decision taken."""
    who = approval.approver or ""
    if kind == "reminder":
        text = (f"提醒：订单 {approval.order_id} 仍在等待审批（{approval.id}）。"
                if language == "zh" else
                f"Reminder: order {approval.order_id} is still waiting for approval "
                f"({approval.id}).")
    elif approval.state == "expired":
        text = (f"订单 {approval.order_id} 的审批已过期，订单不会进入 ERP。" if language == "zh"
                else f"Approval of order {approval.order_id} expired; the order will not go "
                     f"to the ERP.")
    else:
        verb = {"approved": ("approved", "批准"), "rejected": ("rejected", "驳回")}[approval.state]
        why = f": {approval.comment}" if approval.comment else ""
        text = (f"订单 {approval.order_id} 已由 {who} {verb[1]}{why}" if language == "zh"
                else f"Order {approval.order_id} {verb[0]} by {who}{why}")
    return {"msgtype": "m.notice", "body": text}


def decision_external_id(approval: Approval) -> str:
    """The decision as the xref ("approval", order id, "oa") external id: "<state>:<id>"."""
    return f"{approval.state}:{approval.id}"


def gate(order: Order, rules: ApprovalRules, xref: XrefLookup) -> bool:
    """True when the order may go to the ERP, False when it must not (rejected or expired).

    Waits (MissingDependency -> parked, replayed when the decision is bound) while an order
    that needs approval has none yet. With the gate on, a decision bound earlier counts even
    if the rules changed since; with the gate off (no approvers) every order passes.
    """
    if not rules.enabled:
        return True  # no approvers, no gate (and no lookup on the ERP flow's path)
    decision = xref.get("approval", order.id, SYSTEM)
    if decision is None:
        if not needs_approval(order, rules, customer_facts(order, xref)):
            return True
        # parked until decided; kept at least until the approval has expired
        raise MissingDependency("approval", order.id, SYSTEM,
                                wait_seconds=rules.expiry_seconds + 3600)
    state = (decision or "").split(":", 1)[0]
    return state not in ("rejected", "expired")


def is_final(state: str) -> bool:
    return state in _FINAL
