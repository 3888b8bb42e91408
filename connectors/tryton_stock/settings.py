"""Tryton stock (SCM) connection settings: TRYTON_STOCK_*, falling back to the ERP's TRYTON_*."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.spec import ConnectorSettings
from connectors.tryton.settings import TrytonSettings


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"TRYTON_STOCK_{name}", f"TRYTON_{name}")


class TrytonStockSettings(ConnectorSettings):
    """Where the SCM's Tryton is; by default the ERP's own (TRYTON_*). Its timeouts and
    connection pool are the ERP's (TRYTON_TIMEOUT_SECONDS ...)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)
    # the TOML tables likewise: [tryton_stock] over the ERP's [tryton]
    toml_tables: ClassVar[tuple[str, ...]] = ("tryton", "tryton_stock")

    url: str = Field(default="http://127.0.0.1:8000", validation_alias=_env("URL"),
                     description="the SCM's trytond base URL")
    database: str = Field(default="tryton", validation_alias=_env("DATABASE"),
                          description="database name (the RPC path)")
    user: str = Field(default="admin", validation_alias=_env("USER"),
                      description="login of the hub's Tryton user there")
    password: SecretStr = Field(default=SecretStr(""), validation_alias=_env("PASSWORD"),
                                description="that user's password")

    def client_settings(self) -> TrytonSettings:
        return TrytonSettings(url=self.url, database=self.database, user=self.user,
                              password=self.password)
