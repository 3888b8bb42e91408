"""Matrix (Synapse) as the OA chat: the bot posts approval requests and reads the replies."""

from connectors.matrix.settings import MatrixSettings
from connectors.spec import ConnectorSpec

SPEC = ConnectorSpec(
    slug="matrix", settings=MatrixSettings, status="beta",
    summary="OA approvals: requests posted to a Matrix room, replies read back (Synapse)")
