"""Approval decisions (the OA system's) onto the BottleCRM deal: a note, and a rejected order
closes its deal as lost.

in:  canonical.approval.v1 (approval.decided)   key: approval id   group: crm-approvals
out: a comment "Order approval <state> by <approver>: <comment>"; rejected -> stage
     CLOSED_LOST (closed on the decision day). Approvals of orders not from BottleCRM: skipped
idempotency: ledger(event_id, flow) + the comment's marker names approval and state; the
             stage is only written when it differs. The deal.updated/deal.lost webhooks this
             causes are not taken as news by crm_webhooks
retry: transient -> backoff; refused -> DLQ
"""

from __future__ import annotations

from connectors.bottlecrm.client import SYSTEM, BottleCrm
from crmhub import topics
from crmhub.step import Flow, Run
from mappings.bottlecrm import approval
from schemas.canonical import Approval
from schemas.envelope import Event


async def on_approval_decided(event: Event[Approval], s: Run, crm: BottleCrm) -> None:
    if s.xref.get("order", event.data.order_id, SYSTEM) is None:
        return  # not an order from a BottleCRM deal
    await s.call(crm.put_note, approval.decision_note(event.data, s.xref))


flow = Flow(name="approval_to_crm", topic=topics.APPROVAL, group="crm-approvals",
            accepts=frozenset({"approval.decided"}), model=Approval,
            handler=on_approval_decided, sink=BottleCrm.from_env, target=SYSTEM)
