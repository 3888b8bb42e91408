"""Matrix connection settings (env prefix MATRIX_)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.spec import ConnectorSettings


class MatrixSettings(ConnectorSettings):
    model_config = SettingsConfigDict(env_prefix="MATRIX_", extra="ignore")

    url: str = Field(default="http://127.0.0.1:8008", description="homeserver base URL")
    user: str = Field(default="crmhub-bot", description="the bot's login (localpart or @id)")
    password: SecretStr = Field(default=SecretStr(""), description="the bot's password")
    room_id: str = Field(default="", description="room the approval requests go to (!id)")
    device_id: str = Field(
        default="CRMHUB", description="fixed device: transaction ids stay idempotent across "
        "re-logins (Synapse scopes them per device)")
    timeout_seconds: float = Field(default=30.0, gt=0, description="per-request timeout")
    sync_timeout_ms: int = Field(default=0, ge=0, le=60_000,
                                 description="long-poll of /sync (0: answer at once)")
