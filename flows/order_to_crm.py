"""ERP order numbers and totals back onto the BottleCRM deal, as a note; or why the ERP
refused the order.

in:  canonical.order.v1 (order.accepted: the ERP's number and figures; order.refused)
     key: order id   group: crm-orders
out: a comment on the deal "ERP order <number> confirmed: total ... (net ... + tax ...)",
     or "ERP refused this order: <both amounts>" (orders not from a BottleCRM deal are left
     alone)
idempotency: ledger(event_id, flow) + the comment carries a marker with the number and is
             not posted again when a comment has it; deal comments fire no webhook (no echo)
retry: transient -> backoff until BottleCRM answers; refused -> DLQ
"""

from __future__ import annotations

from connectors.bottlecrm.client import SYSTEM, BottleCrm
from crmhub import topics
from crmhub.step import Flow, Run
from mappings.bottlecrm import order
from schemas.canonical import Order
from schemas.envelope import Event


async def on_order_accepted(event: Event[Order], s: Run, crm: BottleCrm) -> None:
    if s.xref.get("order", event.data.id, SYSTEM) is None:
        return  # not a BottleCRM deal
    note = order.refusal_note if event.type == "order.refused" else order.erp_number_note
    await s.call(crm.put_note, note(event.data, s.xref))


flow = Flow(name="order_to_crm", topic=topics.ORDER, group="crm-orders",
            accepts=frozenset({"order.accepted", "order.refused"}), model=Order,
            handler=on_order_accepted, sink=BottleCrm.from_env, target=SYSTEM)
