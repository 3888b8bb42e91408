"""Notification texts (mail subject, plain text and HTML), in English and Chinese.

One function per notice; each is pure and gets the canonical document it is about. Amounts are
written with the currency's own decimals (JPY none, EUR two). Who receives a notice is the
flow's business, not the text's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from mappings.oa.text import Language, esc, money
from schemas.canonical import Invoice, Order, Payment

Kind = Literal["order_accepted", "payment_received", "invoice_paid", "invoice_overdue"]


class Notice(BaseModel):
    """One notification, ready for a mail or a chat robot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    subject: str
    text: str
    html: str
    facts: list[tuple[str, str]]
    """The label/value pairs of the notice, in order (chat robots list them)."""


def _notice(kind: Kind, subject: str, lead: str, facts: list[tuple[str, str]],
            closing: str) -> Notice:
    text = "\n".join([lead, "", *(f"{label}: {value}" for label, value in facts), "", closing])
    rows = "".join(f"<tr><th align=\"left\">{esc(label)}</th><td>{esc(value)}</td></tr>"
                   for label, value in facts)
    html = (f"<html><body><p>{esc(lead)}</p><table>{rows}</table><p>{esc(closing)}</p>"
            "</body></html>")
    return Notice(kind=kind, subject=subject, text=text, html=html, facts=facts)


def order_accepted(order: Order, language: Language = "en") -> Notice:
    """The ERP accepted a won order (order.accepted carries the ERP's number)."""
    total = money(order.total_or_net, order.currency, language)
    number = order.number or "-"
    if language == "zh":
        return _notice("order_accepted", f"订单 {order.id} 已进入 ERP（{number}）",
                       f"您的订单 {order.id} 已被 ERP 接收，销售单号 {number}。",
                       [("订单", order.id), ("ERP 单号", number), ("客户", order.customer_id),
                        ("总额", total), ("下单日期", order.ordered_on.isoformat())],
                       "此邮件由 crmhub 自动发送。")
    return _notice("order_accepted", f"Order {order.id} is in the ERP as {number}",
                   f"Your order {order.id} was accepted by the ERP as sale {number}.",
                   [("Order", order.id), ("ERP number", number), ("Customer", order.customer_id),
                    ("Total", total), ("Ordered on", order.ordered_on.isoformat())],
                   "Sent automatically by crmhub.")


def payment_received(payment: Payment, language: Language = "en") -> Notice:
    amount = money(payment.amount, payment.currency, language)
    invoices = ", ".join(a.invoice_id for a in payment.allocations) or "-"
    if language == "zh":
        return _notice("payment_received", f"收到客户 {payment.customer_id} 的付款 {amount}",
                       f"已收到客户 {payment.customer_id} 的付款。",
                       [("付款", payment.id), ("金额", amount), ("客户", payment.customer_id),
                        ("发票", invoices), ("收款日期", payment.received_on.isoformat())],
                       "此邮件由 crmhub 自动发送。")
    return _notice("payment_received", f"Payment of {amount} received from {payment.customer_id}",
                   f"A payment from customer {payment.customer_id} was received.",
                   [("Payment", payment.id), ("Amount", amount), ("Customer", payment.customer_id),
                    ("Invoices", invoices), ("Received on", payment.received_on.isoformat())],
                   "Sent automatically by crmhub.")


def invoice_paid(invoice: Invoice, language: Language = "en") -> Notice:
    total = money(invoice.total, invoice.currency, language)
    if language == "zh":
        return _notice("invoice_paid", f"发票 {invoice.number} 已全部付清",
                       f"客户 {invoice.customer_id} 的发票 {invoice.number} 已全部付清。",
                       [("发票", invoice.number), ("总额", total), ("客户", invoice.customer_id),
                        ("订单", invoice.order_id or "-")],
                       "此邮件由 crmhub 自动发送。")
    return _notice("invoice_paid", f"Invoice {invoice.number} is paid",
                   f"Invoice {invoice.number} of customer {invoice.customer_id} is paid in full.",
                   [("Invoice", invoice.number), ("Total", total),
                    ("Customer", invoice.customer_id), ("Order", invoice.order_id or "-")],
                   "Sent automatically by crmhub.")


def invoice_overdue(invoice: Invoice, language: Language = "en") -> Notice:
    open_amount = money(invoice.amount_residual, invoice.currency, language)
    due = invoice.due_date.isoformat()
    if language == "zh":
        return _notice("invoice_overdue", f"发票 {invoice.number} 已逾期，未付 {open_amount}",
                       f"客户 {invoice.customer_id} 的发票 {invoice.number} 已于 {due} 到期，"
                       "仍未付清。已为您创建跟进任务。",
                       [("发票", invoice.number), ("未付金额", open_amount), ("到期日", due),
                        ("客户", invoice.customer_id), ("订单", invoice.order_id or "-")],
                       "此邮件由 crmhub 自动发送。")
    return _notice("invoice_overdue", f"Invoice {invoice.number} is overdue: {open_amount} open",
                   f"Invoice {invoice.number} of customer {invoice.customer_id} was due on {due} "
                   "and is not paid. A follow-up task was created for you.",
                   [("Invoice", invoice.number), ("Open amount", open_amount), ("Due on", due),
                    ("Customer", invoice.customer_id), ("Order", invoice.order_id or "-")],
                   "Sent automatically by crmhub.")
