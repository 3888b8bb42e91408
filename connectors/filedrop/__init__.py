"""A shared folder as a target system: canonical records as JSON files for file importers."""

from connectors.filedrop.settings import FileDropSettings
from connectors.spec import ConnectorSpec

SPEC = ConnectorSpec(
    slug="filedrop", settings=FileDropSettings, status="stable",
    summary="Shared folder: one JSON file per customer and order, for file-importing systems")
