"""BottleCRM's webhook signature: parse and verify, pure (no I/O, the clock is passed in).

BottleCRM signs every delivery (webhooks/tasks.py in django-crm 1.35) with

    X-BottleCRM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>

and names it with X-BottleCRM-Delivery (the delivery row's id: the same on every retry of one
delivery, while t and so the signature change) and X-BottleCRM-Event (e.g. deal.won).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

SIGNATURE_HEADER = "X-BottleCRM-Signature"
DELIVERY_HEADER = "X-BottleCRM-Delivery"
EVENT_HEADER = "X-BottleCRM-Event"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class SignatureError(Exception):
    """A delivery the hub must refuse: `status` 401 (unauthenticated) or 400 (malformed)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Signature:
    timestamp: int
    digests: tuple[str, ...]

    @property
    def key(self) -> str:
        """What identifies this signature (for replay refusal): its (first, after verify():
        its matching) digest."""
        return self.digests[0]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value BottleCRM sends for `body` signed at `timestamp`."""
    return f"t={timestamp},v1={digest(secret, timestamp, body)}"


def digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def parse_signature(header: str | None) -> Signature:
    """`t=<unix>,v1=<hex>[,v1=<hex>...]`; SignatureError 401 if absent, 400 if malformed."""
    if header is None or not header.strip():
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    digests: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed {SIGNATURE_HEADER}: {part.strip()[:40]!r} is not "
                                 "name=value", 400)
        if name == "t":
            if not value.isdigit() or len(value) > 12:
                raise SignatureError(f"malformed {SIGNATURE_HEADER}: t must be unix seconds",
                                     400)
            timestamp = int(value)
        elif name == "v1":
            if not _HEX64.fullmatch(value):
                raise SignatureError(f"malformed {SIGNATURE_HEADER}: v1 must be 64 hex digits",
                                     400)
            digests.append(value)
        # other schemes (v0, a future v2) are ignored, as the signer may add them
    if timestamp is None or not digests:
        raise SignatureError(f"malformed {SIGNATURE_HEADER}: needs t= and v1=", 400)
    return Signature(timestamp, tuple(digests))


def verify(secret: str, header: str | None, body: bytes, *, now: float,
           tolerance: float) -> Signature:
    """The parsed signature if `body` was signed with `secret` within `tolerance` seconds of
    `now`; else SignatureError naming why (compared in constant time)."""
    signature = parse_signature(header)
    if not secret:
        raise SignatureError("the hub has no BottleCRM webhook secret configured "
                             "(BOTTLECRM_WEBHOOK_SECRET)")
    expected = digest(secret, signature.timestamp, body)
    matched = [given for given in signature.digests if hmac.compare_digest(expected, given)]
    if not matched:
        raise SignatureError("signature does not match the body (forged, altered, or signed "
                             "with another secret)")
    age = now - signature.timestamp
    if abs(age) > tolerance:
        when = f"{age:.0f} s ago" if age > 0 else f"{-age:.0f} s in the future"
        raise SignatureError(f"signature expired: signed {when}, tolerance {tolerance:.0f} s")
    return Signature(signature.timestamp, (matched[0],))
