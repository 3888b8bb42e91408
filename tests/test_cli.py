"""The `crmhub` command as ops use it, on a real state store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from typer.testing import CliRunner

from crmhub.cli import app
from crmhub.embedded import EmbeddedBroker
from crmhub.errors import MissingDependency
from crmhub.store import RawMessage, Store
from schemas.state import utcnow

runner = CliRunner()


@pytest.fixture
def store(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CRMHUB_DATABASE_URL", database_url)
    store = Store(database_url)
    store.migrate()
    yield store
    store.close()


def dead(store: Store, value: bytes, error: str = "bad") -> int:
    row = store.dead_letter(flow="order_to_filedrop", group_id="filedrop-orders",
                            message=RawMessage("canonical.order.v1", 2, 7, b"O-1", value,
                                               (("content-type", b"application/json"),)),
                            event_id=None, entity="", entity_id=None, error=ValueError(error),
                            error_text=f"ValueError: {error}", attempts=1,
                            first_failure_at=utcnow())
    assert row.id is not None
    return row.id


def test_dlq_list_show_replay_and_discard(store: Store) -> None:
    first, second = dead(store, b'{"order": 1}'), dead(store, b"\xff\x00 not text")
    listing = runner.invoke(app, ["dlq", "list"])
    assert listing.exit_code == 0, listing.output
    assert f"#{first}" in listing.output and "canonical.order.v1[2]@7" in listing.output
    assert "2 dead letters" in listing.output
    shown = runner.invoke(app, ["dlq", "show", str(first)])
    info = json.loads(shown.output)
    assert info["value"] == {"order": 1} and info["headers"] == {"content-type":
                                                                 "application/json"}
    assert info["error_class"] == "ValueError" and info["offset"] == 7
    assert "not UTF-8" in json.loads(runner.invoke(app, ["dlq", "show", str(second)]).output)[
        "value"]
    assert runner.invoke(app, ["dlq", "show", "999"]).exit_code == 1
    assert runner.invoke(app, ["dlq", "replay"]).exit_code == 2  # nothing chosen
    replay = runner.invoke(app, ["dlq", "replay", str(first)])
    assert "1 dead letters queued for replay" in replay.output
    assert runner.invoke(app, ["dlq", "discard", str(second)]).exit_code != 0  # reason needed
    discard = runner.invoke(app, ["dlq", "discard", str(second), "--reason", "test order"])
    assert discard.exit_code == 0, discard.output
    statuses = {d.id: d.status for d in store.list_dead_letters()}
    assert statuses == {first: "replay_requested", second: "discarded"}
    filtered = runner.invoke(app, ["dlq", "list", "--status", "discarded"])
    assert f"#{second}" in filtered.output and f"#{first} " not in filtered.output


def test_dlq_replay_by_filter_and_all(store: Store) -> None:
    dead(store, b"1", "ValueA")
    dead(store, b"2", "ValueB")
    out = runner.invoke(app, ["dlq", "replay", "--flow", "order_to_filedrop"])
    assert "2 dead letters queued" in out.output
    dead(store, b"3")
    assert "1 dead letters queued" in runner.invoke(app, ["dlq", "replay", "--all"]).output


def test_parked_list_and_status(store: Store) -> None:
    store.park(flow="order_to_filedrop", group_id="g", message=RawMessage("t", 0, 1, b"k", b"v"),
               event_id="e-1", entity="order", entity_id="O-1",
               waits=MissingDependency("customer", "C-1", "filedrop"), reason="waiting",
               ttl=timedelta(hours=1))
    store.commit_success("customer_to_filedrop", "e-0", "customer", "C-0", [], 1)
    store.mark_down("tryton", "connection refused")
    parked = runner.invoke(app, ["parked", "list"])
    assert "waits for customer C-1 in filedrop" in parked.output and "1 parked" in parked.output
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    assert "customer_to_filedrop" in status.output and "done=1" in status.output
    assert "tryton: UNAVAILABLE since" in status.output and "connection refused" in status.output
    as_json = json.loads(runner.invoke(app, ["status", "--json"]).output)
    assert as_json["parked"] == {"order_to_filedrop": 1}
    assert "awaiting approval: 0" in status.output and as_json["awaiting_approval"] == []


def test_status_shows_orders_awaiting_approval_apart(store: Store) -> None:
    for number, waits in ((1, "approval"), (2, "approval"), (3, "customer")):
        store.park(flow="order_to_erp", group_id="erp-orders",
                   message=RawMessage("t", 0, number, b"k", b"v"), event_id=f"e-{number}",
                   entity="order", entity_id=f"O-{number}",
                   waits=MissingDependency(waits, f"O-{number}", "oa"), reason="waiting",
                   ttl=timedelta(hours=1))
    status = runner.invoke(app, ["status"])
    assert "parked: 3" in status.output
    assert "awaiting approval: 2  O-1 O-2" in status.output
    as_json = json.loads(runner.invoke(app, ["status", "--json"]).output)
    assert as_json["awaiting_approval"] == ["O-1", "O-2"]


def test_config_check_names_each_problem(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    monkeypatch.setenv("CRMHUB_SESSION_TIMEOUT_MS", "10")
    monkeypatch.setenv("CRMHUB_FLOWS", "order_to_filedrop,nope")
    monkeypatch.setenv("CRMHUB_DATABASE_URL", "mysql://root:hunter22@db/crm")
    monkeypatch.setenv("CRMHUB_WORKERS_PERFLOW", "3")
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == 1
    assert "CRMHUB_SESSION_TIMEOUT_MS: Input should be greater than or equal to 1000" in \
        result.output
    assert "CRMHUB_FLOWS" in result.output and "'nope'" in result.output
    assert "CRMHUB_WORKERS_PERFLOW: not a crmhub setting (misspelt?)" in result.output
    assert "hunter22" not in result.output  # secrets are never echoed


def test_config_check_reads_the_toml_file(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    config = tmp_path / "crmhub.toml"
    config.write_text('workers_per_flow = 8\ndatabase_url = "sqlite:///x.sqlite"\n'
                      'sasl_password = "s3cret-value"\n')
    monkeypatch.setenv("CRMHUB_CONFIG", str(config))
    monkeypatch.setenv("CRMHUB_TOPIC_PARTITIONS", "6")  # env wins over the file
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert "CRMHUB_WORKERS_PER_FLOW = 8" in result.output
    assert "CRMHUB_TOPIC_PARTITIONS = 6" in result.output
    assert "s3cret-value" not in result.output
    config.write_text("workers_per_flow = 'many'\n")
    bad = runner.invoke(app, ["config", "check"])
    assert bad.exit_code == 1 and "CRMHUB_WORKERS_PER_FLOW" in bad.output
    monkeypatch.setenv("CRMHUB_CONFIG", str(tmp_path / "missing.toml"))
    missing = runner.invoke(app, ["config", "check"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


@pytest.fixture
def no_connector_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No connector or flow-rule variable, and no config file, from the machine running us."""
    from crmhub.cli import catalogue_settings

    prefixes = tuple(f"{table.upper()}_" for _, cls in catalogue_settings()
                     for table in cls.tables())
    for name in list(os.environ):
        if name.startswith(prefixes) or name == "CRMHUB_CONFIG":
            monkeypatch.delenv(name)
    return monkeypatch


def test_config_check_validates_every_connector_by_its_variables(
        no_connector_env: pytest.MonkeyPatch) -> None:
    no_connector_env.setenv("TRYTON_TIMEOUT_SECONDS", "-1")
    no_connector_env.setenv("TRYTON_PASWORD", "hunter22")  # misspelt: TRYTON_PASSWORD
    no_connector_env.setenv("TRYTON_STOCK_URLL", "http://scm")
    no_connector_env.setenv("BOTTLECRM_DEFAULT_CURRENCY", "XYZ")
    no_connector_env.setenv("MATRIX_PASSWORD", "hunter33")
    no_connector_env.setenv("APPROVAL_CREDIT_HOLD", "maybe")
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == 1
    assert "TRYTON_TIMEOUT_SECONDS: Input should be greater than 0 (got '-1')" in result.output
    assert "TRYTON_PASWORD: not a setting of tryton (misspelt?)" in result.output
    assert "TRYTON_STOCK_URLL: not a setting of tryton_stock (misspelt?)" in result.output
    assert "BOTTLECRM_DEFAULT_CURRENCY: Value error, unknown ISO 4217" in result.output
    assert "APPROVAL_CREDIT_HOLD: Input should be a valid boolean" in result.output
    assert "hunter" not in result.output
    from crmhub.cli import connector_secrets

    # `crmhub run` still starts (the flows that use tryton refuse to, with the reason), and
    # still redacts the valid connectors' secrets
    assert "hunter33" in connector_secrets()


def test_connectors_read_their_table_of_the_config_file(
        no_connector_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from connectors.chatbots.settings import ChatbotSettings
    from connectors.tryton.settings import TrytonSettings
    from connectors.tryton_stock.settings import TrytonStockSettings
    from crmhub.cli import connector_secrets
    from crmhub.settings import HubSettings
    from flows.oa import ApprovalSettings

    config = tmp_path / "crmhub.toml"
    config.write_text('workers_per_flow = 3\n'
                      '[tryton]\nurl = "http://erp:8000"\ndatabase = "erp"\n'
                      'password = "toml-erp-password"\ntimeout_seconds = 12\n'
                      '[tryton_stock]\nurl = "http://scm:8000"\n'
                      '[chatbots]\nwecom_webhook = "https://robot.example/send?key=toml-key"\n'
                      '[approval]\napprovers = ["@lead:example.com"]\n'
                      'amount_limits = { EUR = "1000" }\n')
    no_connector_env.setenv("CRMHUB_CONFIG", str(config))
    no_connector_env.setenv("TRYTON_USER", "from-env")  # the environment beats the file
    erp, scm = TrytonSettings(), TrytonStockSettings()
    assert (erp.url, erp.database, erp.user, erp.timeout_seconds) == (
        "http://erp:8000", "erp", "from-env", 12.0)
    assert (scm.url, scm.database) == ("http://scm:8000", "erp")  # [tryton_stock] over [tryton]
    assert scm.password.get_secret_value() == "toml-erp-password"
    assert ApprovalSettings().rules().amount_limits == {"EUR": Decimal("1000")}
    assert HubSettings().workers_per_flow == 3  # the tables are not the hub's
    secrets = connector_secrets()  # what `crmhub run` hands the hub to redact
    assert "toml-erp-password" in secrets
    assert ChatbotSettings().wecom_webhook.get_secret_value() in secrets
    checked = runner.invoke(app, ["config", "check"])
    assert checked.exit_code == 0, checked.output
    assert "  TRYTON_URL = http://erp:8000" in checked.output
    assert "  TRYTON_STOCK_URL = http://scm:8000" in checked.output
    assert "toml-erp-password" not in checked.output and "toml-key" not in checked.output
    config.write_text(config.read_text() + '[trytn]\nurl = "x"\n[smtp]\nhots = "x"\n')
    typo = runner.invoke(app, ["config", "check"])
    assert typo.exit_code == 1
    assert "CRMHUB_CONFIG: [trytn] is not read by anything" in typo.output
    assert "CRMHUB_CONFIG: [smtp] hots: not a setting of smtp (misspelt?)" in typo.output


async def test_topics_create_on_a_configured_broker(broker: EmbeddedBroker,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("CRMHUB_BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("CRMHUB_DATABASE_URL", f"sqlite:///{tmp_path / 's.sqlite'}")
    result = await asyncio.to_thread(runner.invoke, app, ["topics", "create"])
    assert result.exit_code == 0, result.output
    assert "canonical.order.v1.filedrop-orders.dlq" in result.output
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        assert "canonical.payment.v1" in await admin.list_topics()
    finally:
        await admin.close()
    monkeypatch.delenv("CRMHUB_BOOTSTRAP_SERVERS")
    embedded = await asyncio.to_thread(runner.invoke, app, ["topics", "create"])
    assert embedded.exit_code == 2 and "embedded broker" in embedded.output


def test_schemas_export(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schemas", "export", str(tmp_path)])
    assert result.exit_code == 0
    assert (tmp_path / "event.order.schema.json").is_file()
    assert len(list(tmp_path.glob("*.schema.json"))) == 14
