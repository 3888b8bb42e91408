"""Every flow the hub can run, in one explicit list. Adding a flow is one line here."""

from __future__ import annotations

from typing import Any

from crmhub.step import Flow
from flows import customer_to_filedrop, order_to_filedrop

FLOWS: list[Flow[Any, Any]] = [
    customer_to_filedrop.flow,
    order_to_filedrop.flow,
]
