"""FileDrop settings (env prefix FILEDROP_)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class FileDropSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FILEDROP_", extra="ignore")

    directory: Path = Path("var/filedrop")
