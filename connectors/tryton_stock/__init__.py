"""Tryton stock as the supply-chain system (SCM): customer shipments out of the warehouse."""

from connectors.spec import ConnectorSpec
from connectors.tryton_stock.settings import TrytonStockSettings

SPEC = ConnectorSpec(
    slug="tryton_stock", settings=TrytonStockSettings, status="beta",
    summary="SCM: customer shipments read from Tryton stock (so far the ERP's own Tryton)")
