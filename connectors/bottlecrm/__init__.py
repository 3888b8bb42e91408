"""BottleCRM (PyPI django-crm): REST client, its payload shapes and signed webhooks."""

from connectors.bottlecrm.settings import BottleCrmSettings
from connectors.spec import ConnectorSpec

SPEC = ConnectorSpec(
    slug="bottlecrm", settings=BottleCrmSettings, status="stable",
    summary="CRM: accounts and won deals in; ERP numbers, invoices, payments, deliveries back")
