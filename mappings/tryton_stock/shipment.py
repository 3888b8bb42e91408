"""Tryton customer shipment (stock.shipment.out) -> canonical Shipment. Pure.

Tryton's states map to the supply-chain milestones the CRM cares about: shipped (the goods
left, Tryton 8.0's optional step) -> dispatched; done -> delivered; cancelled -> cancelled.
Earlier states (waiting, assigned, picked, packed) are warehouse work and not published.
"""

from __future__ import annotations

from connectors.tryton.models import TrytonShipment
from crmhub.errors import MappingError
from mappings.tryton.customer import customer_id_for
from schemas.canonical import Shipment, ShipmentLine

SYSTEM = "tryton_stock"
STATES = {"shipped": "dispatched", "done": "delivered", "cancelled": "cancelled"}


def shipment_id_for(shipment: int) -> str:
    return f"tryton-shipment-{shipment}"


def to_shipment(shipment: TrytonShipment) -> Shipment:
    state = STATES.get(shipment.state)
    if state is None:
        raise MappingError(f"shipment {shipment.number or shipment.id} is {shipment.state}: "
                           "not a published milestone", system=SYSTEM)
    if not shipment.order_reference:
        raise MappingError(f"shipment {shipment.number or shipment.id} comes from no sale "
                           "the hub knows (no sale reference)", system=SYSTEM)
    dispatched_at = shipment.shipped_at or (shipment.done_at if state == "delivered" else None)
    return Shipment(
        id=shipment_id_for(shipment.id), order_id=shipment.order_reference,
        customer_id=customer_id_for(shipment.party, shipment.party_identifier), state=state,
        tracking_ref=shipment.reference,
        dispatched_at=dispatched_at if state != "cancelled" else None,
        delivered_at=shipment.done_at if state == "delivered" else None,
        lines=[ShipmentLine(sku=m.product_code or "(no product)", quantity=m.quantity)
               for m in shipment.moves if m.quantity > 0])
