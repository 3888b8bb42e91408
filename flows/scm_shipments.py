"""Customer shipments out of the supply-chain system (a change feed over Tryton stock).

in:  Tryton stock.shipment.out, polled: shipped / done / cancelled, the shipment or its moves
     changed since the cursor - overlap
out: canonical.shipment.v1 (shipment.dispatched, shipment.delivered, shipment.cancelled)
     key: shipment id (tryton-shipment-<id>)
cursor: newest shipment or move stamp seen, on Tryton's clock (tryton_stock/shipments)
idempotency: one event per (shipment, milestone); a shipment seen first when done gets its
             dispatched event too, before the delivered one
retry: transient -> backoff until the SCM is back; refused (no sale behind it) -> DLQ
"""

from __future__ import annotations

from datetime import datetime

from connectors.tryton.models import TrytonShipment
from connectors.tryton_stock.stock import SYSTEM, TrytonStock
from crmhub.feed import Change, Feed
from mappings.tryton_stock import shipment


async def read_shipments(scm: TrytonStock, since: datetime | None) -> list[TrytonShipment]:
    return await scm.changed_shipments(since)


def on_shipment(record: TrytonShipment) -> list[Change]:
    current = shipment.to_shipment(record)
    if current.state == "cancelled":
        return [Change("shipment.cancelled", current.id, current, "cancelled")]
    changes = [Change("shipment.dispatched", current.id,
                      current.model_copy(update={"state": "dispatched", "delivered_at": None}),
                      "dispatched")]
    if current.state == "delivered":
        changes.append(Change("shipment.delivered", current.id, current, "delivered"))
    return changes


feed = Feed(name="scm_shipments", system=SYSTEM, stream="shipments", model=TrytonShipment,
            source=TrytonStock.from_env, read=read_shipments, stamp=lambda r: r.changed_at,
            changes=on_shipment, record_id=lambda r: str(r.id))
