"""FileDrop settings (env prefix FILEDROP_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.spec import ConnectorSettings


class FileDropSettings(ConnectorSettings):
    model_config = SettingsConfigDict(env_prefix="FILEDROP_", extra="ignore")

    directory: Path = Field(
        default=Path("var/filedrop"), description="root folder the importers read: one file "
        "per record at `<directory>/<entity>/<canonical id>.json` (a relative path is relative "
        "to the working directory)")
