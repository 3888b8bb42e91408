"""Approval decisions release (or stop) the orders waiting for them.

in:  canonical.approval.v1 (approval.decided: approved / rejected / expired)
     key: approval id   group: oa-decisions
out: xref approval/<order id>/oa = "<state>:<approval id>". Binding it wakes the sweeper,
     which replays the order parked in order_to_erp; the gate there lets an approved order
     through and finishes a rejected or expired one without a sale.
idempotency: ledger(event_id, flow); the first decision bound stays (a later one is ignored)
retry: only the state store can fail (retried)
"""

from __future__ import annotations

import logging

from crmhub import topics
from crmhub.step import Flow, Run
from mappings.oa import approval
from schemas.canonical import Approval
from schemas.envelope import Event

log = logging.getLogger(__name__)


async def on_approval_decided(event: Event[Approval], s: Run, _: None) -> None:
    decided = event.data
    earlier = s.xref.get("approval", decided.order_id, approval.SYSTEM)
    if earlier is not None and approval.is_final(earlier.split(":", 1)[0]):
        log.info("order %s was %s already; %s ignored", decided.order_id, earlier,
                 decided.state, extra={"flow": "approval_decisions"})
        return
    s.bind("approval", decided.order_id, approval.SYSTEM, approval.decision_external_id(decided))


flow = Flow(name="approval_decisions", topic=topics.APPROVAL, group="oa-decisions",
            accepts=frozenset({"approval.decided"}), model=Approval,
            handler=on_approval_decided, sink=lambda: None, target=approval.SYSTEM)
