"""What the connectors share: the one failure policy for HTTP statuses (and for refused
credentials, whatever the protocol), closing their httpx client, and reading Retry-After.

Every connector's classify() ends in classify_status() for an HTTP answer that is not a
result, passing only what differs from the default as visible keyword arguments, with a
comment saying why. The default, status by status:

- 408, 425, 429 and 5xx (but 501, 505): TransientError, waiting Retry-After when given
  (a 429 without one waits `rate_limit_wait`; None: the hub's backoff): retried.
- 401 (`credential_statuses`): "credentials refused (check X)", a TransientError waiting
  CREDENTIALS_RETRY_SECONDS: the flow pauses.
- 403, 404, 409, any other 4xx, 501, 505, 1xx, 3xx: PermanentError: dead-lettered.
- a timeout, a refused or dropped connection (classify_transport): TransientError.

A refused credential pauses by default: it is a configuration problem that fails every
message alike, so dead-lettering would empty the topic into the DLQ until someone fixes one
variable, while a pause shows the system as down, with the reason, in `crmhub status`.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import httpx

from crmhub.errors import HubError, PermanentError, TransientError

#: The wait between retries while a system refuses the hub's credentials: only a person can
#: fix them, and slow retries stay under the systems' login rate limits (Tryton's).
CREDENTIALS_RETRY_SECONDS = 60.0
#: Statuses besides 5xx after which a retry can help (request timeout, too early, too many).
RETRIABLE_STATUSES = frozenset({408, 425, 429})
#: 5xx statuses that mean "never" rather than "not now" (not implemented, HTTP version).
FINAL_SERVER_STATUSES = frozenset({501, 505})
#: The default refused-credential statuses: 401 says "who are you?"; a 403 is usually about
#: one request (the user may not touch this record), so it is dead-lettered unless the
#: connector says its system answers a bad credential with 403.
CREDENTIAL_STATUSES = frozenset({401})


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


def classify_status(system: str, operation: str, status: int, body: str = "", *,
                    retry_after: float | None = None,
                    rate_limit_wait: float | None = None,
                    credential_statuses: frozenset[int] = CREDENTIAL_STATUSES,
                    refused_credentials_pause: bool = True,
                    credentials_hint: str = "",
                    body_limit: int = 300) -> HubError:
    """The hub error for an HTTP answer that is not a result (the policy in this module's
    docstring). `operation` names the call ("GET /api/accounts/", an RPC method); `body` is
    the system's explanation, kept up to `body_limit` characters; never pass request data.

    What a connector may change, each a visible argument: `retry_after` (from the answer),
    `rate_limit_wait` (the wait after a 429 that names none; None: the hub's backoff),
    `credential_statuses` (statuses meaning "your credentials are refused"),
    `refused_credentials_pause` (False: dead-letter instead of pausing),
    `credentials_hint` (the settings to check), `body_limit`.
    """
    where = f"{system} {operation}".strip()
    text = f"{where}: HTTP {status} {body[:body_limit]}".strip()
    if status in credential_statuses:
        return credentials_refused(system, text, pause=refused_credentials_pause,
                                   hint=credentials_hint)
    if status in RETRIABLE_STATUSES:
        wait = retry_after if retry_after is not None or status != 429 else rate_limit_wait
        return TransientError(text, system=system, retry_after=wait)
    if status >= 500 and status not in FINAL_SERVER_STATUSES:
        return TransientError(text, system=system, retry_after=retry_after)
    return PermanentError(text, system=system)


def credentials_refused(system: str, text: str, *, pause: bool = True,
                        hint: str = "") -> HubError:
    """A system refused the hub's own credentials (any protocol: SMTP's 535 too). By default
    the flow pauses, retrying every CREDENTIALS_RETRY_SECONDS, and `crmhub status` shows the
    system down with this text; `pause=False` dead-letters instead."""
    text = f"{text}: credentials refused" + (f" (check {hint})" if hint else "")
    if pause:
        return TransientError(text, system=system, retry_after=CREDENTIALS_RETRY_SECONDS)
    return PermanentError(text, system=system)


def classify_transport(system: str, operation: str, exc: BaseException, *,
                       show_message: bool = True) -> TransientError:
    """A timeout, or a connection refused, reset or dropped: a retry can help. The text has
    the exception's class and (unless `show_message` is False) its message, never the
    request, which holds the credentials."""
    where = f"{system} {operation}".strip()
    kind = "timed out" if isinstance(exc, httpx.TimeoutException | TimeoutError) \
        else "unreachable"
    detail = f"{type(exc).__name__}: {exc}" if show_message and str(exc) \
        else type(exc).__name__
    return TransientError(f"{where}: {kind} ({detail})"[:500], system=system)
