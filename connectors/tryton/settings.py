"""Tryton (ERP) connection settings (env prefix TRYTON_)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.spec import ConnectorSettings


class TrytonSettings(ConnectorSettings):
    model_config = SettingsConfigDict(env_prefix="TRYTON_", extra="ignore")

    url: str = Field(default="http://127.0.0.1:8000", description="trytond's base URL")
    database: str = Field(default="tryton", description="database name (the RPC path)")
    user: str = Field(default="admin", description="login of the hub's Tryton user")
    password: SecretStr = Field(default=SecretStr(""), description="that user's password")
    timeout_seconds: float = Field(default=30.0, gt=0, description="per-request timeout")
    connect_timeout_seconds: float = Field(default=5.0, gt=0, description="connect timeout")
    max_connections: int = Field(default=8, ge=1, description="HTTP connection pool size")
    auto_create_products: bool = Field(
        default=False, description="create products a won order names but the ERP lacks "
        "(off: such an order is dead-lettered naming the code)")
    language: str = Field(default="en", description="language of Tryton's messages")
