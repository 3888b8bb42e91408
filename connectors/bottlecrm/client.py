"""Async REST client for BottleCRM, and classify(): the only place that knows its HTTP
statuses and error bodies.

Authenticates with a personal access token (``Authorization: Bearer bcrm_pat_...``), pages
through lists (limit/offset), keeps money exact (BottleCRM sends decimals as strings), and
makes every write the hub does idempotent by a reference it can search for first: a comment
carries a marker, an invoice's title carries the canonical invoice id, a payment's reference
number the canonical payment id. Everything above this module sees TransientError and
PermanentError only, never httpx, and never the token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

import httpx

from connectors.bottlecrm.models import (
    Account,
    Comment,
    Contact,
    DealNote,
    Invoice,
    InvoiceDraft,
    LineItem,
    Opportunity,
    Payment,
    PaymentDraft,
)
from connectors.bottlecrm.settings import BottleCrmSettings
from connectors.http import HttpClient, classify_status, classify_transport, retry_after
from crmhub.errors import AmountMismatch, HubError, PermanentError, TransientError

SYSTEM = "bottlecrm"


class CrmFault(Exception):
    """An HTTP answer BottleCRM gave instead of a result."""

    def __init__(self, method: str, path: str, status: int, body: str,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{method} {path}: HTTP {status} {body[:300]}")
        self.method, self.path, self.status = method, path, status
        self.body, self.retry_after = body, retry_after


class BottleCrm(HttpClient):
    def __init__(self, settings: BottleCrmSettings, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.http = httpx.AsyncClient(
            base_url=settings.url.rstrip("/"), transport=transport,
            headers={"Authorization": f"Bearer {settings.token.get_secret_value()}",
                     "Accept": "application/json"},
            limits=httpx.Limits(max_connections=settings.max_connections,
                                max_keepalive_connections=settings.max_connections),
            timeout=httpx.Timeout(settings.timeout_seconds,
                                  connect=settings.connect_timeout_seconds))
        self.calls = 0

    @classmethod
    def from_env(cls) -> BottleCrm:
        return cls(BottleCrmSettings())

    # -- transport
    async def request(self, method: str, path: str, *, json: Any = None,
                      params: Mapping[str, Any] | None = None) -> Any:
        """One call; the JSON answer, or a hub error (see classify)."""
        self.calls += 1
        try:
            response = await self.http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise classify(exc) from None  # the request (and its header) stays out of chains
        if response.status_code >= 300:
            raise classify(CrmFault(method, path, response.status_code, response.text,
                                    retry_after(response.headers.get("Retry-After"))))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise TransientError(f"bottlecrm {method} {path}: unreadable answer ({exc})",
                                 system=SYSTEM) from None

    async def pages(self, path: str, key: str, params: Mapping[str, Any] | None = None
                    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every record of a list endpoint, one page (limit/offset) at a time.

        BottleCRM's lists differ: some answer {"count", "results"}, others name the list
        (`key`, e.g. "active_accounts" holding {"open_accounts": [...]}), so `key` is a dotted
        path to the records.
        """
        offset, size = 0, self.settings.page_size
        while True:
            page = await self.request("GET", path,
                                      params={**(params or {}), "limit": size, "offset": offset})
            records = _dig(page, key)
            yield records
            total = _total(page, key)
            offset += len(records)
            if not records or len(records) < size or (total is not None and offset >= total):
                return

    # -- accounts and contacts
    async def account(self, account_id: str) -> Account:
        answer = await self.request("GET", f"/api/accounts/{account_id}/")
        return Account.model_validate(answer.get("account_obj", answer))

    async def accounts(self) -> AsyncIterator[list[Account]]:
        async for page in self.pages("/api/accounts/", "active_accounts.open_accounts"):
            yield [Account.model_validate(record) for record in page]

    async def contacts_of(self, account_id: str) -> list[Contact]:
        answer = await self.request("GET", "/api/contacts/", params={"account": account_id,
                                                                      "limit": 100})
        return [Contact.model_validate(c) for c in _dig(answer, "contact_obj_list")]

    # -- opportunities (deals)
    async def opportunity(self, deal_id: str) -> Opportunity:
        answer = await self.request("GET", f"/api/opportunities/{deal_id}/")
        return Opportunity.model_validate(answer.get("opportunity_obj", answer))

    async def opportunities(self) -> AsyncIterator[list[Opportunity]]:
        async for page in self.pages("/api/opportunities/", "opportunities"):
            yield [Opportunity.model_validate(record) for record in page]

    async def line_items(self, deal_id: str) -> list[LineItem]:
        answer = await self.request("GET", f"/api/opportunities/{deal_id}/line-items/")
        return [LineItem.model_validate(item) for item in _dig(answer, "line_items")]

    async def deal_comments(self, deal_id: str) -> list[Comment]:
        answer = await self.request("GET", f"/api/opportunities/{deal_id}/")
        return [Comment.model_validate(c) for c in answer.get("comments", [])]

    async def put_note(self, note: DealNote) -> bool:
        """Comment on the deal unless a comment already carries the note's marker, then move
        the deal to the note's stage if it names one; True if the comment was added.

        A comment on a deal fires no webhook, so it never echoes back; a stage change fires
        deal.updated (and deal.won / deal.lost), which crm_webhooks does not take as news."""
        added = False
        if not any(note.marker in c.comment for c in await self.deal_comments(note.deal_id)):
            await self.request("POST", f"/api/opportunities/{note.deal_id}/",
                               json={"comment": note.comment})
            added = True
        if note.stage is not None:
            deal = await self.opportunity(note.deal_id)
            if deal.stage != note.stage:
                body: dict[str, Any] = {"stage": note.stage}
                if note.closed_on is not None:
                    body["closed_on"] = note.closed_on.isoformat()
                await self.request("PATCH", f"/api/opportunities/{note.deal_id}/", json=body)
        return added

    async def billing_contact(self, draft: InvoiceDraft) -> str:
        """A contact BottleCRM can bill (it requires one per invoice): the deal's first, else
        the account's first."""
        if draft.opportunity_id:
            deal = await self.opportunity(draft.opportunity_id)
            for contact in deal.contacts:
                return str(contact["id"] if isinstance(contact, dict) else contact.id)
        answer = await self.request("GET", f"/api/accounts/{draft.account_id}/")
        contacts = answer.get("account_obj", {}).get("contacts") or answer.get("contacts") or []
        for contact in contacts:
            if isinstance(contact, dict) and contact.get("id"):
                return str(contact["id"])
        raise PermanentError(f"bottlecrm account {draft.account_id} has no contact to bill: "
                             "add one (BottleCRM invoices need a contact)", system=SYSTEM)

    # -- invoices and payments
    async def invoice(self, invoice_id: str) -> Invoice:
        answer = await self.request("GET", f"/api/invoices/{invoice_id}/")
        return Invoice.model_validate(answer.get("invoice", answer))

    async def find_invoice(self, reference: str) -> Invoice | None:
        """The invoice whose title carries `[reference]` (exactly), if any."""
        answer = await self.request("GET", "/api/invoices/", params={"search": reference,
                                                                      "limit": 100})
        for record in _dig(answer, "results"):
            if f"[{reference}]" in (record.get("invoice_title") or ""):
                return Invoice.model_validate(record)
        return None

    async def ensure_invoice(self, draft: InvoiceDraft) -> Invoice:
        """The CRM invoice for `draft.reference`: found, or created; then sent (Draft -> Sent).

        Searched first, so a redelivered invoice.posted never creates a second one. An
        invoice BottleCRM refuses, or whose total it computes otherwise than the ERP's, is
        refused naming both amounts (AmountMismatch when the totals differ), never left
        different."""
        found = await self.find_invoice(draft.reference)
        if found is None:
            body = draft.model_dump(mode="json", exclude={"reference", "total"})
            body["contact_id"] = await self.billing_contact(draft)
            try:
                answer = await self.request("POST", "/api/invoices/", json=body)
            except PermanentError as exc:
                raise PermanentError(
                    f"invoice {draft.invoice_title} ({draft.total} {draft.currency} in the "
                    f"ERP): BottleCRM refused it: {exc}", system=SYSTEM) from None
            found = await self.invoice(str(_dig_id(answer, "invoice")))
        if found.total_amount != draft.total:
            raise AmountMismatch(
                f"invoice {draft.invoice_title}: BottleCRM computed {found.total_amount} "
                f"{draft.currency}, the ERP's total is {draft.total} {draft.currency}",
                system=SYSTEM)
        if found.status == "Draft":
            await self.request("POST", f"/api/invoices/{found.id}/send/")
            found = await self.invoice(found.id)
        return found

    async def payments(self, invoice_id: str) -> list[Payment]:
        answer = await self.request("GET", f"/api/invoices/{invoice_id}/payments/")
        return [Payment.model_validate(p) for p in _dig(answer, "results")]

    async def record_payment(self, invoice_id: str, payment: PaymentDraft) -> Invoice:
        """Record `payment` unless one with its reference number is there already. A payment
        larger than what is still due is capped (BottleCRM refuses overpayment), and none is
        recorded on an invoice with nothing due; a concurrent payment that got there first
        is seen on the second try."""
        for attempt in (1, 2):
            invoice = await self.invoice(invoice_id)
            recorded = await self.payments(invoice_id)
            if any(p.reference_number == payment.reference_number for p in recorded):
                return invoice
            due = invoice.amount_due or Decimal(0)
            if due <= 0:
                return invoice
            body = payment.model_dump(mode="json")
            body["amount"] = str(min(payment.amount, due))
            try:
                await self.request("POST", f"/api/invoices/{invoice_id}/payments/", json=body)
            except PermanentError as exc:
                if attempt == 2 or "exceeds the amount due" not in str(exc):
                    raise
                continue
            return await self.invoice(invoice_id)
        raise AssertionError("unreachable")


def _dig(answer: Any, key: str) -> list[dict[str, Any]]:
    """The records under a dotted `key` (or the answer itself when it is a list)."""
    if isinstance(answer, list):
        return answer
    value: Any = answer
    for part in key.split("."):
        if not isinstance(value, dict):
            return []
        value = value.get(part, value.get("results") if part == key.split(".")[-1] else None)
    if isinstance(value, dict):
        value = value.get("results", [])
    return list(value or [])


def _total(answer: Any, key: str) -> int | None:
    value: Any = answer
    for part in key.split(".")[:-1]:
        value = value.get(part) if isinstance(value, dict) else None
    for name in ("count", "total", "total_count", key.split(".")[-1] + "_count"):
        if isinstance(value, dict) and isinstance(value.get(name), int):
            return int(value[name])
    return None


def _dig_id(answer: Any, key: str) -> Any:
    if isinstance(answer, dict):
        inner = answer.get(key)
        if isinstance(inner, dict) and "id" in inner:
            return inner["id"]
        if "id" in answer:
            return answer["id"]
    raise PermanentError(f"bottlecrm answered without the new {key}'s id: {str(answer)[:200]}",
                         system=SYSTEM)


def classify(exc: Exception) -> HubError:
    """Every BottleCRM failure as a hub error, by the shared HTTP policy (connectors/http.py).
    Messages name the call, never the token."""
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, CrmFault):
        return classify_status(
            SYSTEM, f"{exc.method} {exc.path}", exc.status, exc.body,
            retry_after=exc.retry_after,
            # BottleCRM answers a wrong, revoked or out-of-scope token with 403, not 401 (its
            # middleware denies before DRF could send WWW-Authenticate): that pauses too.
            credential_statuses=frozenset({401, 403}), credentials_hint="BOTTLECRM_TOKEN",
            body_limit=1000)  # a 400's JSON body names the wrong field: keep all of it
    if isinstance(exc, httpx.TransportError):
        return classify_transport(SYSTEM, "", exc)
    return PermanentError(f"bottlecrm: {type(exc).__name__}: {exc}", system=SYSTEM)
