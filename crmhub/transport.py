"""Transport security of the hub's own connections: TLS and SASL for every Kafka client
(aiokafka producer and admin, faststream consumers), TLS for the HTTP server, and the
warnings `crmhub config check` prints when a connection would travel in the clear.

All of it comes from HubSettings (docs/security.md). Kafka clients get one argument set
from `kafka_client_args()` (aiokafka) or `faststream_security()` (faststream), so the
producer, the admin client and the consumers can never disagree about TLS or SASL.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.tls import is_loopback

if TYPE_CHECKING:
    from faststream.security import BaseSecurity

    from crmhub.settings import HubSettings

PROBE_TIMEOUT_MS = 10_000


class KafkaSecurityError(RuntimeError):
    """The broker refused the hub's TLS or SASL: a configuration problem, not an outage."""


def bootstrap_hosts(bootstrap_servers: str) -> list[tuple[str, int]]:
    """"kafka-1:9092,kafka-2:9092" (or [::1]:9092) as (host, port) pairs; port 9092 if none."""
    found = []
    for server in bootstrap_servers.split(","):
        server = server.strip()
        if not server:
            continue
        host, sep, port = server.rpartition(":")
        if not sep or host.endswith(":") or (":" in host and not host.startswith("[")):
            host, port = server, "9092"  # no port, or a bare IPv6 address
        found.append((host.strip("[]"), int(port)))
    return found


# -- TLS contexts ---------------------------------------------------------------------------
def client_ssl_context(ca_file: Path | None, cert_file: Path | None = None,
                       key_file: Path | None = None, key_password: str = "",
                       check_hostname: bool = True) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or only `ca_file` when given; a client
    certificate for mutual TLS when given. Raises ValueError naming what cannot be loaded."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"cannot load the CA file {ca_file}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname  # verify_mode stays CERT_REQUIRED either way
    if cert_file is not None and key_file is not None:
        try:
            context.load_cert_chain(str(cert_file), str(key_file), password=key_password or None)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cannot load the client certificate {cert_file} with key "
                             f"{key_file} (wrong key password, or not a PEM pair?): {exc}"
                             ) from None
    return context


def server_ssl_check(cert_file: Path, key_file: Path, key_password: str = "") -> None:
    """Load a server certificate and key once, so a bad pair fails at configuration time
    with a clear message instead of inside uvicorn's start-up."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert_file), str(key_file), password=key_password or None)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"cannot load the certificate {cert_file} with key {key_file} "
                         f"(wrong key password, or not a PEM pair?): {exc}") from None


def kafka_ssl_context(settings: HubSettings) -> ssl.SSLContext | None:
    if not settings.kafka_tls:
        return None
    return client_ssl_context(settings.kafka_tls_ca_file, settings.kafka_tls_cert_file,
                              settings.kafka_tls_key_file,
                              settings.kafka_tls_key_password.get_secret_value(),
                              settings.kafka_tls_check_hostname)


# -- Kafka clients --------------------------------------------------------------------------
def security_protocol(settings: HubSettings) -> str:
    sasl = bool(settings.sasl_username)
    if settings.kafka_tls:
        return "SASL_SSL" if sasl else "SSL"
    return "SASL_PLAINTEXT" if sasl else "PLAINTEXT"


def kafka_client_args(settings: HubSettings, bootstrap_servers: str) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer / AIOKafkaAdminClient / AIOKafkaConsumer."""
    args: dict[str, Any] = {"bootstrap_servers": bootstrap_servers,
                            "client_id": settings.client_id,
                            "security_protocol": security_protocol(settings)}
    context = kafka_ssl_context(settings)
    if context is not None:
        args["ssl_context"] = context
    if settings.sasl_username:
        args.update(sasl_mechanism=settings.sasl_mechanism,
                    sasl_plain_username=settings.sasl_username,
                    sasl_plain_password=settings.sasl_password.get_secret_value())
    return args


def faststream_security(settings: HubSettings) -> BaseSecurity | None:
    """The same TLS and SASL for faststream's KafkaBroker (which builds the consumers)."""
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

    context = kafka_ssl_context(settings)
    if settings.sasl_username:
        mechanism = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256,
                     "SCRAM-SHA-512": SASLScram512}[settings.sasl_mechanism]
        return mechanism(settings.sasl_username, settings.sasl_password.get_secret_value(),
                         ssl_context=context, use_ssl=context is not None)
    if context is not None:
        return BaseSecurity(ssl_context=context, use_ssl=True)
    return None


async def check_kafka(settings: HubSettings, bootstrap_servers: str) -> None:
    """Connect once, as the clients will, before they start.

    A refused certificate or login otherwise surfaces as aiokafka's "Unable to bootstrap"
    with the reason only in a log line; here it becomes one KafkaSecurityError that names
    the setting to fix. A server that is merely unreachable is left to the clients' own
    retries. Plain connections (no TLS, no SASL) are not probed.
    """
    if not settings.kafka_tls and not settings.sasl_username:
        return
    from aiokafka.conn import create_conn

    args = kafka_client_args(settings, bootstrap_servers)
    del args["bootstrap_servers"]
    for host, port in bootstrap_hosts(bootstrap_servers):
        where = f"{host}:{port}"
        try:
            conn = await create_conn(host, port, request_timeout_ms=PROBE_TIMEOUT_MS, **args)
        except ssl.SSLCertVerificationError as exc:
            hint = ("the name in CRMHUB_BOOTSTRAP_SERVERS is not in its certificate "
                    "(CRMHUB_KAFKA_TLS_CHECK_HOSTNAME)" if "mismatch" in str(exc)
                    else "check CRMHUB_KAFKA_TLS_CA_FILE: the CA that signed it")
            raise KafkaSecurityError(f"Kafka at {where} is not trusted: its TLS certificate "
                                     f"does not verify ({exc.verify_message}); {hint}"
                                     ) from None
        except (OSError, TimeoutError) as exc:  # not reachable (yet): the clients retry
            if isinstance(exc, ssl.SSLError):
                raise KafkaSecurityError(f"Kafka at {where}: TLS handshake failed: {exc}"
                                         ) from None
            continue
        except Exception as exc:
            raise KafkaSecurityError(_refusal(settings, where, exc)) from None
        conn.close()
        return


def _refusal(settings: HubSettings, where: str, exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError):
        if "CERTIFICATE_REQUIRED" in str(cause) or "certificate required" in str(cause):
            return (f"Kafka at {where} asks for a client certificate the hub did not send; "
                    "set CRMHUB_KAFKA_TLS_CERT_FILE and CRMHUB_KAFKA_TLS_KEY_FILE")
        return (f"Kafka at {where} ended the TLS session: {cause} (client certificate "
                "refused? check CRMHUB_KAFKA_TLS_CERT_FILE / _KEY_FILE)")
    if settings.sasl_username:
        # aiokafka reports a refused SCRAM login as a KeyError on the server's final message
        # or as a Sasl* Kafka error; a refused PLAIN login as a closed connection.
        return (f"Kafka at {where} refused the SASL {settings.sasl_mechanism} login as "
                f"{settings.sasl_username!r} ({type(exc).__name__}: {exc}); check "
                "CRMHUB_SASL_USERNAME, CRMHUB_SASL_PASSWORD and CRMHUB_SASL_MECHANISM")
    return f"Kafka at {where} refused the connection: {type(exc).__name__}: {exc}"


# -- HTTP server ----------------------------------------------------------------------------
def uvicorn_tls_args(settings: HubSettings) -> dict[str, Any]:
    """ssl_* keyword arguments for uvicorn.Config; empty = plain HTTP."""
    if settings.http_tls_cert_file is None or settings.http_tls_key_file is None:
        return {}
    password = settings.http_tls_key_password.get_secret_value()
    return {"ssl_certfile": str(settings.http_tls_cert_file),
            "ssl_keyfile": str(settings.http_tls_key_file),
            "ssl_keyfile_password": password or None}


# -- what `crmhub config check` warns about ---------------------------------------------------
def transport_warnings(settings: HubSettings) -> list[str]:
    """Connections that would leave the machine unencrypted or unauthenticated."""
    warnings = []
    remote = [f"{h}:{p}" for h, p in bootstrap_hosts(settings.bootstrap_servers)
              if not is_loopback(h)]
    if remote and not settings.kafka_tls:
        warnings.append(f"CRMHUB_KAFKA_TLS is off: records and credentials to "
                        f"{', '.join(remote)} travel unencrypted")
    if remote and not settings.sasl_username:
        warnings.append("CRMHUB_SASL_USERNAME is empty: the hub does not authenticate to Kafka")
    if (remote and settings.sasl_username and settings.sasl_mechanism == "PLAIN"
            and not settings.kafka_tls):
        warnings.append("CRMHUB_SASL_MECHANISM=PLAIN without CRMHUB_KAFKA_TLS sends the "
                        "Kafka password in the clear; use SCRAM-SHA-512 or TLS")
    if settings.kafka_tls and not settings.kafka_tls_check_hostname:
        warnings.append("CRMHUB_KAFKA_TLS_CHECK_HOSTNAME is off: any certificate of the "
                        "trusted CA is accepted for any broker")
    if not is_loopback(settings.http_host) and settings.http_tls_cert_file is None:
        warnings.append(f"the HTTP server on {settings.http_host} is plain HTTP (console "
                        "token, webhooks): set CRMHUB_HTTP_TLS_CERT_FILE and "
                        "CRMHUB_HTTP_TLS_KEY_FILE, or terminate TLS in front of the hub")
    return warnings
