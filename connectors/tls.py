"""The TLS policy the connectors share: a connection that leaves the machine is encrypted
unless the operator says it may not be; loopback (a local relay, the sandboxes) may be plain.

Settings call `require_tls()` in their validators, so a plain connection to a remote host is
refused when the hub starts (and by `crmhub config check`), not found out from a packet dump.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Any


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: traffic that never leaves the machine."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_tls(prefix: str, host: str, *, encrypted: bool, allow_plaintext: bool,
                how: str) -> None:
    """ValueError unless the connection to `host` is encrypted, on loopback, or explicitly
    allowed in the clear (`<prefix>ALLOW_PLAINTEXT=true`)."""
    if encrypted or allow_plaintext or is_loopback(host):
        return
    raise ValueError(f"{host} is not a loopback address, so the connection must use TLS: "
                     f"{how}; or set {prefix}ALLOW_PLAINTEXT=true for a trusted network")


def empty_is_none(value: Any) -> Any:
    """For optional path settings: an empty env var (compose passes them) means unset."""
    return None if isinstance(value, str) and not value.strip() else value


def readable_file(value: Path | None) -> Path | None:
    """For optional path settings: the file must exist and be readable now."""
    if value is not None:
        if not value.is_file():
            raise ValueError(f"{value} is not a file")
        try:
            value.open("rb").close()
        except OSError as exc:
            raise ValueError(f"{value} cannot be read: {exc.strerror}") from None
    return value


def verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate and hostname checked; against `ca_file` only when one is given."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
