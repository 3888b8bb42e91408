"""Hub settings: environment variables (prefix CRMHUB_) over an optional TOML file.

`crmhub config check` loads these and names every problem. Connector settings live with each
connector (env prefix = the system's slug) so a connector is configured where it is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from connectors.tls import empty_is_none, readable_file

CONFIG_FILE_ENV = "CRMHUB_CONFIG"
TLS_FILES = ("kafka_tls_ca_file", "kafka_tls_cert_file", "kafka_tls_key_file",
             "http_tls_cert_file", "http_tls_key_file")


class HubSettings(BaseSettings):
    """Everything the runtime needs; defaults are the embedded demo setup."""

    model_config = SettingsConfigDict(env_prefix="CRMHUB_", extra="forbid", validate_default=True)

    # Broker.
    bootstrap_servers: str = Field(
        default="", description="Kafka bootstrap servers (host:port,...); empty = start the "
        "embedded Tansu broker")
    client_id: str = Field(default="crmhub",
                           description="Kafka client id (producer, consumers, admin)")
    enable_idempotence: bool = Field(
        default=False, description="idempotent producer, and acks=all instead of acks=1. "
        "Tansu cannot do it; turn it on for Apache Kafka")
    session_timeout_ms: int = Field(
        default=2000, ge=1000, description="consumer group session timeout: 2000 keeps "
        "Tansu's joins fast; use >= 6000 on Apache Kafka")
    heartbeat_interval_ms: int = Field(
        default=500, ge=100, description="at most a third of the session timeout")
    # A flow that waits for a target system keeps its partition; give it room before the
    # group considers the consumer dead.
    max_poll_interval_ms: int = Field(
        default=3_600_000, ge=10_000, description="how long one batch may take before the "
        "group counts the consumer as dead; a flow waiting for a down target holds its batch")
    topic_partitions: int = Field(
        default=4, ge=1, le=1024, description="partitions of the topics the hub creates "
        "(dead-letter topics get 1)")
    replication_factor: int = Field(default=1, ge=1, le=16,
                                    description="replication factor of the topics it creates")
    workers_per_flow: int = Field(
        default=8, ge=1, le=256, description="handlers running at once per flow in one "
        "process, each for a different key (one key's events run in order)")
    batch_max_records: int = Field(default=500, ge=1, le=10_000,
                                   description="most records in one fetched batch")
    batch_timeout_ms: int = Field(default=100, ge=1, le=10_000,
                                  description="how long one fetch waits for records")
    # Tansu holds a fetch this long even when records arrive meanwhile.
    fetch_max_wait_ms: int = Field(
        default=20, ge=0, le=10_000, description="how long the broker may hold a fetch with "
        "no new records (on Tansu: what an idle flow adds to latency)")
    max_event_bytes: int = Field(
        default=1_048_576, ge=1024, description="a larger message value is dead-lettered "
        "without being parsed")
    # Kafka transport security (docs/security.md). SASL: empty username = no SASL.
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism when a username is set (SCRAM "
        "never sends the password)")
    sasl_username: str = Field(
        default="", description="non-empty = SASL for every Kafka client (SASL_PLAINTEXT, or "
        "SASL_SSL with TLS)")
    sasl_password: SecretStr = Field(default=SecretStr(""), description="SASL password")
    # TLS to the brokers: the system's CAs unless a CA file is given; a client certificate
    # and key for brokers that require mutual TLS.
    kafka_tls: bool = Field(
        default=False, description="TLS to the brokers (SSL / SASL_SSL) for producer, "
        "consumers and admin client; needs bootstrap_servers (the embedded broker is plain "
        "loopback)")
    kafka_tls_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle the brokers' certificates must chain to; "
        "empty = the system's CAs. Needs kafka_tls")
    kafka_tls_cert_file: Path | None = Field(
        default=None, description="client certificate for mutual TLS (with the key file: "
        "both or neither)")
    kafka_tls_key_file: Path | None = Field(
        default=None, description="client key for mutual TLS (with the certificate file)")
    kafka_tls_key_password: SecretStr = Field(
        default=SecretStr(""), description="password of an encrypted client key")
    kafka_tls_check_hostname: bool = Field(
        default=True, description="the broker's certificate must name the host in the "
        "bootstrap/advertised address (the chain is verified either way)")

    # State store.
    database_url: SecretStr = Field(
        default=SecretStr("sqlite:///var/crmhub.sqlite"), description="state store: "
        "sqlite:///PATH (relative to the working directory) or "
        "postgresql+psycopg://user:pw@host:5432/db (production, replicas)")

    # Retry, park and sweep policy (data, not code).
    retry_initial_seconds: float = Field(
        default=0.5, gt=0, description="first backoff after a transient failure; doubles "
        "each retry (at most retry_max_seconds)")
    retry_max_seconds: float = Field(
        default=60.0, gt=0, description="backoff ceiling; retries never stop while the "
        "target is down")
    retry_jitter_seconds: float = Field(default=0.5, ge=0,
                                        description="random 0..N seconds added to each backoff")
    park_ttl_seconds: float = Field(
        default=86_400.0, gt=0, description="how long a parked message waits for its "
        "dependency (from its first park) before it is dead-lettered as ParkExpired")
    sweep_interval_seconds: float = Field(
        default=1.0, gt=0, description="sweeper period: parked replays, expiries, queued "
        "dead-letter replays")

    # Change feeds (pollers of systems without push).
    poll_interval_seconds: float = Field(
        default=5.0, gt=0, description="how often each change feed polls its system")
    poll_overlap_seconds: float = Field(
        default=120.0, ge=0, description="how far before its cursor each poll re-reads, so "
        "a change committed late with an earlier stamp is not missed (the ledger drops "
        "what was read before)")

    flows: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="which flows and feeds run: names from flows.FLOWS "
        "and flows.FEEDS, comma-separated (a list in TOML); empty = all. Unknown names are "
        "refused")

    # HTTP: /healthz /readyz /metrics /status and the dead-letter console.
    http_host: str = Field(default="127.0.0.1",
                           description="HTTP bind address (the Docker image sets 0.0.0.0)")
    http_port: int = Field(default=8080, ge=0, le=65535,
                           description="HTTP port; 0 = any free port")
    # HTTPS: both files (PEM; the certificate file may hold the chain), or neither.
    http_tls_cert_file: Path | None = Field(
        default=None, description="with the key file: HTTPS on the HTTP port (PEM; the "
        "certificate file may hold the chain); neither = plain HTTP")
    http_tls_key_file: Path | None = Field(
        default=None, description="the HTTPS key (with the certificate file)")
    http_tls_key_password: SecretStr = Field(
        default=SecretStr(""), description="password of an encrypted HTTPS key")
    console_token: SecretStr = Field(
        default=SecretStr(""), description="bearer token of the dead-letter console (it "
        "shows payloads); empty = the console answers 403")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="root log level; DEBUG also logs each batch's offsets")

    @field_validator("flows", mode="before")
    @classmethod
    def _split_flows(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("flows")
    @classmethod
    def _known_flows(cls, value: list[str]) -> list[str]:
        if value:
            from flows import FEEDS, FLOWS

            known = {flow.name for flow in FLOWS} | {feed.name for feed in FEEDS}
            unknown = [name for name in value if name not in known]
            if unknown:
                raise ValueError(f"unknown flows {unknown}; known: {sorted(known)}")
        return value

    @field_validator(*TLS_FILES, mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: Any) -> Any:
        return empty_is_none(value)

    @field_validator(*TLS_FILES)
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        return readable_file(value)

    @model_validator(mode="after")
    def _check(self) -> HubSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(
                "heartbeat_interval_ms must be at most a third of session_timeout_ms "
                f"({self.heartbeat_interval_ms} * 3 > {self.session_timeout_ms})"
            )
        if self.retry_initial_seconds > self.retry_max_seconds:
            raise ValueError("retry_initial_seconds must not exceed retry_max_seconds")
        url = self.database_url.get_secret_value()
        if not url.startswith(("sqlite://", "postgresql")):
            raise ValueError("database_url must be sqlite:///PATH or postgresql+psycopg://...")
        self._check_tls()
        return self

    def _check_tls(self) -> None:
        from crmhub import transport

        kafka_files = {"CRMHUB_KAFKA_TLS_CA_FILE": self.kafka_tls_ca_file,
                       "CRMHUB_KAFKA_TLS_CERT_FILE": self.kafka_tls_cert_file,
                       "CRMHUB_KAFKA_TLS_KEY_FILE": self.kafka_tls_key_file}
        given = [name for name, path in kafka_files.items() if path is not None]
        if given and not self.kafka_tls:
            raise ValueError(f"{', '.join(given)} set but CRMHUB_KAFKA_TLS is off: set "
                             "CRMHUB_KAFKA_TLS=true")
        if self.kafka_tls and self.embedded_broker:
            raise ValueError("CRMHUB_KAFKA_TLS needs CRMHUB_BOOTSTRAP_SERVERS: the embedded "
                             "broker listens on loopback without TLS")
        for prefix, cert, key, password in (
                ("CRMHUB_KAFKA_TLS", self.kafka_tls_cert_file, self.kafka_tls_key_file,
                 self.kafka_tls_key_password),
                ("CRMHUB_HTTP_TLS", self.http_tls_cert_file, self.http_tls_key_file,
                 self.http_tls_key_password)):
            if (cert is None) != (key is None):
                raise ValueError(f"{prefix}_CERT_FILE and {prefix}_KEY_FILE go together: "
                                 "set both or neither")
            if password.get_secret_value() and key is None:
                raise ValueError(f"{prefix}_KEY_PASSWORD is set but {prefix}_KEY_FILE is not")
        if self.kafka_tls:
            transport.kafka_ssl_context(self)  # ValueError naming the file that cannot load
        if self.http_tls_cert_file is not None and self.http_tls_key_file is not None:
            transport.server_ssl_check(self.http_tls_cert_file, self.http_tls_key_file,
                                       self.http_tls_key_password.get_secret_value())

    @property
    def embedded_broker(self) -> bool:
        return not self.bootstrap_servers.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(_TopLevelToml(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


class _TopLevelToml(TomlConfigSettingsSource):
    """The file's top-level keys: its tables ([tryton], [bottlecrm] ...) belong to the
    connectors, which read their own (`crmhub config check` names a table nobody reads)."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return {key: value for key, value in super()._read_file(file_path).items()
                if not isinstance(value, dict)}


def secret_values(*settings: BaseSettings) -> list[str]:
    """Every non-empty secret in these settings, for redaction of logs and dead letters."""
    found: list[str] = []
    for item in settings:
        for name in type(item).model_fields:
            value = getattr(item, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
    return found


#: Environment variables whose values are secrets whatever connector reads them
#: (TRYTON_PASSWORD, BOTTLECRM_TOKEN, ..._WEBHOOK_SECRET, ...).
SECRET_ENV_SUFFIXES = ("PASSWORD", "TOKEN", "SECRET", "API_KEY")


def secret_env_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of secret-named environment variables: connectors' secrets, redacted too."""
    env = dict(os.environ) if environ is None else environ
    return [value for name, value in env.items()
            if name.upper().endswith(SECRET_ENV_SUFFIXES) and len(value) >= 4]


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
