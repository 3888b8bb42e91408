"""Customers to the ERP, as Tryton parties.

in:  canonical.customer.v1 (customer.upserted)   key: customer id   group: erp-customers
out: xref customer -> tryton party id (orders for this customer park until it exists)
idempotency: ledger(event_id, flow) + the party carries the identifier crmhub:<customer id>
             and is searched before it is created; stale updates are skipped by version
retry: transient -> backoff until the ERP is back; refused (unknown country ...) -> DLQ
"""

from __future__ import annotations

from connectors.tryton.erp import SYSTEM, TrytonErp
from crmhub import topics
from crmhub.step import Flow, Run
from mappings.tryton import customer
from schemas.canonical import Customer
from schemas.envelope import Event


async def on_customer_upserted(event: Event[Customer], s: Run, erp: TrytonErp) -> None:
    party = customer.to_party(event.data)
    party_id = await s.call(erp.upsert_party, party)
    s.bind("customer", event.data.id, SYSTEM, str(party_id))


flow = Flow(name="customer_to_erp", topic=topics.CUSTOMER, group="erp-customers",
            accepts=frozenset({"customer.upserted"}), model=Customer,
            handler=on_customer_upserted, sink=TrytonErp.from_env, target=SYSTEM)
