"""Follow-up tasks as CalDAV VTODOs (Radicale and other CalDAV servers)."""

from connectors.caldav.settings import CaldavSettings
from connectors.spec import ConnectorSpec

SPEC = ConnectorSpec(
    slug="caldav", settings=CaldavSettings, status="beta",
    summary="OA tasks: follow-ups as CalDAV VTODOs, completions read back (tested on Radicale)")
