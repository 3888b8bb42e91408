"""The Tryton JSON-RPC client against the real Tryton: one login, re-login after expiry, exact
Decimals and dates, gzip; and classify() on real faults. Only the pure HTTP-status cases use
httpx's MockTransport (they are about classify(), not about Tryton)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, date, datetime
from decimal import Decimal

import httpx
import pytest

from connectors.tryton.client import TrytonClient, decode, encode
from connectors.tryton.settings import TrytonSettings
from crmhub.dev.sandbox.tryton import TrytonServer
from crmhub.errors import PermanentError, TransientError


class Counting(httpx.AsyncHTTPTransport):
    """A real transport that remembers each request's method and Accept-Encoding."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = request.content.decode()
        method = body.split('"method": "', 1)[1].split('"', 1)[0]
        self.seen.append((method, request.headers.get("accept-encoding", "")))
        return await super().handle_async_request(request)


async def test_concurrent_first_calls_share_one_login(tryton_settings: TrytonSettings) -> None:
    transport = Counting()
    async with TrytonClient(tryton_settings, transport=transport) as client:
        results = await asyncio.gather(*(client.search("product.product", []) for _ in range(20)))
    assert all(r == results[0] and r for r in results)
    assert [m for m, _ in transport.seen].count("common.db.login") == 1
    assert client.calls == len(transport.seen) == 22  # login + preferences + 20 searches
    assert {enc for _, enc in transport.seen} == {"gzip"}


async def test_decimals_and_dates_stay_exact(tryton_settings: TrytonSettings) -> None:
    async with TrytonClient(tryton_settings) as client:
        [widget] = await client.search_read("product.product", [("code", "=", "WIDGET")],
                                            ["list_price_used", "create_date"])
        assert widget["list_price_used"] == Decimal("12.50")
        assert isinstance(widget["list_price_used"], Decimal)
        assert widget["create_date"].tzinfo == UTC
        [rate] = await client.search_read("currency.currency.rate", [], ["date", "rate"],
                                          limit=1)
        assert isinstance(rate["date"], date) and isinstance(rate["rate"], Decimal)
    moment = datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=UTC)
    for value in (Decimal("1234.5678"), date(2026, 2, 28), moment, b"\x00\xff"):
        assert decode(encode(value)) == value  # type: ignore[arg-type]


async def test_a_large_answer_arrives_gzipped_and_decodes(
        tryton_settings: TrytonSettings) -> None:
    async with TrytonClient(tryton_settings) as client:
        countries = await client.search_read("country.country", [], ["name", "code", "code3"])
    assert len(countries) > 200  # well over the 1,400 bytes Tryton compresses from


async def test_an_expired_session_logs_in_again(tryton_settings: TrytonSettings) -> None:
    async with TrytonClient(tryton_settings) as client:
        await client.search("party.party", [])
        # what an expired (or revoked) token looks like to the server
        client._session = base64.b64encode(b"admin:1:expired-token").decode()
        assert await client.search("product.product", [("code", "=", "WIDGET")])
        assert client.logins == 2


async def test_user_errors_keep_trytons_message(tryton_settings: TrytonSettings) -> None:
    async with TrytonClient(tryton_settings) as client:
        with pytest.raises(PermanentError, match="sale.sale.create: .*Party") as caught:
            await client.create("sale.sale", [{"lines": []}])
        assert "Session" not in str(caught.value)
        with pytest.raises(PermanentError, match="model.no.such.model.read"):
            await client.read("no.such.model", [1], ["name"])


async def test_a_wrong_password_pauses_without_leaking_it(
        tryton_server: TrytonServer) -> None:
    wrong = "not-the-password-9f3e"
    settings = TrytonSettings(url=tryton_server.url, database=tryton_server.database,
                              user=tryton_server.user, password=wrong)
    async with TrytonClient(settings) as client:
        with pytest.raises(TransientError, match="common.db.login: HTTP 40[13].*credentials "
                           r"refused \(check TRYTON_USER / TRYTON_PASSWORD\)") as caught:
            await client.search("party.party", [])
    assert caught.value.retry_after == 60.0
    assert wrong not in str(caught.value) and wrong not in repr(caught.value.__context__)


async def test_a_stopped_server_is_transient() -> None:
    settings = TrytonSettings(url="http://127.0.0.1:9", database="x", password="p",
                              connect_timeout_seconds=1.0)
    async with TrytonClient(settings) as client:
        with pytest.raises(TransientError, match="ConnectError"):
            await client.search("party.party", [])


@pytest.mark.parametrize(("status", "headers", "retry_after"), [
    (500, {}, None), (503, {"Retry-After": "7"}, 7.0), (429, {"Retry-After": "3"}, 3.0),
    (502, {}, None)])
async def test_server_side_statuses_are_transient(status: int, headers: dict[str, str],
                                                  retry_after: float | None) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if b"common.db.login" in request.content:
            return httpx.Response(200, json={"id": 1, "result": [1, "token", None]})
        if b"get_preferences" in request.content:
            return httpx.Response(200, json={"id": 2, "result": {"company": 1}})
        return httpx.Response(status, headers=headers, text="busy")

    settings = TrytonSettings(url="http://tryton.test", database="db", password="p")
    async with TrytonClient(settings, transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(TransientError) as caught:
            await client.search("party.party", [])
    assert caught.value.retry_after == retry_after


async def test_a_timeout_is_transient() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    settings = TrytonSettings(url="http://tryton.test", database="db", password="p")
    async with TrytonClient(settings, transport=httpx.MockTransport(hang)) as client:
        with pytest.raises(TransientError, match="ReadTimeout"):
            await client.search("party.party", [])


async def test_lock_and_concurrency_faults_are_transient() -> None:
    faults = [["ConcurrencyException", "Records were modified in the meanwhile"],
              ["could not serialize access due to concurrent update", "Traceback ..."],
              ["UserError", ["The code on party must be unique.", "", None]]]

    def answer(request: httpx.Request) -> httpx.Response:
        if b"common.db.login" in request.content:
            return httpx.Response(200, json={"id": 1, "result": [1, "token", None]})
        if b"get_preferences" in request.content:
            return httpx.Response(200, json={"id": 2, "result": {"company": 1}})
        return httpx.Response(200, json={"id": 3, "error": faults.pop(0)})

    settings = TrytonSettings(url="http://tryton.test", database="db", password="p")
    async with TrytonClient(settings, transport=httpx.MockTransport(answer)) as client:
        for _ in range(3):
            with pytest.raises(TransientError):
                await client.write("party.party", [1], {"name": "x"})
