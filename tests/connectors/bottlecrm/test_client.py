"""The BottleCRM client against the real BottleCRM (sandbox): pages, exact money, and every
failure classified -- without the token in any message."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.bottlecrm.client import BottleCrm
from connectors.bottlecrm.models import DealNote, PaymentDraft
from crmhub.dev.sandbox.bottlecrm import BottleCrmServer
from crmhub.embedded import free_port
from crmhub.errors import PermanentError, TransientError
from tests.connectors.bottlecrm.conftest import (
    comments,
    crm_settings,
    new_account,
    new_deal,
    unique,
    win,
)

# The first test to ask for the BottleCRM sandbox may build it: a venv and ~2-3 minutes of
# migrations on a fresh machine.
pytestmark = pytest.mark.timeout(900)


async def test_accounts_are_listed_page_by_page(bottlecrm_server: BottleCrmServer) -> None:
    names = [unique("深圳华强 Paging") for _ in range(3)]
    ids = {new_account(bottlecrm_server, name) for name in names}
    async with BottleCrm(crm_settings(bottlecrm_server, page_size=2)) as crm:
        pages = [page async for page in crm.accounts()]
    assert all(len(page) <= 2 for page in pages) and len(pages) >= 2
    seen = {account.id: account for page in pages for account in page}
    assert ids <= set(seen)
    assert {seen[i].name for i in ids} == set(names)
    assert len(seen) == sum(len(page) for page in pages)  # no record twice


async def test_a_deal_reads_with_exact_decimals_and_takes_an_idempotent_note(
        bottlecrm_server: BottleCrmServer) -> None:
    deal = new_deal(bottlecrm_server, [("SEAL-KIT", "1.5", "39.90"), ("VALVE-9", "4", "89.00")])
    win(bottlecrm_server, deal.deal_id)
    async with BottleCrm(crm_settings(bottlecrm_server)) as crm:
        read = await crm.opportunity(deal.deal_id)
        assert read.stage == "CLOSED_WON" and read.stage_kind == "won"
        assert read.account is not None and read.account.id == deal.account_id
        assert [(li.quantity, li.unit_price, li.product.sku if li.product else None)
                for li in read.line_items] == [
            (Decimal("1.50"), Decimal("39.90"), "SEAL-KIT"),
            (Decimal("4.00"), Decimal("89.00"), "VALVE-9")]
        note = DealNote(deal_id=deal.deal_id, marker="[crmhub:test]", text="ERP order SO9")
        assert await crm.put_note(note) is True
        assert await crm.put_note(note) is False
    assert comments(bottlecrm_server, deal.deal_id) == ["ERP order SO9 [crmhub:test]"]


async def test_failures_are_classified_and_never_show_the_token(
        bottlecrm_server: BottleCrmServer) -> None:
    settings = crm_settings(bottlecrm_server)
    async with BottleCrm(settings) as crm:
        with pytest.raises(PermanentError, match="HTTP 404"):
            await crm.opportunity("00000000-0000-0000-0000-000000000000")
        deal = new_deal(bottlecrm_server)
        with pytest.raises(PermanentError) as refused:  # a 400 keeps BottleCRM's JSON body
            await crm.request("POST", "/api/invoices/", json={
                "invoice_title": "x", "account_id": deal.account_id, "currency": "EUR"})
        assert "HTTP 400" in str(refused.value) and "contact_id" in str(refused.value)
    bad = settings.model_copy(update={"token": settings.token.__class__("bcrm_pat_wrong")})
    async with BottleCrm(bad) as crm:  # a refused token pauses the flows (connectors/http.py)
        with pytest.raises(TransientError, match="HTTP 40[13].*credentials refused "
                           r"\(check BOTTLECRM_TOKEN\)") as denied:
            await crm.opportunity(deal.deal_id)
        assert denied.value.retry_after == 60.0
        assert "bcrm_pat_wrong" not in str(denied.value)
    down = settings.model_copy(update={"url": f"http://127.0.0.1:{free_port()}",
                                       "connect_timeout_seconds": 1.0})
    async with BottleCrm(down) as crm:
        with pytest.raises(TransientError, match="unreachable") as unreachable:
            await crm.opportunity(deal.deal_id)
        assert settings.token.get_secret_value() not in str(unreachable.value)


async def test_a_payment_is_recorded_once_and_never_beyond_what_is_due(
        bottlecrm_server: BottleCrmServer) -> None:
    from connectors.bottlecrm.models import InvoiceDraft

    deal = new_deal(bottlecrm_server)
    win(bottlecrm_server, deal.deal_id)
    reference = f"test-invoice-{deal.deal_id[:8]}"
    draft = InvoiceDraft(reference=reference, invoice_title=f"INV/T [{reference}]",
                         account_id=deal.account_id, opportunity_id=deal.deal_id,
                         currency="EUR", issue_date="2026-12-01", due_date="2026-12-31",
                         line_items=[{"name": "WIDGET", "quantity": "2", "unit_price": "10.00"}],
                         total=Decimal("20.00"))
    async with BottleCrm(crm_settings(bottlecrm_server)) as crm:
        invoice = await crm.ensure_invoice(draft)
        assert (await crm.ensure_invoice(draft)).id == invoice.id  # found, not created again
        assert invoice.status == "Sent" and invoice.total_amount == Decimal("20.00")
        part = PaymentDraft(amount=Decimal("5.00"), payment_date="2026-12-02",
                            reference_number="p-1")
        assert (await crm.record_payment(invoice.id, part)).status == "Partially_Paid"
        assert (await crm.record_payment(invoice.id, part)).amount_paid == Decimal("5.00")
        rest = PaymentDraft(amount=Decimal("99.00"), payment_date="2026-12-03",
                            reference_number="p-2")
        paid = await crm.record_payment(invoice.id, rest)
        assert paid.status == "Paid" and paid.amount_due == Decimal("0.00")
        assert sorted(p.amount for p in await crm.payments(invoice.id)) == [
            Decimal("5.00"), Decimal("15.00")]
