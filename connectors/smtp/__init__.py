"""Notification mail over SMTP: plain text + HTML, one deterministic Message-ID per notice."""

from connectors.smtp.settings import SmtpSettings
from connectors.spec import ConnectorSpec

SPEC = ConnectorSpec(
    slug="smtp", settings=SmtpSettings, status="stable",
    summary="OA mail: notices as plain text + HTML over SMTP, one Message-ID per notice")
