"""Tryton 8.0 as the ERP: JSON-RPC client, parties, sales, invoice and payment reads."""

from connectors.spec import ConnectorSpec
from connectors.tryton.settings import TrytonSettings

SPEC = ConnectorSpec(
    slug="tryton", settings=TrytonSettings, status="stable",
    summary="ERP: parties and confirmed sales in; posted invoices and payments read back")
