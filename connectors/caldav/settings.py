"""CalDAV task list settings (env prefix CALDAV_)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CaldavSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALDAV_", extra="ignore")

    url: str = Field(default="http://127.0.0.1:5232/", description="CalDAV server URL")
    username: str = Field(default="crmhub", description="login (owns the task list)")
    password: SecretStr = Field(default=SecretStr(""), description="that login's password")
    calendar: str = Field(default="crmhub-tasks", description="task list (created if missing)")
    timeout_seconds: int = Field(default=30, gt=0, description="per-request timeout")
