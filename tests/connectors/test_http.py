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
