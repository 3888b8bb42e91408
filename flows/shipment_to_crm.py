"""Deliveries (the SCM's) made visible on the BottleCRM deal, as a note.

in:  canonical.shipment.v1 (shipment.delivered)   key: shipment id   group: crm-shipments
out: a comment on the deal "Delivered <when> via <carrier> <tracking>: <goods>"
idempotency: ledger(event_id, flow) + the comment's marker names the shipment
retry: transient -> backoff; refused -> DLQ. Shipments of orders not from BottleCRM: skipped
"""

from __future__ import annotations

from connectors.bottlecrm.client import SYSTEM, BottleCrm
from crmhub import topics
from crmhub.step import Flow, Run
from mappings.bottlecrm import shipment
from schemas.canonical import Shipment
from schemas.envelope import Event


async def on_shipment_delivered(event: Event[Shipment], s: Run, crm: BottleCrm) -> None:
    if s.xref.get("order", event.data.order_id, SYSTEM) is None:
        return  # not an order from a BottleCRM deal
    await s.call(crm.put_note, shipment.delivery_note(event.data, s.xref))


flow = Flow(name="shipment_to_crm", topic=topics.SHIPMENT, group="crm-shipments",
            accepts=frozenset({"shipment.delivered"}), model=Shipment,
            handler=on_shipment_delivered, sink=BottleCrm.from_env, target=SYSTEM)
