"""Notification mail: one message, plain text + HTML alternative, sent with aiosmtplib; and
classify(), the only place that knows SMTP reply codes.

The Message-ID is the caller's (derived from the event and the notice), so a mail sent again
after a crash carries the same id and mail clients can fold the copy away; SMTP itself has no
idempotency (see docs/oa.md).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate

from connectors.extras import absent, require

try:
    import aiosmtplib
except ImportError as exc:  # crmhub[oa] not installed: refused when mail is configured
    aiosmtplib = absent("aiosmtplib", "oa", "SMTP mail", exc)

from connectors.http import classify_transport, credentials_refused
from connectors.smtp.settings import SmtpSettings
from connectors.tls import verifying_context
from crmhub.errors import HubError, PermanentError, TransientError

SYSTEM = "smtp"


class Mailer:
    def __init__(self, settings: SmtpSettings) -> None:
        require(aiosmtplib)
        self.settings = settings
        self.sent = 0

    @classmethod
    def from_env(cls) -> Mailer:
        return cls(SmtpSettings())

    def message(self, *, to: Sequence[str], subject: str, text: str, html: str,
                message_id: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.sender
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message["Message-ID"] = message_id
        message["Date"] = formatdate(usegmt=True)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message

    async def send(self, *, to: Sequence[str], subject: str, text: str, html: str,
                   message_id: str) -> str:
        """Send one mail to `to`; returns its Message-ID."""
        if not to:
            raise PermanentError("a mail needs at least one recipient", system=SYSTEM)
        message = self.message(to=to, subject=subject, text=text, html=html,
                               message_id=message_id)
        s = self.settings
        try:
            # TLS exactly as configured: never an opportunistic upgrade that a man in the
            # middle could strip (connectors/tls.py says when plain is allowed at all).
            await aiosmtplib.send(
                message, hostname=s.host, port=s.port, use_tls=s.implicit_tls,
                start_tls=s.starttls, tls_context=verifying_context(s.ca_file) if s.tls else None,
                username=s.username or None,
                password=s.password.get_secret_value() if s.username else None,
                timeout=s.timeout_seconds)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise classify(exc) from exc
        self.sent += 1
        return message_id


def classify(exc: BaseException) -> HubError:
    """4xx replies, refused connections and timeouts can pass; 5xx replies will not, but a
    refused login pauses (connectors/http.py's policy for refused credentials)."""
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [error.code for error in exc.recipients]
        if codes and all(400 <= code < 500 for code in codes):
            return TransientError(f"smtp: recipients deferred {codes}", system=SYSTEM)
        return PermanentError(f"smtp: recipients refused {codes}", system=SYSTEM)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"smtp: {exc.code} {exc.message[:200]}"
        if exc.code in (530, 534, 535, 538):
            # authentication refused: the shared default for refused credentials, a pause
            return credentials_refused(SYSTEM, text, hint="SMTP_USERNAME / SMTP_PASSWORD")
        if 400 <= exc.code < 500:
            return TransientError(text, system=SYSTEM)
        return PermanentError(text, system=SYSTEM)
    verify = exc if isinstance(exc, ssl.SSLCertVerificationError) else exc.__cause__
    if isinstance(verify, ssl.SSLCertVerificationError):  # configuration: pause, say what
        return TransientError(f"smtp: the server's TLS certificate does not verify "
                              f"({verify.verify_message}); check SMTP_CA_FILE and SMTP_HOST",
                              system=SYSTEM)
    if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
        return classify_transport(SYSTEM, "", exc)
    return PermanentError(f"smtp: {type(exc).__name__}: {exc}", system=SYSTEM)
