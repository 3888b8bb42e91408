"""Customer shipments (stock.shipment.out) read for the SCM change feed.

A connector of its own (system `tryton_stock`, settings TRYTON_STOCK_*, falling back to the
ERP's TRYTON_* ones) so that an SCM other than the ERP can replace it: flows and mappings
only see TrytonShipment records and canonical Shipments.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any

from connectors.tryton.client import TrytonClient
from connectors.tryton.erp import change_stamp, party_identifiers
from connectors.tryton.models import TrytonShipment, TrytonShipmentMove
from connectors.tryton.settings import TrytonSettings
from connectors.tryton_stock.settings import TrytonStockSettings

SYSTEM = "tryton_stock"
#: Shipment states the feed publishes (see mappings.tryton_stock.shipment).
MILESTONES = ["shipped", "done", "cancelled"]


class TrytonStock:
    def __init__(self, settings: TrytonSettings, client: TrytonClient | None = None) -> None:
        self.client = client or TrytonClient(settings)

    @classmethod
    def from_env(cls) -> TrytonStock:
        return cls(TrytonStockSettings().client_settings())

    async def aclose(self) -> None:
        await self.client.aclose()

    async def changed_shipments(self, since: datetime | None) -> list[TrytonShipment]:
        """Customer shipments at a milestone, changed (they or their moves) since `since`."""
        domain: list[Any] = [("state", "in", MILESTONES)]
        if since is not None:
            domain.append(["OR", ("write_date", ">=", since), ("create_date", ">=", since),
                           ("moves.write_date", ">=", since)])
        c = self.client
        ids = await c.search("stock.shipment.out", domain, order=[("id", "ASC")])
        if not ids:
            return []
        shipments, sales = await asyncio.gather(
            c.read("stock.shipment.out", ids, ["number", "state", "customer", "reference",
                                               "outgoing_moves", "write_date", "create_date"]),
            c.search_read("sale.sale", [("shipments", "in", ids)], ["reference", "shipments"]))
        # outgoing moves only: the inventory moves (storage -> output) are warehouse work
        moves = {m["id"]: m for m in await c.read(
            "stock.move", sorted({i for s in shipments for i in s["outgoing_moves"]}),
            ["product", "quantity", "state", "write_date", "create_date"])}
        products = await c.read("product.product", sorted({m["product"] for m in
                                                           moves.values()}), ["code"])
        identifiers = await party_identifiers(c, {s["customer"] for s in shipments})
        codes = {p["id"]: p["code"] for p in products}
        reference = {i: s["reference"] for s in sales for i in s["shipments"]}
        result = []
        for row in shipments:
            own = [moves[i] for i in row["outgoing_moves"] if moves[i]["state"] != "cancelled"]
            stamp = max([change_stamp(row), *(change_stamp(m) for m in own)])
            result.append(TrytonShipment(
                id=row["id"], number=row["number"], state=row["state"], party=row["customer"],
                party_identifier=identifiers.get(row["customer"]),
                order_reference=reference.get(row["id"]), reference=row["reference"],
                shipped_at=change_stamp(row) if row["state"] == "shipped" else None,
                done_at=change_stamp(row) if row["state"] == "done" else None,
                moves=[TrytonShipmentMove(product_code=codes.get(m["product"]),
                                          quantity=Decimal(str(m["quantity"])))
                       for m in own],
                changed_at=stamp))
        return result
