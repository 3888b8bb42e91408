"""What every connector declares: its settings base (env prefix + a TOML table) and its spec.

A connector package says once, in its `__init__.py`, what it is:

    SPEC = ConnectorSpec(slug="tryton", settings=TrytonSettings, status="stable",
                         summary="ERP: parties, confirmed sales, invoice and payment reads")

and `connectors/catalogue.py` lists every SPEC in one explicit list. The CLI validates each
connector's settings from it (`crmhub config check`), `crmhub docs` documents them, and
`tests/connectors/test_conformance.py` runs the same checks on every listed connector.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
)

#: The hub's configuration file (crmhub/settings.py reads its top-level keys; each connector
#: reads its own table). The same name as crmhub.settings.CONFIG_FILE_ENV, which the
#: connectors may not import (tests/test_docs.py checks that the two agree).
CONFIG_FILE_ENV = "CRMHUB_CONFIG"

Status = Literal["stable", "beta", "experimental"]
#: What each status promises (docs/settings.md says it too).
STATUSES: dict[Status, str] = {
    "stable": "exercised against the real system in `make test` (and the demo); no known gaps",
    "beta": "tested against one real implementation; gaps are named in its docs",
    "experimental": "tested against a fake only: the real service was not reachable in tests",
}


class ConnectorSettings(BaseSettings):
    """Settings read from the environment (the class's env prefix) over a TOML table.

    The table is the connector's slug (`[tryton]` for TRYTON_*) in the file named by
    CRMHUB_CONFIG; keys are the field names. Priority: keyword arguments, then environment
    variables, then the table(s), then the defaults -- the same order as the hub's own
    settings. `toml_tables` lists the tables read, later ones winning (tryton_stock falls
    back to the ERP's `[tryton]` table as its env vars fall back to TRYTON_*).
    """

    toml_tables: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def tables(cls) -> tuple[str, ...]:
        """The TOML tables this class reads: `toml_tables`, else its env prefix, lower case."""
        if cls.toml_tables:
            return cls.toml_tables
        prefix = str(cls.model_config.get("env_prefix") or "")
        return (prefix.rstrip("_").lower(),) if prefix else ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        values: dict[str, Any] = {}
        config = read_config_file()
        for table in cls.tables():
            section = config.get(table)
            if isinstance(section, dict):
                values.update(section)
        return init_settings, env_settings, InitSettingsSource(settings_cls, values)


def read_config_file() -> dict[str, Any]:
    """The TOML file named by CRMHUB_CONFIG ({} when unset or missing: `crmhub config check`
    reports a missing file). An unreadable file raises ValueError (tomllib's)."""
    name = os.environ.get(CONFIG_FILE_ENV)
    if not name or not Path(name).is_file():
        return {}
    with Path(name).open("rb") as handle:
        return tomllib.load(handle)


@dataclass(frozen=True)
class ConnectorSpec:
    """One connector, declared once: the slug names its system (`SYSTEM` in its client, the
    env prefix, the TOML table), `settings` its settings class, `status` how far it is
    proven (STATUSES), `summary` one line for the docs."""

    slug: str
    settings: type[ConnectorSettings]
    status: Status
    summary: str
