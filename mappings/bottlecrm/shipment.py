"""Canonical shipment delivered (the SCM's) -> a note on the deal. Pure."""

from __future__ import annotations

from connectors.bottlecrm.models import DealNote
from mappings.base import XrefLookup
from schemas.canonical import Shipment

SYSTEM = "bottlecrm"


def delivery_note(shipment: Shipment, xref: XrefLookup) -> DealNote:
    deal = xref.require("order", shipment.order_id, SYSTEM)
    when = shipment.delivered_at.strftime("%Y-%m-%d %H:%M UTC") if shipment.delivered_at \
        else "today"
    via = " ".join(p for p in (shipment.carrier, shipment.tracking_ref) if p)
    goods = ", ".join(f"{line.quantity} x {line.sku}" for line in shipment.lines)
    text = f"Delivered {when}" + (f" via {via}" if via else "") + (f": {goods}" if goods else "")
    return DealNote(deal_id=deal, marker=f"[crmhub:delivered {shipment.id}]", text=text)
