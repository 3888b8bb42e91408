"""Retry-After as the connectors read it: seconds, an HTTP date, or nothing usable."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

from connectors.http import retry_after


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("-3") == 0.0
    in_a_minute = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=60),
                                              usegmt=True)
    assert 55.0 <= (retry_after(in_a_minute) or 0.0) <= 60.0
    past = email.utils.format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)
    assert retry_after(past) == 0.0


def test_unreadable_retry_after_leaves_the_wait_to_the_hub() -> None:
    assert retry_after(None) is None
    assert retry_after("") is None
    assert retry_after("soon, maybe") is None  # the Tryton client raised on this before


def test_the_shared_status_policy_and_its_visible_arguments() -> None:
    from connectors.http import CREDENTIALS_RETRY_SECONDS, classify_status, credentials_refused
    from crmhub.errors import PermanentError, TransientError

    busy = classify_status("erp", "GET /x", 503, "busy", retry_after=4.0)
    assert isinstance(busy, TransientError) and busy.retry_after == 4.0
    assert str(busy) == "erp GET /x: HTTP 503 busy" and busy.system == "erp"
    limited = classify_status("erp", "op", 429)
    assert isinstance(limited, TransientError) and limited.retry_after is None  # hub backoff
    waits = classify_status("erp", "op", 429, rate_limit_wait=9.0)
    assert isinstance(waits, TransientError) and waits.retry_after == 9.0
    assert isinstance(classify_status("erp", "op", 501), PermanentError)  # never, not "later"
    assert isinstance(classify_status("erp", "op", 302), PermanentError)
    refused = classify_status("erp", "op", 401, credentials_hint="ERP_TOKEN")
    assert isinstance(refused, TransientError)
    assert refused.retry_after == CREDENTIALS_RETRY_SECONDS
    assert str(refused).endswith("credentials refused (check ERP_TOKEN)")
    assert isinstance(classify_status("erp", "op", 403), PermanentError)
    assert isinstance(classify_status("erp", "op", 403, credential_statuses=frozenset({403})),
                      TransientError)
    assert isinstance(classify_status("erp", "op", 401, refused_credentials_pause=False),
                      PermanentError)
    assert len(str(classify_status("erp", "op", 400, "x" * 5000, body_limit=50))) < 80
    assert isinstance(credentials_refused("smtp", "smtp: 535", pause=False), PermanentError)
