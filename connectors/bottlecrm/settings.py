"""BottleCRM (CRM) connection settings (env prefix BOTTLECRM_)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from connectors.spec import ConnectorSettings
from schemas.canonical import CURRENCIES


class BottleCrmSettings(ConnectorSettings):
    model_config = SettingsConfigDict(env_prefix="BOTTLECRM_", extra="ignore")

    url: str = Field(default="http://127.0.0.1:8000", description="BottleCRM's base URL")
    token: SecretStr = Field(default=SecretStr(""),
                             description="personal access token (bcrm_pat_...)")
    webhook_secret: SecretStr = Field(
        default=SecretStr(""), description="the signing secret BottleCRM returned when the "
        "hub's webhook was registered (whsec_...); empty = the ingress refuses every delivery")
    timeout_seconds: float = Field(default=30.0, gt=0, description="per-request timeout")
    connect_timeout_seconds: float = Field(default=5.0, gt=0, description="connect timeout")
    max_connections: int = Field(default=8, ge=1, description="HTTP connection pool size")
    page_size: int = Field(default=100, ge=1, le=1000, description="records per list page")
    default_currency: str = Field(
        default="EUR", description="currency of accounts and deals that name none")
    default_tax_rate: Decimal | None = Field(
        default=None, ge=0, le=100, description="fallback tax rate (percent) for won-deal "
        "lines whose product has no customer tax in the ERP (BottleCRM lines carry no tax: "
        "the ERP's product tax applies); empty = such lines are sold untaxed")
    webhook_tolerance_seconds: float = Field(
        default=300.0, gt=0, description="how far a webhook's signed timestamp may be from "
        "now; older (or replayed) deliveries are refused")
    webhook_max_bytes: int = Field(default=1_048_576, ge=1024,
                                   description="largest webhook body the ingress reads")
    publish_timeout_seconds: float = Field(
        default=5.0, gt=0, description="how long the ingress tries to publish to Kafka "
        "before it answers 503 (BottleCRM then retries the delivery)")

    @field_validator("default_tax_rate", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("default_currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in CURRENCIES:
            raise ValueError(f"unknown ISO 4217 currency code {value!r}")
        return value
