"""Won orders that need approval: a request in the OA chat (Matrix room), and the order waits.

in:  canonical.order.v1 (order.won)   key: order id   group: oa-approvals
out: canonical.approval.v1 (approval.requested, state pending; key: approval id)
     xref approval_request -> the request's Matrix event id; approval -> "not_required:..."
     when the rules let the order through (releases an order_to_erp that parked meanwhile)
idempotency: ledger(event_id, flow) + Matrix txn id = approval id ("approval-<order id>",
             deduplicated by Synapse per device) + no second request once one is bound
retry: transient (Matrix down, 429 with retry_after_ms) -> backoff; refused -> DLQ
The order itself waits in order_to_erp (parked on xref approval/<order id>/oa) until the
approval_replies feed publishes approval.decided and approval_decisions binds it.
"""

from __future__ import annotations

from connectors.matrix.client import SYSTEM as MATRIX
from crmhub import topics
from crmhub.step import Flow, Run
from flows.oa import ApprovalDesk
from mappings.oa import approval
from schemas.canonical import Order
from schemas.envelope import Event
from schemas.state import utcnow


async def on_order_won(event: Event[Order], s: Run, desk: ApprovalDesk) -> None:
    won, rules = event.data, desk.rules
    if not rules.enabled or s.xref.get("approval", won.id, approval.SYSTEM) is not None:
        return  # gate off, or decided already (the CRM sent the order again)
    reasons = approval.needs_approval(won, rules, approval.customer_facts(won, s.xref))
    if not reasons:
        s.bind("approval", won.id, approval.SYSTEM, f"not_required:{approval.approval_id(won.id)}")
        return
    pending = approval.request(won, reasons, requested_at=utcnow())
    if s.xref.get("approval_request", pending.id, MATRIX) is not None:
        return  # asked already
    content = approval.request_content(won, reasons, pending, rules.language)
    posted = await s.call(desk.matrix.send, desk.matrix.room_id, pending.id, content)
    s.bind("approval_request", pending.id, MATRIX, posted)
    s.emit(s.follow_up("approval.requested", pending, entity_id=pending.id, source_id=posted))


flow = Flow(name="order_approval", topic=topics.ORDER, group="oa-approvals",
            accepts=frozenset({"order.won"}), model=Order, handler=on_order_won,
            sink=ApprovalDesk.from_env, target=MATRIX)
