"""CalDAV task list settings (env prefix CALDAV_)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from connectors.spec import ConnectorSettings
from connectors.tls import empty_is_none, readable_file, require_tls


class CaldavSettings(ConnectorSettings):
    model_config = SettingsConfigDict(env_prefix="CALDAV_", extra="ignore")

    url: str = Field(default="http://127.0.0.1:5232/", description="CalDAV server URL; "
                     "https:// for a host that is not loopback")
    username: str = Field(default="crmhub", description="login (owns the task list)")
    password: SecretStr = Field(default=SecretStr(""), description="that login's password")
    calendar: str = Field(default="crmhub-tasks", description="task list (created if missing)")
    timeout_seconds: int = Field(default=30, gt=0, description="per-request timeout")
    ca_file: Path | None = Field(default=None, description="CA bundle that signed the "
                                 "server's certificate; empty = the system's CAs")
    allow_plaintext: bool = Field(default=False, description="allow http:// to a host that is "
                                  "not loopback (a trusted network only)")

    @field_validator("ca_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return empty_is_none(value)

    @field_validator("ca_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return readable_file(value)

    @model_validator(mode="after")
    def _tls_policy(self) -> CaldavSettings:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"CALDAV_URL must be an http(s):// URL, got {self.url!r}")
        require_tls("CALDAV_", parts.hostname, encrypted=parts.scheme == "https",
                    allow_plaintext=self.allow_plaintext, how="use an https:// CALDAV_URL")
        return self
