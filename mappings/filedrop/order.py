"""Canonical Order -> FileDrop order document, for importers that read one file per order. Pure.

The order names its customer's file, so the customer must have been dropped first
(MissingDependency otherwise: the step parks the order until it is).
"""

from __future__ import annotations

from typing import Any

from mappings.base import XrefLookup, copy_fields
from schemas.canonical import Order, OrderLine

SYSTEM = "filedrop"
DIRECT = [("id", "order_id"), ("currency", "currency"), ("ordered_on", "ordered_on"),
          ("total_net", "total_net"), ("total_tax", "total_tax"), ("total", "total"),
          ("deal_id", "crm_deal_id"), ("notes", "notes")]
LINE = [("line_no", "line"), ("sku", "sku"), ("description", "description"),
        ("quantity", "quantity"), ("unit", "unit"), ("unit_price", "unit_price"),
        ("discount_percent", "discount_percent"), ("tax_rate", "tax_rate_percent"),
        ("net_amount", "net_amount")]


def to_document(order: Order, xref: XrefLookup) -> dict[str, Any]:
    document = copy_fields(order, DIRECT)
    document["kind"] = "order"
    document["customer_file"] = xref.require("customer", order.customer_id, SYSTEM)
    document["lines"] = [line_values(line) for line in order.lines]
    return document


def line_values(line: OrderLine) -> dict[str, Any]:
    return copy_fields(line, LINE)
