"""What the OA side keeps about customers: credit hold (approval rule) and sales owner (mail).

in:  canonical.customer.v1 (customer.upserted)   key: customer id   group: oa-customers
out: xref customer -> oa "<id>\\t<hold|ok>\\t<owner>" (read by order_approval, order_to_erp's
     approval gate and the notice flows; mappings.oa.approval.read_facts)
idempotency: ledger(event_id, flow); older customer versions are skipped as stale
retry: only the state store can fail (retried); nothing is dead-lettered but garbage
"""

from __future__ import annotations

from crmhub import topics
from crmhub.step import Flow, Run
from mappings.oa.approval import SYSTEM, CustomerFacts, facts_external_id
from schemas.canonical import Customer
from schemas.envelope import Event


async def on_customer_upserted(event: Event[Customer], s: Run, _: None) -> None:
    customer = event.data
    facts = CustomerFacts(credit_hold=customer.credit_hold, owner=customer.owner)
    s.bind("customer", customer.id, SYSTEM, facts_external_id(customer.id, facts))


flow = Flow(name="customer_facts", topic=topics.CUSTOMER, group="oa-customers",
            accepts=frozenset({"customer.upserted"}), model=Customer,
            handler=on_customer_upserted, sink=lambda: None, target=SYSTEM)
