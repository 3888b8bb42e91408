"""Mail (SMTP) settings (env prefix SMTP_)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from connectors.spec import ConnectorSettings
from connectors.tls import empty_is_none, readable_file, require_tls


class SmtpSettings(ConnectorSettings):
    model_config = SettingsConfigDict(env_prefix="SMTP_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="SMTP server")
    port: int = Field(default=25, ge=1, le=65535, description="SMTP port (587: submission)")
    username: str = Field(default="", description="login; empty = no AUTH")
    password: SecretStr = Field(default=SecretStr(""), description="that login's password")
    starttls: bool = Field(default=False, description="upgrade with STARTTLS before AUTH "
                           "(port 587); required for a host that is not loopback")
    implicit_tls: bool = Field(default=False, description="TLS from the first byte (SMTPS, "
                               "port 465) instead of STARTTLS")
    ca_file: Path | None = Field(default=None, description="CA bundle that signed the "
                                 "server's certificate; empty = the system's CAs")
    allow_plaintext: bool = Field(default=False, description="send unencrypted to a host that "
                                  "is not loopback (a relay on a trusted network only)")
    sender: str = Field(default="crmhub <crmhub@localhost>", description="From: of every mail")
    timeout_seconds: float = Field(default=30.0, gt=0, description="per-connection timeout")

    @field_validator("ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return empty_is_none(value)

    @field_validator("ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return readable_file(value)

    @model_validator(mode="after")
    def _tls_policy(self) -> SmtpSettings:
        if self.starttls and self.implicit_tls:
            raise ValueError("SMTP_STARTTLS and SMTP_IMPLICIT_TLS exclude each other: "
                             "STARTTLS for port 587, implicit TLS for port 465")
        require_tls("SMTP_", self.host, encrypted=self.tls, allow_plaintext=self.allow_plaintext,
                    how="set SMTP_STARTTLS=true (port 587) or SMTP_IMPLICIT_TLS=true (port 465)")
        return self

    @property
    def tls(self) -> bool:
        return self.starttls or self.implicit_tls
