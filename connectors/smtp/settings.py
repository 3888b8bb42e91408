"""Mail (SMTP) settings (env prefix SMTP_)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SmtpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMTP_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="SMTP server")
    port: int = Field(default=25, ge=1, le=65535, description="SMTP port (587: submission)")
    username: str = Field(default="", description="login; empty = no AUTH")
    password: SecretStr = Field(default=SecretStr(""), description="that login's password")
    starttls: bool = Field(default=False, description="upgrade with STARTTLS before AUTH")
    sender: str = Field(default="crmhub <crmhub@localhost>", description="From: of every mail")
    timeout_seconds: float = Field(default=30.0, gt=0, description="per-connection timeout")
