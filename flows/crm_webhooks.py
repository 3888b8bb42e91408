"""BottleCRM webhooks to canonical events: accounts become customers, won deals orders.

in:  bottlecrm.webhook.raw (account.created, account.updated, deal.won)   key: CRM record id
     group: bottlecrm-webhooks
out: canonical.customer.v1 (customer.upserted), canonical.order.v1 (order.won, with its lines;
     the deal's account as customer.upserted first, when it changed)
idempotency: ledger(event_id = uuid5(delivery id), flow) drops a redelivered delivery; the
             content hash of what was published (xref.last_hash) drops content already
             published -- the same deal won twice, an account saved without a change
ownership: only CRM-owned fields are published (the ERP's number and credit hold are not
           hashed); invoice.* and the other deal events -- the ERP's data and the hub's own
           writes echoing back -- are not accepted
retry: transient -> backoff until BottleCRM answers; a deal without account, a line without
       a product SKU, a deal not in a won stage -> DLQ naming it
"""

from __future__ import annotations

from connectors.bottlecrm.client import SYSTEM, BottleCrm
from connectors.bottlecrm.models import Webhook
from crmhub import topics
from crmhub.step import Flow, Run
from mappings.bottlecrm import customer, order
from schemas.canonical import Customer, Order
from schemas.envelope import Event

RAW = topics.raw(SYSTEM, "webhook")


async def on_webhook(event: Event[Webhook], s: Run, crm: BottleCrm) -> None:
    hook, currency = event.data, crm.settings.default_currency
    if hook.event.startswith("account."):
        account = await s.call(crm.account, hook.record_id)
        upserted = customer.to_customer(account.model_copy(update={"updated_at": hook.updated_at}),
                                        currency)
        publish_changed(s, "customer.upserted", upserted, customer.customer_hash(upserted))
        return
    deal = await s.call(crm.opportunity, hook.record_id)
    account = await s.call(crm.account, deal.account.id) if deal.account else None
    lines = deal.line_items or await s.call(crm.line_items, deal.id)
    won = order.to_order(order.WonDeal(deal=deal, lines=lines, account=account,
                                       won_on=event.occurred_at.date(),
                                       updated_at=hook.updated_at),
                         currency, crm.settings.default_tax_rate)
    if account is not None:  # the ERP parks the order until its customer is bound there
        buyer = customer.to_customer(account, currency)
        publish_changed(s, "customer.upserted", buyer, customer.customer_hash(buyer))
    publish_changed(s, "order.won", won, order.order_hash(won))


def publish_changed(s: Run, type: str, data: Customer | Order, content: str) -> None:
    """Publish `data` as `type` unless this CRM-owned content was published already."""
    entity = type.split(".", 1)[0]
    if s.xref.last_hash(entity, data.id, SYSTEM) == content:
        return
    s.bind(entity, data.id, SYSTEM, data.id, hash=content)
    emitted = s.follow_up(type, data, source_id=data.id, entity_id=data.id)
    s.emit(emitted.model_copy(update={"source_updated_at": data.updated_at}))


flow = Flow(name="crm_webhooks", topic=RAW, group="bottlecrm-webhooks",
            accepts=frozenset({"account.created", "account.updated", "deal.won"}),
            model=Webhook, handler=on_webhook, sink=BottleCrm.from_env, target=SYSTEM)
