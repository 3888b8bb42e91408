"""Canonical Customer -> FileDrop customer document. Pure."""

from __future__ import annotations

from typing import Any

from mappings.base import copy_fields
from schemas.canonical import Customer

DIRECT = [("id", "customer_id"), ("name", "name"), ("legal_name", "legal_name"),
          ("tax_id", "tax_id"), ("currency", "currency"), ("credit_hold", "credit_hold"),
          ("addresses", "addresses"), ("contacts", "contacts")]


def to_document(customer: Customer) -> dict[str, Any]:
    document = copy_fields(customer, DIRECT)
    document["kind"] = "customer"
    return document
