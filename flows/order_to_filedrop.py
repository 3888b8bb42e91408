"""Won orders to the drop folder, after their customer.

in:  canonical.order.v1 (order.won)   key: order id   group: filedrop-orders
out: canonical.order.v1 (order.exported, with the file name)
idempotency: ledger(event_id, flow) + the file is named by the canonical order id
retry: transient -> backoff until the folder is back; customer not dropped yet -> parked
       until it is (dead-lettered after park_ttl_seconds); refused -> DLQ
"""

from __future__ import annotations

from connectors.filedrop.client import SYSTEM, FileDrop
from crmhub import topics
from crmhub.step import Flow, Run
from mappings.filedrop import order
from schemas.canonical import Order
from schemas.envelope import Event


async def on_order_won(event: Event[Order], s: Run, drop: FileDrop) -> None:
    document = order.to_document(event.data, s.xref)  # parks while the customer is missing
    path = await s.call(drop.write, "order", event.data.id, document)
    s.bind("order", event.data.id, SYSTEM, path)
    s.emit(s.follow_up("order.exported", event.data, source_id=path))


flow = Flow(name="order_to_filedrop", topic=topics.ORDER, group="filedrop-orders",
            accepts=frozenset({"order.won"}), model=Order, handler=on_order_won,
            sink=FileDrop.from_env, target=SYSTEM)
