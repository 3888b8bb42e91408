"""What people do in the ERP after a sale is confirmed, scripted over JSON-RPC: post the
invoice, record (partial) payments, ship the goods. Tests, the demo and the benchmarks use
these to make the sandbox Tryton produce the changes the hub's feeds read.

Wizards (account.invoice.pay) run the way the Tryton client runs them: create a session,
execute states with the view data, delete the session.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connectors.tryton.client import TrytonClient, TrytonFault
from crmhub.errors import PermanentError


async def sale_invoices(client: TrytonClient, sale_id: int) -> list[int]:
    (sale,) = await client.read("sale.sale", [sale_id], ["invoices"])
    return [int(i) for i in sale["invoices"]]


async def sale_shipments(client: TrytonClient, sale_id: int) -> list[int]:
    (sale,) = await client.read("sale.sale", [sale_id], ["shipments"])
    return [int(i) for i in sale["shipments"]]


async def post_invoice(client: TrytonClient, invoice_id: int,
                       invoice_date: date | None = None, due_date: date | None = None) -> None:
    """Post a draft customer invoice, dated `invoice_date` (default today). Without a payment
    term Tryton makes it due on its payment term date: `due_date` sets that."""
    values: dict[str, Any] = {}
    if invoice_date is not None:
        values["invoice_date"] = invoice_date
    if due_date is not None:
        values["payment_term_date"] = due_date
    if values:
        await client.write("account.invoice", [invoice_id], values)
    try:
        await client.button("account.invoice", "post", [invoice_id])
    except PermanentError as exc:
        # a due date in the past is what the caller asked for: answer Tryton's warning "yes"
        # the way its client does (a res.user.warning named by the warning), then post again
        fault = exc.__cause__
        if not (isinstance(fault, TrytonFault) and fault.error[0] == "UserWarning"):
            raise
        await client.create("res.user.warning", [{"user": client.context.get("id") or 1,
                                                   "name": fault.error[1][0],
                                                   "always": False}])
        await client.button("account.invoice", "post", [invoice_id])


async def pay_invoice(client: TrytonClient, invoice_id: int, amount: Decimal,
                      payment_method: int, on: date | None = None,
                      description: str = "bank transfer") -> None:
    """The Pay wizard: `amount` now; a partial payment leaves the rest to pay."""
    wizard = "wizard.account.invoice.pay"
    context = {"active_model": "account.invoice", "active_id": invoice_id,
               "active_ids": [invoice_id]}
    session, _, _ = await client.call(f"{wizard}.create", client.context_with(context))
    try:
        view = await client.call(f"{wizard}.execute", session, {}, "start",
                                 client.context_with(context))
        start = _fields(view["view"]["defaults"])
        start.update(amount=amount, payment_method=payment_method, description=description,
                     date=on or date.today())
        data: dict[str, Any] = {"start": start}
        result = await client.call(f"{wizard}.execute", session, data, "choice",
                                   client.context_with(context))
        if result.get("view", {}).get("state") == "ask":
            ask = _fields(result["view"]["defaults"])
            ask["type"] = "partial"
            data["ask"] = ask
            await client.call(f"{wizard}.execute", session, data, "pay",
                              client.context_with(context))
    finally:
        await client.call(f"{wizard}.delete", session, client.context_with(context))


async def ship(client: TrytonClient, shipment_id: int, *, deliver: bool = True) -> str:
    """Take a customer shipment through assign, pick, pack and ship; `deliver` also does it
    (state done). Returns the state it ends in."""
    model = "stock.shipment.out"
    (row,) = await client.read(model, [shipment_id], ["state"])
    steps = ["wait", "assign_try", "pick", "pack", "ship"] + (["do"] if deliver else [])
    order = ["draft", "waiting", "assigned", "picked", "packed", "shipped", "done"]
    for step, reached in zip(steps, order[1:], strict=True):
        if order.index(row["state"]) < order.index(reached):
            await client.button(model, step, [shipment_id])
    (row,) = await client.read(model, [shipment_id], ["state"])
    return str(row["state"])


def _fields(defaults: dict[str, Any]) -> dict[str, Any]:
    """A view's defaults as wizard data: without the "field." display companions."""
    return {k: v for k, v in defaults.items() if "." not in k}
