"""Topic names and their explicit creation (the hub never relies on auto-creation).

canonical.<entity>.v<N>       canonical events, key = entity id
<system>.<stream>.raw         raw ingress (webhooks, pollers) before mapping
<topic>.<group>.dlq           dead letters of one consumer group
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

log = logging.getLogger(__name__)

CUSTOMER = "canonical.customer.v1"
ORDER = "canonical.order.v1"
INVOICE = "canonical.invoice.v1"
PAYMENT = "canonical.payment.v1"
SHIPMENT = "canonical.shipment.v1"
APPROVAL = "canonical.approval.v1"
TASK = "canonical.task.v1"

CANONICAL = (CUSTOMER, ORDER, INVOICE, PAYMENT, SHIPMENT, APPROVAL, TASK)
#: Raw topics the HTTP ingress publishes to (created even when their flow runs elsewhere).
INGRESS = ("bottlecrm.webhook.raw",)


def for_entity(entity: str, version: int = 1) -> str:
    return f"canonical.{entity}.v{version}"


def dlq(topic: str, group: str) -> str:
    return f"{topic}.{group}.dlq"


def raw(system: str, stream: str) -> str:
    return f"{system}.{stream}.raw"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


def poll(system: str, stream: str) -> str:
    """Where a change feed's refused records are said to come from (never a real topic: the
    feed's dead letters go to `poll(...).<feed>.dlq` and replay through the feed itself)."""
    return f"{system}.{stream}.poll"


def hub_topics(flow_topics: Iterable[tuple[str, str]], partitions: int,
               feed_dlqs: Iterable[str] = ()) -> list[TopicSpec]:
    """Every canonical and ingress topic plus, for each (topic, group) a flow consumes, the
    topic and its DLQ, plus the feeds' DLQs.

    DLQs get one partition: they are read by people, not at volume, and one partition keeps
    them in failure order.
    """
    specs = {name: TopicSpec(name, partitions) for name in (*CANONICAL, *INGRESS)}
    for topic, group in flow_topics:
        specs.setdefault(topic, TopicSpec(topic, partitions))
        specs[dlq(topic, group)] = TopicSpec(dlq(topic, group), 1)
    for name in feed_dlqs:
        specs[name] = TopicSpec(name, 1)
    return list(specs.values())


async def create_topics(admin: AIOKafkaAdminClient, specs: list[TopicSpec],
                        replication_factor: int) -> list[str]:
    """Create the missing topics with their partition counts; returns the names created."""
    existing = set(await admin.list_topics())
    missing = [spec for spec in specs if spec.name not in existing]
    if not missing:
        return []
    await admin.create_topics([
        NewTopic(spec.name, num_partitions=spec.partitions,
                 replication_factor=replication_factor) for spec in missing
    ])
    log.info("created topics %s", [spec.name for spec in missing])
    return [spec.name for spec in missing]
