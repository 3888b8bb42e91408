"""Transport security, for real: the hub's Kafka clients through a TLS endpoint (stunnel) in
front of the Tansu broker, SASL SCRAM against Tansu's own SCRAM authentication, HTTPS on the
hub's HTTP server; and the settings that configure them, checked where they are wrong.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import ValidationError
from typer.testing import CliRunner

from crmhub import topics
from crmhub.cli import app
from crmhub.embedded import EmbeddedBroker
from crmhub.http import HttpServer
from crmhub.hub import Hub
from crmhub.settings import HubSettings
from crmhub.transport import (
    KafkaSecurityError,
    check_kafka,
    faststream_security,
    kafka_client_args,
    transport_warnings,
)
from tests.conftest import eventually, fast_settings
from tests.flows.support import Ledgerbook, customer_event, customer_flow
from tests.pki import TestCa
from tests.tls_broker import Endpoint, TlsBroker


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, ca: TestCa) -> Iterator[TlsBroker]:
    """Mutual TLS on the advertised endpoint; a second endpoint whose certificate names
    only kafka.test (for the hostname check)."""
    broker = TlsBroker(tmp_path, [
        Endpoint("kafka", ca.server("broker"), client_ca=ca.ca_file),
        Endpoint("misnamed", ca.server("misnamed", dns=("kafka.test",), ips=()),
                 client_ca=ca.ca_file)]).start()
    yield broker
    broker.stop()


def tls_settings(bootstrap: str, tmp_path: Path, ca: TestCa, **overrides: Any) -> HubSettings:
    client = ca.client("crmhub")
    values: dict[str, Any] = dict(bootstrap_servers=bootstrap, kafka_tls=True,
                                  kafka_tls_ca_file=ca.ca_file, kafka_tls_cert_file=client.cert,
                                  kafka_tls_key_file=client.key,
                                  database_url=f"sqlite:///{tmp_path / 'state.sqlite'}")
    values.update(overrides)
    return fast_settings(**values)


@pytest.fixture
async def hubs() -> AsyncIterator[list[Hub]]:
    started: list[Hub] = []
    yield started
    for hub in started:
        await hub.stop()


# -- Kafka over TLS ---------------------------------------------------------------------------
async def test_hub_round_trip_over_mutual_tls(tls_broker: TlsBroker, ca: TestCa,
                                              tmp_path: Path, hubs: list[Hub]) -> None:
    """Admin (topics), consumers (faststream), producer (dead letters): all through TLS."""
    settings = tls_settings(tls_broker.bootstrap_servers, tmp_path, ca)
    book = Ledgerbook()
    hub = Hub(settings, [customer_flow(book)])
    hubs.append(hub)
    await hub.start()
    client = kafka_client_args(settings, tls_broker.bootstrap_servers)
    assert client["security_protocol"] == "SSL"
    producer = AIOKafkaProducer(**client)
    await producer.start()
    try:
        await producer.send_and_wait(topics.CUSTOMER, customer_event("C-TLS").to_bytes(),
                                     key=b"C-TLS")
        await producer.send_and_wait(topics.CUSTOMER, b"not an envelope", key=b"junk")
    finally:
        await producer.stop()
    await eventually(lambda: "customer:C-TLS" in book.records, message="sink called over TLS")
    dlq = topics.dlq(topics.CUSTOMER, "book-customers")
    consumer = AIOKafkaConsumer(dlq, **client, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert record.value == b"not an envelope"  # published by the hub's producer, over TLS
    assert hub.store.summary()["dead_letters"] == {"customer_to_book/dead": 1}


async def test_a_broker_signed_by_another_ca_is_refused_with_a_clear_error(
        tls_broker: TlsBroker, tmp_path: Path, ca: TestCa) -> None:
    other = TestCa(tmp_path / "other", "somebody else's CA")
    settings = tls_settings(tls_broker.bootstrap_servers, tmp_path, ca,
                            kafka_tls_ca_file=other.ca_file)
    hub = Hub(settings, [customer_flow(Ledgerbook())])
    with pytest.raises(KafkaSecurityError) as refused:
        await hub.start()
    await hub.stop()
    message = str(refused.value)
    assert f"Kafka at {tls_broker.bootstrap_servers} is not trusted" in message
    assert "certificate verify failed" in message or "self-signed" in message or \
        "unable to get local issuer" in message
    assert "CRMHUB_KAFKA_TLS_CA_FILE" in message


def test_crmhub_run_names_the_wrong_ca_and_exits(tls_broker: TlsBroker, tmp_path: Path,
                                                  ca: TestCa) -> None:
    """As ops see it: `crmhub run` prints one line saying what to fix, exit code 2."""
    other = TestCa(tmp_path / "other", "somebody else's CA")
    client = ca.client("crmhub")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMHUB_")}
    env.update(CRMHUB_BOOTSTRAP_SERVERS=tls_broker.bootstrap_servers, CRMHUB_KAFKA_TLS="true",
               CRMHUB_KAFKA_TLS_CA_FILE=str(other.ca_file),
               CRMHUB_KAFKA_TLS_CERT_FILE=str(client.cert),
               CRMHUB_KAFKA_TLS_KEY_FILE=str(client.key), CRMHUB_HTTP_PORT="0",
               CRMHUB_FLOWS="customer_to_filedrop", FILEDROP_DIRECTORY=str(tmp_path / "drop"),
               CRMHUB_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.sqlite'}")
    done = subprocess.run([str(Path(sys.executable).parent / "crmhub"), "run"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "error: Kafka at" in done.stderr and "CRMHUB_KAFKA_TLS_CA_FILE" in done.stderr
    assert "Traceback" not in done.stderr


async def test_mutual_tls_without_a_client_certificate_is_refused(
        tls_broker: TlsBroker, tmp_path: Path, ca: TestCa) -> None:
    settings = tls_settings(tls_broker.bootstrap_servers, tmp_path, ca,
                            kafka_tls_cert_file=None, kafka_tls_key_file=None)
    with pytest.raises(KafkaSecurityError, match="client certificate") as refused:
        await check_kafka(settings, tls_broker.bootstrap_servers)
    assert "CRMHUB_KAFKA_TLS_CERT_FILE" in str(refused.value)


async def test_hostname_check_refuses_a_certificate_for_another_name(
        tls_broker: TlsBroker, tmp_path: Path, ca: TestCa) -> None:
    misnamed = tls_broker.endpoint("misnamed")  # its certificate names only kafka.test
    checked = tls_settings(misnamed, tmp_path, ca)
    with pytest.raises(KafkaSecurityError, match="CRMHUB_KAFKA_TLS_CHECK_HOSTNAME"):
        await check_kafka(checked, misnamed)
    # Turned off, the chain is still verified (same CA), only the name is not compared.
    await check_kafka(tls_settings(misnamed, tmp_path, ca, kafka_tls_check_hostname=False),
                      misnamed)
    other = TestCa(tmp_path / "other", "somebody else's CA")
    with pytest.raises(KafkaSecurityError, match="not trusted"):
        await check_kafka(tls_settings(misnamed, tmp_path, ca, kafka_tls_check_hostname=False,
                                       kafka_tls_ca_file=other.ca_file), misnamed)


# -- SASL SCRAM --------------------------------------------------------------------------------
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_login_reaches_a_broker_that_speaks_scram(
        tmp_path: Path, ca: TestCa, mechanism: str, hubs: list[Hub]) -> None:
    """Tansu with --authentication offers only SCRAM-SHA-256/512 and checks the login
    against its user store. Its memory-only build refuses to create a user before one has
    logged in, so no login can succeed here (docs/security.md): what this proves is that
    the hub speaks the configured SCRAM mechanism, over TLS, to a broker that checks it,
    and stops with one clear error when the login is refused."""
    broker = TlsBroker(tmp_path, [Endpoint("kafka", ca.server("broker"))],
                       authentication=True).start()
    try:
        settings = tls_settings(broker.bootstrap_servers, tmp_path, ca, sasl_mechanism=mechanism,
                                sasl_username="crmhub", sasl_password="not-the-password",
                                kafka_tls_cert_file=None, kafka_tls_key_file=None)
        assert kafka_client_args(settings, broker.bootstrap_servers)["security_protocol"] == \
            "SASL_SSL"
        hub = Hub(settings, [customer_flow(Ledgerbook())])
        hubs.append(hub)
        with pytest.raises(KafkaSecurityError) as refused:
            await hub.start()
        message = str(refused.value)
        assert f"refused the SASL {mechanism} login as 'crmhub'" in message
        assert "CRMHUB_SASL_PASSWORD" in message and "not-the-password" not in message
    finally:
        broker.stop()


@pytest.mark.parametrize(("tls", "mechanism", "protocol", "security"), [
    (False, "PLAIN", "SASL_PLAINTEXT", SASLPlaintext),
    (False, "SCRAM-SHA-256", "SASL_PLAINTEXT", SASLScram256),
    (True, "SCRAM-SHA-256", "SASL_SSL", SASLScram256),
    (True, "SCRAM-SHA-512", "SASL_SSL", SASLScram512),
])
def test_every_kafka_client_gets_the_same_sasl_and_tls(
        tmp_path: Path, ca: TestCa, tls: bool, mechanism: str, protocol: str,
        security: type[BaseSecurity]) -> None:
    """Producer/admin (aiokafka arguments) and consumers (faststream's security object)
    come from one place and agree: the faststream object yields the same aiokafka args."""
    from faststream.kafka.security import parse_security

    settings = HubSettings(bootstrap_servers="kafka:9093", sasl_mechanism=mechanism,
                           sasl_username="crmhub", sasl_password="s3cret", kafka_tls=tls,
                           kafka_tls_ca_file=ca.ca_file if tls else None)
    args = kafka_client_args(settings, "kafka:9093")
    assert args["security_protocol"] == protocol
    assert (args["sasl_mechanism"], args["sasl_plain_username"],
            args["sasl_plain_password"]) == (mechanism, "crmhub", "s3cret")
    assert isinstance(args.get("ssl_context"), ssl.SSLContext) is tls
    consumer = faststream_security(settings)
    assert type(consumer) is security
    parsed = parse_security(consumer)
    assert parsed["security_protocol"] == protocol
    assert parsed["sasl_mechanism"] == mechanism
    if tls:
        context = parsed["ssl_context"]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_plain_settings_make_plain_clients() -> None:
    settings = HubSettings(bootstrap_servers="127.0.0.1:9092")
    assert kafka_client_args(settings, "127.0.0.1:9092") == {
        "bootstrap_servers": "127.0.0.1:9092", "client_id": "crmhub",
        "security_protocol": "PLAINTEXT"}
    assert faststream_security(settings) is None


# -- settings ----------------------------------------------------------------------------------
def problems(**values: Any) -> str:
    with pytest.raises(ValidationError) as invalid:
        HubSettings(**values)
    return str(invalid.value)


def test_tls_settings_are_validated_where_they_are_wrong(tmp_path: Path, ca: TestCa) -> None:
    client = ca.client()
    remote = {"bootstrap_servers": "kafka:9093"}
    assert "is not a file" in problems(**remote, kafka_tls=True,
                                       kafka_tls_ca_file=tmp_path / "missing.pem")
    assert "go together" in problems(**remote, kafka_tls=True, kafka_tls_cert_file=client.cert)
    assert "CRMHUB_KAFKA_TLS=true" in problems(**remote, kafka_tls_ca_file=ca.ca_file)
    assert "embedded" in problems(kafka_tls=True)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    assert "cannot load the CA file" in problems(**remote, kafka_tls=True,
                                                 kafka_tls_ca_file=not_pem)
    assert "cannot load the client certificate" in problems(
        **remote, kafka_tls=True, kafka_tls_cert_file=client.cert, kafka_tls_key_file=not_pem)
    locked = ca.server("locked", key_password="right")
    assert "wrong key password" in problems(http_tls_cert_file=locked.cert,
                                            http_tls_key_file=locked.key,
                                            http_tls_key_password="wrong")
    assert "KEY_PASSWORD is set" in problems(http_tls_key_password="x")
    ok = HubSettings(**remote, kafka_tls=True, kafka_tls_ca_file="", kafka_tls_cert_file="",
                     kafka_tls_key_file="")  # empty = unset, as compose passes them
    assert ok.kafka_tls_ca_file is None


def test_config_check_warns_about_clear_text_connections(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CRMHUB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CRMHUB_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("CRMHUB_SASL_USERNAME", "crmhub")
    monkeypatch.setenv("CRMHUB_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("CRMHUB_HTTP_HOST", "0.0.0.0")
    result = CliRunner().invoke(app, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert "warning: CRMHUB_KAFKA_TLS is off" in result.output
    assert "PLAIN without CRMHUB_KAFKA_TLS" in result.output
    assert "plain HTTP" in result.output
    loopback = HubSettings(bootstrap_servers="127.0.0.1:9092", http_host="127.0.0.1")
    assert transport_warnings(loopback) == []  # the embedded/test setups are not nagged


# -- HTTPS -------------------------------------------------------------------------------------
async def test_the_hub_serves_https_with_its_certificate(
        broker: EmbeddedBroker, tmp_path: Path, ca: TestCa, hubs: list[Hub]) -> None:
    server_cert = ca.server("hub", key_password="hub-key-secret")
    settings = fast_settings(bootstrap_servers=broker.bootstrap_servers,
                             database_url=f"sqlite:///{tmp_path / 'state.sqlite'}",
                             http_tls_cert_file=server_cert.cert,
                             http_tls_key_file=server_cert.key,
                             http_tls_key_password="hub-key-secret")
    hub = Hub(settings, [])
    hubs.append(hub)
    await hub.start()
    server = HttpServer(hub, "127.0.0.1", 0)
    await server.start()
    try:
        assert server.url == f"https://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(verify=ssl.create_default_context(
                cafile=str(ca.ca_file))) as client:
            health = await client.get(f"https://127.0.0.1:{server.port}/healthz")
            ready = await client.get(f"https://localhost:{server.port}/readyz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert ready.status_code == 200
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
                await plain.get(f"http://127.0.0.1:{server.port}/healthz")
        other = TestCa(tmp_path / "other", "somebody else's CA")
        async with httpx.AsyncClient(verify=ssl.create_default_context(
                cafile=str(other.ca_file))) as stranger:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await stranger.get(f"https://127.0.0.1:{server.port}/healthz")
    finally:
        await server.stop()


async def test_crmhub_health_asks_healthz_over_the_configured_scheme(
        broker: EmbeddedBroker, tmp_path: Path, ca: TestCa, hubs: list[Hub],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's HEALTHCHECK: `crmhub health` against a running hub, HTTP and HTTPS."""
    for name in list(os.environ):
        if name.startswith("CRMHUB_"):
            monkeypatch.delenv(name)
    server_cert = ca.server("hub")
    runner = CliRunner()
    for tls in (False, True):
        files = {"http_tls_cert_file": server_cert.cert,
                 "http_tls_key_file": server_cert.key} if tls else {}
        hub = Hub(fast_settings(bootstrap_servers=broker.bootstrap_servers,
                                database_url=f"sqlite:///{tmp_path / f'{tls}.sqlite'}", **files),
                  [])
        hubs.append(hub)
        await hub.start()
        server = HttpServer(hub, "127.0.0.1", 0)
        await server.start()
        monkeypatch.setenv("CRMHUB_HTTP_PORT", str(server.port))
        if tls:
            monkeypatch.setenv("CRMHUB_HTTP_TLS_CERT_FILE", str(server_cert.cert))
            monkeypatch.setenv("CRMHUB_HTTP_TLS_KEY_FILE", str(server_cert.key))
        try:
            # urllib blocks: run the command off the loop the server answers on.
            healthy = await asyncio.to_thread(runner.invoke, app, ["health"])
        finally:
            await server.stop()
        assert healthy.exit_code == 0, healthy.output
        assert f"{server.scheme}://127.0.0.1:{server.port}/healthz: 200" in healthy.output
        gone = await asyncio.to_thread(runner.invoke, app, ["health"])
        assert gone.exit_code == 1
