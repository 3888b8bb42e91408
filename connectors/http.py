"""What the HTTP connectors share: closing their httpx client, and reading Retry-After."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import httpx


class HttpClient:
    """A connector client that owns one `httpx.AsyncClient` as `self.http`: the hub calls
    aclose() on stop, tests use it as `async with`."""

    http: httpx.AsyncClient

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when
    absent or unreadable (the hub's own backoff applies then)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
