"""The Tryton sandbox is a real Tryton 8.0: JSON-RPC login, seeded company, taxes and stock.

The first run builds the cached venv (~15 s) and the SQLite template (~40 s) under .sandbox/,
and the PostgreSQL templates (~75 s) on the server of $CRMHUB_SANDBOX_PG (default
postgres@127.0.0.1:5432); later runs only copy a template and start trytond (~2-3 s). A sandbox
that cannot be built or started fails the tests with the reason; nothing skips.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from crmhub.dev.sandbox.tryton import (
    PG_ORPHAN_SECONDS,
    PG_RUN_PREFIX,
    SEED_PRODUCTS,
    SEED_VERSION,
    TrytonServer,
    pg_admin_url,
    pg_template_name,
    prepare,
    template_info,
)


def _decode(obj: dict[str, Any]) -> Any:
    """Tryton's JSON-RPC object hook: Decimal and date travel as tagged objects."""
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return date(obj["year"], obj["month"], obj["day"])
    return obj


class Rpc:
    """The smallest JSON-RPC client that talks to trytond like the connector will."""

    def __init__(self, server: TrytonServer) -> None:
        self.server = server
        self.http = httpx.Client(
            base_url=server.url, timeout=30.0, headers={"Accept-Encoding": "gzip"}
        )
        self.session: str | None = None
        self.uid = 0
        self.context: dict[str, Any] = {}
        self._id = 0

    def post(self, method: str, params: list[Any], session: str | None = None) -> httpx.Response:
        self._id += 1
        headers = {"Authorization": f"Session {session}"} if session else {}
        body = {"method": method, "params": params, "id": self._id}
        return self.http.post(f"/{self.server.database}/rpc/", json=body, headers=headers)

    def call(self, method: str, *params: Any) -> Any:
        response = self.post(method, list(params), self.session)
        assert response.status_code == 200, (method, response.status_code, response.text[:500])
        data = json.loads(response.content, object_hook=_decode)
        assert not data.get("error"), (method, data["error"])
        return data["result"]

    def login(self) -> list[Any]:
        result: list[Any] = self.call(
            "common.db.login", self.server.user, {"password": self.server.password}, "en"
        )
        uid, token = result[0], result[1]
        raw = f"{self.server.user}:{uid}:{token}".encode()
        self.session = base64.b64encode(raw).decode("ascii")
        self.uid = uid
        prefs = self.call("model.res.user.get_preferences", True, {})
        self.context = {"company": prefs["company"], "language": prefs["language"]}
        return result

    def search_read(self, model: str, domain: list[Any], fields: list[str],
                    **context: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.call(
            f"model.{model}.search_read", domain, 0, None, None, fields,
            {**self.context, **context},
        )
        return rows

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="session")
def tryton() -> Iterator[TrytonServer]:
    """One sandbox Tryton for the session, on a private copy of the seeded template."""
    try:
        prepared = prepare()
        server = TrytonServer().start()
    except Exception as exc:
        pytest.fail(f"cannot prepare/start the Tryton sandbox: {exc}", pytrace=False)
    timings = {k: round(v, 2) for k, v in prepared.timings.items()}
    print(f"\n[tryton sandbox] prepare {timings}; server start {server.start_seconds:.2f} s")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rpc(tryton: TrytonServer) -> Iterator[Rpc]:
    """Logged in once: login is slow on purpose (~0.25 s) and rate-limited after failures."""
    client = Rpc(tryton)
    client.login()
    yield client
    client.close()


def test_login_over_json_rpc(tryton: TrytonServer) -> None:
    client = Rpc(tryton)
    try:
        result = client.login()
        # trytond 8.0: common.db.login(user, parameters, language) -> [uid, token, bus_url]
        assert isinstance(result[0], int) and result[0] > 0
        assert isinstance(result[1], str) and result[1]
        assert len(result) == 3
        user = client.call("model.res.user.read", [client.uid], ["login"], client.context)
        assert user[0]["login"] == "admin"
    finally:
        client.close()


def test_bad_session_and_bad_password_are_refused(tryton: TrytonServer, rpc: Rpc) -> None:
    forged = base64.b64encode(f"admin:{rpc.uid}:not-a-token".encode()).decode("ascii")
    response = rpc.post("model.res.user.read", [[rpc.uid], ["login"], {}], forged)
    assert response.status_code == 401
    # An unknown login, not admin with a wrong password: each failure makes the next login of
    # that user sleep up to 2**failures - 1 s (remembered for [session] timeout seconds).
    response = rpc.post("common.db.login", ["intruder", {"password": "wrong-password"}, "en"])
    assert response.status_code in (401, 403)


def test_a_server_whose_login_is_refused_fails_to_start_at_once() -> None:
    """The readiness check is the connector's own login: a refusal ends the start with the
    reason (no waiting for the start timeout), the password never shown, nothing left."""
    server = TrytonServer(user="intruder", password="wrong-password-5c1e", start_timeout=30.0)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="login refused.*credentials refused") as refused:
        server.start()
    assert time.monotonic() - started < 20.0
    assert "wrong-password-5c1e" not in str(refused.value)
    assert not server.running and server.directory is None


def test_seeded_products_are_found_by_code(tryton: TrytonServer, rpc: Rpc) -> None:
    storage = rpc.search_read("stock.location", [("code", "=", "STO")], ["id"])
    assert len(storage) == 1
    rows = rpc.search_read(
        "product.product",
        [("code", "in", list(SEED_PRODUCTS))],
        ["code", "rec_name", "type", "salable", "list_price_used", "cost_price", "quantity",
         "default_uom.name", "template.account_category.customer_taxes"],
        locations=[storage[0]["id"]],
    )
    by_code = {row["code"]: row for row in rows}
    assert set(by_code) == set(SEED_PRODUCTS)
    for row in rows:
        assert row["type"] == "goods" and row["salable"] is True
        assert isinstance(row["list_price_used"], Decimal) and row["list_price_used"] > 0
        assert isinstance(row["cost_price"], Decimal) and row["cost_price"] > 0
        assert row["quantity"] > 0, row  # the confirmed inventory put stock in
        assert row["default_uom."]["name"] == "Unit"
        assert row["template."]["account_category."]["customer_taxes"], row
    assert by_code["WIDGET"]["list_price_used"] == Decimal("12.50")
    assert by_code["PUMP-200"]["quantity"] == 20


def test_company_currency_is_eur(rpc: Rpc) -> None:
    company = rpc.call(
        "model.company.company.read", [rpc.context["company"]],
        ["rec_name", "currency.code"], rpc.context,
    )
    assert company[0]["currency."]["code"] == "EUR"


def test_taxes_payment_term_fiscal_years_exist(rpc: Rpc) -> None:
    taxes = {t["name"]: t for t in rpc.search_read(
        "account.tax", [], ["name", "rate", "type", "invoice_account"])}
    assert taxes["VAT 19%"]["rate"] == Decimal("0.19")
    assert taxes["VAT 7%"]["rate"] == Decimal("0.07")
    assert all(t["type"] == "percentage" and t["invoice_account"] for t in taxes.values())
    manual = rpc.search_read(
        "product.product", [("code", "=", "MANUAL")],
        ["template.account_category.customer_taxes"])
    assert manual[0]["template."]["account_category."]["customer_taxes"] == [
        taxes["VAT 7%"]["id"]]

    assert rpc.search_read("account.invoice.payment_term", [], ["name"])
    years = {fy["name"] for fy in rpc.search_read(
        "account.fiscalyear", [("state", "=", "open")], ["name"])}
    this_year = date.today().year
    assert {str(this_year), str(this_year + 1)} <= years
    assert rpc.search_read("account.payment.journal", [], ["name", "process_method"])


def test_large_answers_come_gzipped(rpc: Rpc) -> None:
    # trytond compresses answers over 1,400 bytes when the client accepts gzip
    response = rpc.post(
        "model.ir.model.search_read",
        [[], 0, None, None, ["name", "string"], rpc.context],  # 8.0: name = "sale.sale"
        rpc.session,
    )
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == "gzip"
    models = {row["name"] for row in response.json()["result"]}  # httpx decompressed it
    assert {"sale.sale", "sale.opportunity", "account.payment", "stock.shipment.out"} <= models


def test_each_server_gets_its_own_copy_and_stops_by_pid(tryton: TrytonServer, rpc: Rpc) -> None:
    with TrytonServer() as other:
        assert other.url != tryton.url and other.directory is not None
        directory, pid = other.directory, other.pid
        client = Rpc(other)
        try:
            client.login()
            client.call("model.party.party.create", [{"name": "Only in the other copy"}],
                        client.context)
            assert client.search_read("party.party", [("name", "=", "Only in the other copy")],
                                      ["id"])
        finally:
            client.close()
    assert not rpc.search_read("party.party", [("name", "=", "Only in the other copy")], ["id"])
    assert not directory.exists()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"trytond pid {pid} still alive after stop()")


# --------------------------------------------------------------------------- seed contents


def test_seed_has_all_countries_and_usd_with_a_rate(rpc: Rpc) -> None:
    countries = rpc.call("model.country.country.search_count", [], 0, None, rpc.context)
    assert countries > 200
    germany = rpc.search_read("country.country", [("code", "=", "DE")],
                              ["name", "code3", "code_numeric"])
    assert germany == [{"id": germany[0]["id"], "name": "Germany", "code3": "DEU",
                        "code_numeric": "276"}]
    usd = rpc.search_read("currency.currency", [("code", "=", "USD")], ["rate", "symbol"])
    assert len(usd) == 1 and usd[0]["rate"] == Decimal("1.08")
    seeded = template_info()["seeded"]
    assert seeded["countries"] == countries
    assert seeded["currencies"] == {"EUR": seeded["currency"], "USD": usd[0]["id"]}


def test_sale_for_a_party_made_over_raw_rpc_confirms_into_invoice_and_shipment(
        tryton: TrytonServer, rpc: Rpc) -> None:
    """No on_change runs over raw RPC: the party gets no accounts or payment term of its own,
    the company defaults apply, and confirming creates both documents synchronously."""
    ctx = rpc.context
    [germany] = rpc.call("model.country.country.search", [("code", "=", "DE")], 0, 1, None, ctx)
    [party] = rpc.call("model.party.party.create", [{
        "name": "Raw RPC customer",
        "addresses": [["create", [{"street": "Hauptstr. 1", "postal_code": "10115",
                                   "city": "Berlin", "country": germany}]]],
    }], ctx)
    [address] = rpc.call("model.party.party.read", [party], ["addresses"], ctx)[0]["addresses"]
    [widget] = rpc.search_read("product.product", [("code", "=", "WIDGET")],
                               ["default_uom", "template.account_category.customer_taxes"])
    seeded = tryton.seeded
    [sale] = rpc.call("model.sale.sale.create", [{
        "party": party, "invoice_address": address, "shipment_address": address,
        "currency": seeded["currencies"]["USD"],
        "lines": [["create", [{
            "type": "line", "product": widget["id"], "quantity": 2.0,
            "unit": widget["default_uom"], "description": "Widget",
            "unit_price": {"__class__": "Decimal", "decimal": "13.50"},
            "taxes": [["add", widget["template."]["account_category."]["customer_taxes"]]],
        }]]],
    }], ctx)
    rpc.call("model.sale.sale.quote", [sale], ctx)
    rpc.call("model.sale.sale.confirm", [sale], ctx)
    [done] = rpc.call("model.sale.sale.read", [sale],
                      ["state", "payment_term", "invoices", "shipments"], ctx)
    assert done["state"] == "processing"
    assert done["payment_term"] == seeded["payment_term"]
    [invoice] = rpc.call("model.account.invoice.read", done["invoices"],
                         ["state", "account", "total_amount", "currency"], ctx)
    assert invoice["state"] == "draft"
    assert invoice["account"] == seeded["receivable_account"]
    assert invoice["currency"] == seeded["currencies"]["USD"]
    assert invoice["total_amount"] == Decimal("32.13")  # 2 x 13.50 + 19 % VAT
    [shipment] = rpc.call("model.stock.shipment.out.read", done["shipments"], ["state"], ctx)
    assert shipment["state"] == "waiting"


def test_a_usd_invoice_whose_converted_lines_do_not_balance_posts_with_an_exchange_line(
        tryton: TrytonServer, rpc: Rpc) -> None:
    """Each 0.05 USD line is 0.05 EUR (0.0463) but the 0.18 USD receivable is 0.17 EUR: Tryton
    books the cent to the company's currency exchange account, and refuses to post without
    one (the seed's multi-currency setup, docs/money.md)."""
    ctx = rpc.context
    [germany] = rpc.call("model.country.country.search", [("code", "=", "DE")], 0, 1, None, ctx)
    [party] = rpc.call("model.party.party.create", [{
        "name": "USD customer", "addresses": [["create", [{"city": "Boston", "country": germany}]]],
    }], ctx)
    [address] = rpc.call("model.party.party.read", [party], ["addresses"], ctx)[0]["addresses"]
    [widget] = rpc.search_read("product.product", [("code", "=", "WIDGET")],
                               ["default_uom", "template.account_category.customer_taxes"])
    seeded = tryton.seeded
    line = {"type": "line", "product": widget["id"], "quantity": 1.0, "description": "Widget",
            "unit": widget["default_uom"],
            "unit_price": {"__class__": "Decimal", "decimal": "0.05"},
            "taxes": [["add", widget["template."]["account_category."]["customer_taxes"]]]}
    [sale] = rpc.call("model.sale.sale.create", [{
        "party": party, "invoice_address": address, "shipment_address": address,
        "currency": seeded["currencies"]["USD"], "lines": [["create", [line, line, line]]],
    }], ctx)
    rpc.call("model.sale.sale.quote", [sale], ctx)
    rpc.call("model.sale.sale.confirm", [sale], ctx)
    [done] = rpc.call("model.sale.sale.read", [sale], ["invoices"], ctx)
    rpc.call("model.account.invoice.post", done["invoices"], ctx)
    [invoice] = rpc.call("model.account.invoice.read", done["invoices"],
                         ["state", "total_amount", "move"], ctx)
    # 0.15 + 19% (0.0285 -> 0.03) = 0.18 USD: receivable 0.17 EUR, revenue 3 x 0.05 + tax 0.03
    assert (invoice["state"], invoice["total_amount"]) == ("posted", Decimal("0.18"))
    lines = rpc.search_read("account.move.line", [("move", "=", invoice["move"])],
                            ["account", "debit", "credit"])
    exchange = [ln for ln in lines if ln["account"] in seeded["exchange_accounts"].values()]
    assert [ln["debit"] - ln["credit"] for ln in exchange] == [Decimal("0.01")]


# --------------------------------------------------------------------------- PostgreSQL


def _pg_database_names() -> set[str]:
    try:
        with psycopg.connect(pg_admin_url(), autocommit=True, connect_timeout=10) as conn:
            return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL at {pg_admin_url()} is not reachable: {exc}", pytrace=False)


def _start(server: TrytonServer) -> TrytonServer:
    try:
        return server.start()
    except Exception as exc:
        pytest.fail(f"cannot start the PostgreSQL-backed Tryton sandbox: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def pg_tryton() -> Iterator[TrytonServer]:
    """A PostgreSQL-backed sandbox (the first run builds the PostgreSQL template)."""
    try:
        prepared = prepare(backend="postgresql")
    except Exception as exc:
        pytest.fail(f"cannot build the PostgreSQL Tryton template: {exc}", pytrace=False)
    timings = {k: round(v, 2) for k, v in prepared.timings.items()}
    server = _start(TrytonServer(backend="postgresql"))
    print(f"\n[tryton postgresql] prepare {timings}; server start {server.start_seconds:.2f} s")
    yield server
    server.stop()


def test_postgresql_server_runs_on_its_own_copy_of_the_seeded_template(
        pg_tryton: TrytonServer) -> None:
    template = template_info(backend="postgresql")
    assert template["seed_version"] == SEED_VERSION
    assert pg_tryton.database.startswith(PG_RUN_PREFIX)
    assert pg_tryton.rpc_url.endswith(f"/{pg_tryton.database}/rpc/")
    assert {pg_tryton.database, pg_template_name()} <= _pg_database_names()
    client = Rpc(pg_tryton)
    try:
        client.login()
        products = client.search_read("product.product", [("code", "in", list(SEED_PRODUCTS))],
                                      ["code"])
        assert {p["code"] for p in products} == set(SEED_PRODUCTS)
        countries = client.call("model.country.country.search_count", [], 0, None,
                                client.context)
        assert countries > 200
        usd = client.search_read("currency.currency", [("code", "=", "USD")], ["rate"])
        assert usd[0]["rate"] == Decimal("1.08")
        assert pg_tryton.seeded == template["seeded"]
        assert pg_tryton.seeded["currencies"]["USD"] == usd[0]["id"]
    finally:
        client.close()


def test_postgresql_servers_started_at_once_get_separate_databases_dropped_on_stop(
        pg_tryton: TrytonServer) -> None:
    servers = [TrytonServer(backend="postgresql") for _ in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:
            started = list(pool.map(_start, servers))
        names = [s.database for s in started]
        assert len(set(names)) == 2 and pg_tryton.database not in names
        assert set(names) <= _pg_database_names()
        client = Rpc(started[0])
        try:
            client.login()
            client.call("model.party.party.create", [{"name": "Only in the first run"}],
                        client.context)
        finally:
            client.close()
        other = Rpc(started[1])
        try:
            other.login()
            assert not other.search_read("party.party",
                                         [("name", "=", "Only in the first run")], ["id"])
        finally:
            other.close()
    finally:
        for server in servers:
            server.stop()
    assert not set(names) & _pg_database_names()
    assert all(s.database == "crmhub" for s in servers)


def test_orphaned_run_databases_are_dropped_when_a_server_starts(
        pg_tryton: TrytonServer) -> None:
    now = int(time.time())
    orphan = f"{PG_RUN_PREFIX}{now - PG_ORPHAN_SECONDS - 60}_1_0rphan"
    recent = f"{PG_RUN_PREFIX}{now - 60}_1_recent"
    with psycopg.connect(pg_admin_url(), autocommit=True, connect_timeout=10) as conn:
        for name in (orphan, recent):
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        server = _start(TrytonServer(backend="postgresql"))
        server.stop()
        names = _pg_database_names()
        assert orphan not in names  # old and nobody connected: a killed run's
        assert recent in names  # may belong to a run in progress elsewhere
    finally:
        with psycopg.connect(pg_admin_url(), autocommit=True, connect_timeout=10) as conn:
            for name in (orphan, recent):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
