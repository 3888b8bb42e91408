"""Every connector, in one explicit list (adding one is one line here and a SPEC in its package).

Read by the CLI (`crmhub config check`, `crmhub docs`, the secrets it hands the hub to
redact) and by tests/connectors/test_conformance.py; the runtime never imports it.
"""

from __future__ import annotations

from connectors import bottlecrm, caldav, chatbots, filedrop, matrix, smtp, tryton, tryton_stock
from connectors.spec import ConnectorSpec

CONNECTORS: list[ConnectorSpec] = [
    bottlecrm.SPEC,
    tryton.SPEC,
    tryton_stock.SPEC,
    filedrop.SPEC,
    matrix.SPEC,
    smtp.SPEC,
    chatbots.SPEC,
    caldav.SPEC,
]
