"""Orders the ERP accepted: a mail to the sales owner and a message to the chat robots.

in:  canonical.order.v1 (order.accepted, with the ERP number)   key: order id
     group: oa-order-notices
out: one mail (to Order.owner, else the customer's owner, else NOTIFY_FALLBACK_EMAIL) and one
     message per configured chat robot (DingTalk, WeCom, Feishu)
idempotency: ledger(event_id, flow): once per event. The Message-ID is derived from the event,
             so a mail repeated after a crash is recognisably the same mail (see docs/oa.md)
retry: transient (SMTP 4xx / down, robot rate limit) -> backoff; refused -> DLQ
"""

from __future__ import annotations

from crmhub import topics
from crmhub.step import Flow, Run
from flows.oa import Notifier, recipients
from mappings.oa import approval, notice
from schemas.canonical import Order
from schemas.envelope import Event


async def on_order_accepted(event: Event[Order], s: Run, notifier: Notifier) -> None:
    accepted = event.data
    message = notice.order_accepted(accepted, notifier.settings.language)
    owner = accepted.owner or approval.customer_facts(accepted, s.xref).owner
    to = recipients(owner or notifier.settings.fallback_email)
    if to:
        await s.call(notifier.mail, event, message, to)
    for robot in notifier.robots.enabled:
        await s.call(notifier.chat, robot, message)


flow = Flow(name="order_notices", topic=topics.ORDER, group="oa-order-notices",
            accepts=frozenset({"order.accepted"}), model=Order, handler=on_order_accepted,
            sink=Notifier.from_env, target="oa")
