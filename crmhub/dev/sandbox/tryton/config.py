"""What the Tryton sandbox is made of: versions, modules, seed, admin login and timeouts; its
venv; the template key; trytond.conf."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from collections.abc import Mapping
from datetime import date
from pathlib import Path

from crmhub.dev.sandbox.common import SANDBOX_ROOT, SCRIPTS, Venv, child_env

SERIES = "8.0"
HOME = SANDBOX_ROOT / f"tryton-{SERIES}"

REQUIREMENTS: tuple[str, ...] = (
    "trytond~=8.0.0",
    "trytond-sale~=8.0.0",
    "trytond-sale-opportunity~=8.0.0",
    "trytond-account-payment-clearing~=8.0.0",
    "trytond-stock~=8.0.0",
    "trytond-sale-discount~=8.0.0",  # sale.line base_price + discount (docs/money.md)
    "proteus~=8.0.0",
    "pycountry>=24.6",  # the seed imports the ISO 3166 countries (addresses need them)
    "psycopg[binary,pool]>=3.1",  # trytond 8.0's PostgreSQL backend (backend="postgresql")
)
#: Modules activated with ``trytond-admin -u ... --activate-dependencies``.
MODULES: tuple[str, ...] = ("sale", "sale_opportunity", "account_payment_clearing", "stock",
                           "sale_discount")
#: Bump when the seed script (scripts/tryton_seed.py) changes what it builds: the template is
#: rebuilt on the next prepare.
SEED_VERSION = 5
#: Run once per seeded template by the sandbox venv's python (argv: CONF DATABASE RESULT_JSON).
SEED_SCRIPT = SCRIPTS / "tryton_seed.py"
#: Decimals Tryton keeps in unit prices (trytond.conf ``[product] price_decimal``; Tryton's
#: default is 4). 6 holds every discounted 2-decimal price the hub sends exactly, or a unit
#: price whose line amount is the CRM's net for quantities up to 10,000 (docs/money.md).
#: The database records the value it was created with and trytond refuses to start with
#: another, so it is part of the template key and of every server's configuration.
PRICE_DECIMAL = 6

DATABASE = "crmhub"
ADMIN_USER = "admin"
#: trytond refuses passwords under 8 characters, or equal to the login/name/email.
ADMIN_PASSWORD = "crmhub-sandbox-admin"
ADMIN_EMAIL = "admin@example.com"

#: Product codes the seed creates (all goods, in stock at the storage location STO).
SEED_PRODUCTS: tuple[str, ...] = ("WIDGET", "PUMP-200", "SEAL-KIT", "VALVE-9", "MANUAL")

MIN_PYTHON = (3, 11)
INSTALL_TIMEOUT = 900.0
ADMIN_TIMEOUT = 600.0
SEED_TIMEOUT = 300.0
START_TIMEOUT = 60.0
STOP_GRACE = 5.0

#: Timings of the last ensure_venv / ensure_template calls in this process (seconds).
TIMINGS: dict[str, float] = {}

#: Admin connection of the PostgreSQL-backed sandbox (trust auth on the project machines);
#: ``$CRMHUB_SANDBOX_PG`` or ``pg_url=`` override it.
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

VENV = Venv(HOME / f"venv-{hashlib.sha256(json.dumps(REQUIREMENTS).encode()).hexdigest()[:8]}",
            REQUIREMENTS, MIN_PYTHON, "the Tryton sandbox", ("trytond",),
            INSTALL_TIMEOUT, TIMINGS)


def venv_dir() -> Path:
    return VENV.path


def venv_bin(name: str) -> Path:
    return VENV.bin(name)


def trytond_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without TRYTOND_* (they override the config file), plus TZ=UTC."""
    return child_env(extra, drop_prefixes=("TRYTOND_", "TRYTONPASSFILE"))


def ensure_venv() -> Path:
    """Create ``.sandbox/tryton-8.0/venv`` with the pinned requirements (once); return its path."""
    return VENV.ensure()


def template_key(seed: bool) -> str:
    """What the template depends on: resolved packages, modules, seed version and this year.

    The year is in because the seed creates fiscal years for this year and the next.
    """
    stamp = VENV.stamp() or {}
    material = {
        "requirements": list(REQUIREMENTS),
        "freeze": stamp.get("freeze", []),
        "modules": list(MODULES),
        "seed_version": SEED_VERSION if seed else None,
        "year": date.today().year if seed else None,
        "price_decimal": PRICE_DECIMAL,
        "password": hashlib.sha256(ADMIN_PASSWORD.encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def pg_admin_url(url: str | None = None) -> str:
    """``url``, else ``$CRMHUB_SANDBOX_PG``, else DEFAULT_PG_URL (read at call time)."""
    return url or os.environ.get("CRMHUB_SANDBOX_PG") or DEFAULT_PG_URL


def pg_server_uri(url: str) -> str:
    """trytond's [database] uri: the admin url without its database name."""
    return urllib.parse.urlsplit(url)._replace(path="/").geturl()


def write_conf(path: Path, db_dir: Path | None, port: int | None = None,
               pg_url: str | None = None, **sections: str) -> None:
    """trytond.conf: SQLite files in `db_dir`, or (db_dir None) the server of `pg_url`."""
    if db_dir is None:
        uri = pg_server_uri(pg_admin_url(pg_url))
        lines = ["[database]", f"uri = {uri}", "list = False", ""]
    else:
        lines = ["[database]", "uri = sqlite://", f"path = {db_dir}", "list = False", ""]
    if port is not None:
        lines += ["[web]", f"listen = 127.0.0.1:{port}", ""]
    lines += ["[product]", f"price_decimal = {PRICE_DECIMAL}", ""]
    for name, body in sections.items():
        lines += [f"[{name}]", body.strip(), ""]
    path.write_text("\n".join(lines))
