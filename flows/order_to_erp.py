"""Won orders to the ERP: a confirmed Tryton sale, whose number goes back out.

in:  canonical.order.v1 (order.won)   key: order id   group: erp-orders
out: canonical.order.v1 (order.accepted: the ERP's number, line taxes and totals;
     order.refused with the dead letter when the ERP cannot hold the CRM's amounts exactly)
idempotency: ledger(event_id, flow) + the sale's reference is the canonical order id and is
             searched before creating, so a crash between the ERP write and the ledger write
             finds the sale again (and finishes quote/confirm) instead of creating another
retry: transient -> backoff until the ERP is back; customer not in the ERP yet -> parked until
       customer_to_erp binds it; unknown product / currency / tax -> DLQ naming it; amounts
       the ERP cannot hold to the cent -> DLQ naming both amounts, plus order.refused
       (docs/money.md)
approval: an order the APPROVAL_* rules hold back is parked ("awaiting approval": waits for
       xref approval/<order id>/oa) until approval_decisions binds the decision; rejected or
       expired -> done without a sale, the order never reaches the ERP (flows/order_approval)
"""

from __future__ import annotations

from connectors.tryton.erp import SYSTEM, TrytonErp
from crmhub import topics
from crmhub.errors import AmountMismatch
from crmhub.step import Flow, Run
from flows.oa import approval_rules
from mappings.oa.approval import gate
from mappings.tryton import order
from schemas.canonical import Order
from schemas.envelope import Event


async def on_order_won(event: Event[Order], s: Run, erp: TrytonErp) -> None:
    won = event.data
    if not gate(won, approval_rules(), s.xref):  # parks while awaiting approval
        return  # rejected or expired: never to the ERP
    s.xref.require("customer", won.customer_id, SYSTEM)  # park before touching the ERP
    catalogue = await s.call(erp.catalogue, order.products_wanted(won), won.currency)
    try:
        sale = await s.call(erp.place_sale, order.to_sale(won, s.xref, catalogue))
    except AmountMismatch as refused:  # dead-lettered, and the CRM hears why
        refused.telling(s.follow_up("order.refused", order.refused(won, str(refused))))
        raise
    s.bind("order", won.id, SYSTEM, str(sale.id))
    s.emit(s.follow_up("order.accepted", order.accepted(won, sale), source_id=str(sale.id)))


flow = Flow(name="order_to_erp", topic=topics.ORDER, group="erp-orders",
            accepts=frozenset({"order.won"}), model=Order, handler=on_order_won,
            sink=TrytonErp.from_env, target=SYSTEM)
