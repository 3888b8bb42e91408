"""Initial loads: publish what a system already holds, as the live flows would have.

`crmhub backfill bottlecrm accounts|deals` lists BottleCRM's records page by page and
publishes canonical events for them -- accounts as customer.upserted, won deals as their
account's customer.upserted plus order.won -- binding each (with its content hash) exactly as
crm_webhooks does, so later webhooks and the write-back flows treat them alike.

Idempotent: an event's id is derived from (kind, record id, content hash), and each published
id is recorded in the ledger under the flow name "backfill_bottlecrm". A re-run publishes
nothing for records that did not change; a record changed since is published once, anew.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from connectors.bottlecrm.client import SYSTEM, BottleCrm
from connectors.bottlecrm.models import Account, Opportunity
from crmhub import topics, transport
from crmhub.errors import MappingError
from crmhub.settings import HubSettings
from crmhub.store import Bind, Store
from mappings.bottlecrm import customer, order
from schemas.canonical import Customer, Order
from schemas.envelope import Event, Source
from schemas.state import utcnow

FLOW = "backfill_bottlecrm"
KINDS = ("accounts", "deals")
_NAMESPACE = uuid.UUID("5b0e7c1a-93d4-4f6e-8a2b-1d9c3e7f0a58")


@dataclass
class Counts:
    read: int = 0
    published: int = 0
    unchanged: int = 0
    skipped: int = 0
    refused: list[str] = field(default_factory=list)


def event_id_for(kind: str, record_id: str, content: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{FLOW}:{kind}:{record_id}:{content}")


class Backfill:
    """One run: the CRM client, the state store, a producer (started by run())."""

    def __init__(self, settings: HubSettings, crm: BottleCrm) -> None:
        self.settings, self.crm = settings, crm
        self.store = Store(settings.database_url.get_secret_value())
        self.counts = Counts()
        self._accounts: dict[str, Account] = {}
        self._producer: AIOKafkaProducer | None = None

    async def run(self, kind: str, progress: Callable[[int, int | None], None]) -> Counts:
        """Publish every record of `kind`; `progress(records in this page, total or None)`."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        self.store.migrate()
        args = transport.kafka_client_args(self.settings, self.settings.bootstrap_servers)
        args["client_id"] = f"{self.settings.client_id}-backfill"
        self._producer = AIOKafkaProducer(**args,
                                          enable_idempotence=self.settings.enable_idempotence)
        await self._producer.start()
        try:
            pages: AsyncIterator[list[Any]] = (self.crm.accounts() if kind == "accounts"
                                               else self.crm.opportunities())
            async for page in pages:
                for record in page:
                    self.counts.read += 1
                    try:
                        await (self._account(record) if kind == "accounts"
                               else self._deal(record))
                    except MappingError as exc:
                        self.counts.refused.append(str(exc))
                progress(len(page), None)
        finally:
            await self._producer.stop()
            self.store.close()
        return self.counts

    async def _account(self, account: Account) -> None:
        await self._publish("customer.upserted",
                            customer.to_customer(account, self.crm.settings.default_currency),
                            customer.customer_hash)

    async def _deal(self, listed: Opportunity) -> None:
        if not order.is_won(listed):
            self.counts.skipped += 1
            return
        deal = await self.crm.opportunity(listed.id)
        account = None
        if deal.account is not None:
            account = self._accounts.get(deal.account.id) or await self.crm.account(
                deal.account.id)
            self._accounts[account.id] = account
            await self._account(account)
        lines = deal.line_items or await self.crm.line_items(deal.id)
        won = order.to_order(order.WonDeal(deal=deal, lines=lines, account=account,
                                           won_on=deal.closed_on or utcnow().date()),
                             self.crm.settings.default_currency,
                             self.crm.settings.default_tax_rate)
        await self._publish("order.won", won, order.order_hash)

    async def _publish(self, type: str, data: Customer | Order,
                       digest: Callable[[Any], str]) -> None:
        entity, content = type.split(".", 1)[0], digest(data)
        if self.store.last_hash(entity, data.id, SYSTEM) == content:
            self.counts.unchanged += 1
            return
        event = _event(type, data, event_id_for(entity, data.id, content))
        assert self._producer is not None
        await self._producer.send_and_wait(
            topics.for_entity(entity), event.to_bytes(), key=event.key,
            headers=[("content-type", b"application/json"), ("x-crmhub-type", type.encode()),
                     ("x-crmhub-origin", SYSTEM.encode()), ("x-crmhub-flow", FLOW.encode())])
        self.store.commit_success(FLOW, str(event.event_id), entity, data.id,
                                  [Bind(entity, data.id, SYSTEM, data.id, hash=content)], 1)
        self.counts.published += 1


def _event(type: str, data: Customer | Order, event_id: uuid.UUID) -> Event[Any]:
    return Event[Any](event_id=event_id, type=type, entity=type.split(".", 1)[0],
                      entity_id=data.id, source=Source(system=SYSTEM, id=data.id),
                      origin=SYSTEM, source_updated_at=data.updated_at, data=data)
