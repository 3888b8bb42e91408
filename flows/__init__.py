"""Every flow and change feed the hub can run, in two explicit lists. Adding one is one line.

FLOWS consume canonical topics and write into a system; FEEDS poll a system that cannot push
and publish canonical events; SETTINGS are the flows' own rules (beyond their connectors'),
which `crmhub config check` validates and `crmhub docs` documents.
"""

from __future__ import annotations

from typing import Any

from connectors.spec import ConnectorSettings
from crmhub.feed import Feed
from crmhub.step import Flow
from flows import (
    approval_decisions,
    approval_replies,
    approval_to_crm,
    crm_webhooks,
    customer_facts,
    customer_to_erp,
    customer_to_filedrop,
    erp_invoices,
    erp_payments,
    invoice_notices,
    invoice_state_to_crm,
    invoice_to_crm,
    oa,
    oa_tasks,
    order_approval,
    order_notices,
    order_to_crm,
    order_to_erp,
    order_to_filedrop,
    payment_notices,
    payment_to_crm,
    scm_shipments,
    shipment_to_crm,
)

FLOWS: list[Flow[Any, Any]] = [
    customer_to_filedrop.flow,
    order_to_filedrop.flow,
    customer_to_erp.flow,
    order_to_erp.flow,
    customer_facts.flow,
    order_approval.flow,
    approval_decisions.flow,
    order_notices.flow,
    payment_notices.flow,
    invoice_notices.flow,
    crm_webhooks.flow,
    order_to_crm.flow,
    invoice_to_crm.flow,
    payment_to_crm.flow,
    invoice_state_to_crm.flow,
    shipment_to_crm.flow,
    approval_to_crm.flow,
]

FEEDS: list[Feed[Any, Any]] = [
    erp_invoices.feed,
    erp_payments.feed,
    scm_shipments.feed,
    approval_replies.feed,
    oa_tasks.feed,
]

SETTINGS: list[type[ConnectorSettings]] = [
    oa.ApprovalSettings,
    oa.NotifySettings,
]
