"""Customers to the drop folder.

in:  canonical.customer.v1 (customer.upserted)   key: customer id   group: filedrop-customers
out: nothing; binds customer -> its file
idempotency: ledger(event_id, flow) + the file is named by the canonical customer id
retry: drop folder unavailable -> backoff until it is back; refused (permissions) -> DLQ
"""

from __future__ import annotations

from connectors.filedrop.client import SYSTEM, FileDrop
from crmhub import topics
from crmhub.step import Flow, Run
from mappings.filedrop import customer
from schemas.canonical import Customer
from schemas.envelope import Event


async def on_customer_upserted(event: Event[Customer], s: Run, drop: FileDrop) -> None:
    document = customer.to_document(event.data)
    path = await s.call(drop.write, "customer", event.data.id, document)
    s.bind("customer", event.data.id, SYSTEM, path)


flow = Flow(name="customer_to_filedrop", topic=topics.CUSTOMER, group="filedrop-customers",
            accepts=frozenset({"customer.upserted"}), model=Customer,
            handler=on_customer_upserted, sink=FileDrop.from_env, target=SYSTEM)
