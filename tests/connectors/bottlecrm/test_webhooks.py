"""BottleCRM's webhook signature, parsed and verified (pure: the clock is passed in)."""

from __future__ import annotations

import pytest

from connectors.bottlecrm.webhooks import SignatureError, parse_signature, sign, verify

SECRET = "whsec_test-secret"
BODY = b'{"id":"e1","event":"deal.won","data":{"id":"d1"}}'
NOW = 1_800_000_000


def test_a_signature_made_like_bottlecrm_verifies() -> None:
    header = sign(SECRET, NOW, BODY)
    assert header.startswith(f"t={NOW},v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, header, BODY, now=NOW + 10, tolerance=300).timestamp == NOW


@pytest.mark.parametrize(("header", "body", "now", "status", "reason"), [
    (None, BODY, NOW, 401, "missing X-BottleCRM-Signature"),
    ("", BODY, NOW, 401, "missing"),
    (sign("whsec_other", NOW, BODY), BODY, NOW, 401, "does not match"),
    (sign(SECRET, NOW, BODY), BODY + b" ", NOW, 401, "does not match"),
    (sign(SECRET, NOW, BODY), BODY, NOW + 301, 401, "expired: signed 301 s ago"),
    (sign(SECRET, NOW, BODY), BODY, NOW - 400, 401, "400 s in the future"),
    ("t=abc,v1=" + "0" * 64, BODY, NOW, 400, "t must be unix seconds"),
    (f"t={NOW},v1=xyz", BODY, NOW, 400, "v1 must be 64 hex digits"),
    (f"t={NOW}", BODY, NOW, 400, "needs t= and v1="),
    ("garbage", BODY, NOW, 400, "is not name=value"),
])
def test_refusals_say_why(header: str | None, body: bytes, now: int, status: int,
                          reason: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(SECRET, header, body, now=now, tolerance=300)
    assert caught.value.status == status
    assert reason in caught.value.reason


def test_no_configured_secret_refuses_everything() -> None:
    with pytest.raises(SignatureError, match="BOTTLECRM_WEBHOOK_SECRET"):
        verify("", sign("", NOW, BODY), BODY, now=NOW, tolerance=300)


def test_any_of_several_v1_digests_may_match_and_other_schemes_are_ignored() -> None:
    good = sign(SECRET, NOW, BODY).split("v1=")[1]
    header = f"t={NOW},v0=old,v1={'f' * 64},v1={good}"
    parsed = parse_signature(header)
    assert parsed.digests == ("f" * 64, good)
    assert verify(SECRET, header, BODY, now=NOW, tolerance=5).key == good  # replay key
