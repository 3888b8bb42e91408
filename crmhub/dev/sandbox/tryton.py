"""A real Tryton 8.0 (LTS) for tests and the demo: cached venv, template database, server by PID.

Layout under ``SANDBOX_ROOT`` (``$CRMHUB_SANDBOX_DIR`` or ``<repo>/.sandbox``, git-ignored)::

    tryton-8.0/venv-<req>/           trytond + modules + proteus (stamp: .crmhub-stamp.json)
    tryton-8.0/template-bare-<key>/  crmhub.sqlite with the modules activated (stamp.json)
    tryton-8.0/template-<key>/       a copy of it, seeded (stamp.json: ids the seed created)
    tryton-8.0/*.lock, *.log         build locks and the logs of the last install / build

``<req>`` and ``<key>`` are short digests of what each depends on, so checkouts at different
versions sharing one sandbox folder each keep their own build beside the others' instead of
rebuilding over them.

Each ``TrytonServer`` copies the template to its own temp dir, so runs never share data, and
listens on a free port of 127.0.0.1. ``TrytonServer(backend="postgresql")`` instead creates a
database ``crmhub_tryton_run_<time>_<pid>_<random>`` from the PostgreSQL template
``crmhub_tryton_tpl_<key>`` (itself a copy of ``crmhub_tryton_bare_<key>`` plus the seed; both
built once per server, stamped in their database comment) and drops it on stop().
Everything that fails raises ``RuntimeError`` naming the command, its exit code and the end
of its log; every wait has a deadline.

    python -m crmhub.dev.sandbox.tryton prepare [--backend postgresql]   # build, print timings
    python -m crmhub.dev.sandbox.tryton serve [--backend postgresql]     # url/db/user until Ctrl-C
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from crmhub.dev.sandbox.common import (
    SANDBOX_ROOT,
    SCRIPTS,
    Venv,
    child_env,
    failure,
    kill_group,
    locked,
    read_json,
    run,
    spawn,
    tail,
    wait_ready,
    write_json,
)
from crmhub.embedded import free_port

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


def venv_dir() -> Path:
    return VENV.path


def venv_bin(name: str) -> Path:
    return VENV.bin(name)


def template_dir(seed: bool = True) -> Path:
    """The folder of the template of the current venv and seed (built or not)."""
    return HOME / f"{'template' if seed else 'template-bare'}-{_template_key(seed)[:12]}"


def template_db(seed: bool = True) -> Path:
    return template_dir(seed) / f"{DATABASE}.sqlite"


# --------------------------------------------------------------------------- venv

VENV = Venv(HOME / f"venv-{hashlib.sha256(json.dumps(REQUIREMENTS).encode()).hexdigest()[:8]}",
            REQUIREMENTS, MIN_PYTHON, "the Tryton sandbox", ("trytond",),
            INSTALL_TIMEOUT, TIMINGS)


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without TRYTOND_* (they override the config file), plus TZ=UTC."""
    return child_env(extra, drop_prefixes=("TRYTOND_", "TRYTONPASSFILE"))


def _venv_stamp() -> dict[str, Any] | None:
    return VENV.stamp()


def ensure_venv() -> Path:
    """Create ``.sandbox/tryton-8.0/venv`` with the pinned requirements (once); return its path."""
    return VENV.ensure()


# --------------------------------------------------------------------------- template


def _template_key(seed: bool) -> str:
    """What the template depends on: resolved packages, modules, seed version and this year.

    The year is in because the seed creates fiscal years for this year and the next.
    """
    stamp = _venv_stamp() or {}
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


def _template_ok(seed: bool, key: str) -> dict[str, Any] | None:
    stamp = read_json(template_dir(seed) / "stamp.json")
    if stamp is None or stamp.get("key") != key or not template_db(seed).exists():
        return None
    return stamp


def _write_conf(path: Path, db_dir: Path | None, port: int | None = None,
                pg_url: str | None = None, **sections: str) -> None:
    """trytond.conf: SQLite files in `db_dir`, or (db_dir None) the server of `pg_url`."""
    if db_dir is None:
        uri = _pg_server_uri(pg_admin_url(pg_url))
        lines = ["[database]", f"uri = {uri}", "list = False", ""]
    else:
        lines = ["[database]", "uri = sqlite://", f"path = {db_dir}", "list = False", ""]
    if port is not None:
        lines += ["[web]", f"listen = 127.0.0.1:{port}", ""]
    lines += ["[product]", f"price_decimal = {PRICE_DECIMAL}", ""]
    for name, body in sections.items():
        lines += [f"[{name}]", body.strip(), ""]
    path.write_text("\n".join(lines))


def _record_timings(stamp: Mapping[str, Any], cached: bool, started: float) -> None:
    TIMINGS["template_cached"] = 1.0 if cached else 0.0
    TIMINGS["template_seconds"] = time.monotonic() - started
    for name in ("admin_seconds", "seed_seconds", "build_seconds"):
        TIMINGS[f"cold_{name}"] = float(stamp.get("timings", {}).get(name, 0.0))


def ensure_template(seed: bool = True) -> Path:
    """Build the SQLite template database once (modules activated, optionally seeded).

    Returns the path of ``crmhub.sqlite``. Keyed by the requirement list, what pip resolved,
    ``SEED_VERSION`` and the year; a changed key rebuilds. The seeded template starts as a
    copy of the bare one (built first if missing), so a changed seed re-runs only the seed
    script, not trytond-admin. A lock file keeps two processes from building at once; the
    build happens in a staging dir renamed into place at the end.
    """
    ensure_venv()
    started = time.monotonic()
    key = _template_key(seed)
    stamp = _template_ok(seed, key)
    cached = stamp is not None
    if stamp is None:
        if seed:
            ensure_template(False)
        with locked(HOME / f"{template_dir(seed).name}.lock"):
            stamp = _template_ok(seed, key)
            cached = stamp is not None  # another process built it while we waited
            if stamp is None:
                stamp = _build_template(seed, key)
    _record_timings(stamp, cached, started)
    return template_db(seed)


def _build_template(seed: bool, key: str) -> dict[str, Any]:
    final = template_dir(seed)
    for stale in HOME.glob(f"{final.name}.build-*"):  # left by a killed build; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    staging = HOME / f"{final.name}.build-{os.getpid()}"
    staging.mkdir(parents=True)
    log = HOME / f"{final.name}-build.log"
    log.write_text("")
    try:
        started = time.monotonic()
        conf = staging / "trytond.conf"
        _write_conf(conf, staging)
        db_file = staging / f"{DATABASE}.sqlite"
        seeded: dict[str, Any] = {}
        if seed:
            bare = _template_ok(False, _template_key(False))
            if bare is None:
                raise RuntimeError(f"the bare template {template_db(False)} vanished")
            shutil.copyfile(template_db(False), db_file)
            admin_seconds = float(bare.get("timings", {}).get("admin_seconds", 0.0))
            seeded = _run_seed(conf, DATABASE, staging, log)
        else:
            db_file.touch()  # trytond-admin needs the file to exist
            passfile = staging / "admin.pass"
            passfile.write_text(ADMIN_PASSWORD)
            run(
                [
                    venv_bin("trytond-admin"), "-c", conf, "-d", DATABASE, "--all",
                    "-u", *MODULES, "--activate-dependencies", "--email", ADMIN_EMAIL,
                ],
                log,
                timeout=ADMIN_TIMEOUT,
                env=_child_env({"TRYTONPASSFILE": str(passfile)}),
                cwd=staging,
            )
            passfile.unlink()
            admin_seconds = time.monotonic() - started
        stamp = _stamp(key, seed, seeded, admin_seconds, started)
        conf.unlink()
        write_json(staging / "stamp.json", stamp)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stamp


def _run_seed(conf: Path, database: str, staging: Path, log: Path) -> dict[str, Any]:
    """Run scripts/tryton_seed.py against ``database``; return what it created (ids, counts,
    seconds)."""
    started = time.monotonic()
    script, result = staging / "seed.py", staging / "seed.json"
    shutil.copyfile(SEED_SCRIPT, script)
    run([venv_bin("python"), script, conf, database, result], log, timeout=SEED_TIMEOUT,
         cwd=staging)
    seeded = read_json(result)
    if seeded is None:
        raise RuntimeError(f"the seed script wrote no result to {result}; last lines of "
                           f"{log}:\n{tail(log)}")
    script.unlink()
    result.unlink()
    seeded["_seconds"] = round(time.monotonic() - started, 2)
    return seeded


def _stamp(key: str, seed: bool, seeded: dict[str, Any], admin_seconds: float,
           started: float) -> dict[str, Any]:
    """A template's stamp. ``timings``: ``admin_seconds`` is what trytond-admin took when the
    bare template was built (a seeded template copies it); ``seed_seconds`` the seed script;
    ``build_seconds`` this build."""
    seed_seconds = float(seeded.pop("_seconds", 0.0))
    return {
        "key": key,
        "seed": seed,
        "seed_version": SEED_VERSION if seed else None,
        "requirements": list(REQUIREMENTS),
        "modules": list(MODULES),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "built_epoch": int(time.time()),
        "seeded": seeded,
        "timings": {
            "admin_seconds": round(admin_seconds, 2),
            "seed_seconds": round(seed_seconds, 2),
            "build_seconds": round(time.monotonic() - started, 2),
        },
    }


def template_info(seed: bool = True, backend: str = "sqlite",
                  pg_url: str | None = None) -> dict[str, Any]:
    """The stamp of the built template: key, timings and ``seeded`` (ids the seed created).

    ``{}`` if that template is not built (for PostgreSQL: not in the server of ``pg_url``).
    """
    if backend == "postgresql":
        ensure_venv()  # the template's name comes from what pip resolved
        key = _template_key(seed)
        return _pg_stamp(pg_admin_url(pg_url), _pg_template_name(seed, key), key) or {}
    return read_json(template_dir(seed) / "stamp.json") or {}


# --------------------------------------------------------------------------- PostgreSQL
#: Admin connection of the PostgreSQL-backed sandbox (trust auth on the project machines);
#: ``$CRMHUB_SANDBOX_PG`` or ``pg_url=`` override it.
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BARE_PREFIX = "crmhub_tryton_bare_"
PG_TEMPLATE_PREFIX = "crmhub_tryton_tpl_"
PG_RUN_PREFIX = "crmhub_tryton_run_"
#: Run databases older than this without a session are orphans of killed runs: dropped at
#: the next start. Older than PG_ABANDONED_SECONDS they go even with sessions (a trytond
#: that outlived its test process).
PG_ORPHAN_SECONDS = 6 * 3600
PG_ABANDONED_SECONDS = 2 * 86400
#: Templates of another key (older seed, other checkout) are dropped when a new one is
#: built, unless they were built within this many seconds (two checkouts at different
#: versions sharing one server would otherwise drop each other's template on every run).
PG_STALE_TEMPLATE_SECONDS = 3600
#: How long CREATE/ALTER DATABASE retries while the source has sessions (they linger for a
#: moment after a client exits).
PG_BUSY_TIMEOUT = 30.0
#: System catalogs whose planner statistics trytond-admin leaves stale (see _build_pg_template)
PG_CATALOGS = ("pg_class", "pg_attribute", "pg_constraint", "pg_depend", "pg_index",
               "pg_type", "pg_attrdef")
_PG_NAME = re.compile(r"[a-z0-9_]{1,63}")


def pg_admin_url(url: str | None = None) -> str:
    """``url``, else ``$CRMHUB_SANDBOX_PG``, else DEFAULT_PG_URL (read at call time)."""
    return url or os.environ.get("CRMHUB_SANDBOX_PG") or DEFAULT_PG_URL


def _pg_server_uri(url: str) -> str:
    """trytond's [database] uri: the admin url without its database name."""
    return urllib.parse.urlsplit(url)._replace(path="/").geturl()


def _q(name: str) -> str:
    """A quoted identifier; the sandbox only makes names of [a-z0-9_]."""
    if not _PG_NAME.fullmatch(name):
        raise RuntimeError(f"not a sandbox database name: {name!r}")
    return f'"{name}"'


def _pg(url: str, *statements: str, fetch: str | None = None, params: Sequence[Any] = (),
        dbname: str | None = None) -> list[tuple[Any, ...]]:
    """Run statements on a fresh autocommit connection (CREATE/DROP DATABASE need one) to
    the admin database, or to ``dbname`` on the same server."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    conninfo = make_conninfo(url, dbname=dbname) if dbname else url
    where = f"{url} (database {dbname})" if dbname else url
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            for statement in statements:
                conn.execute(statement)
            return list(conn.execute(fetch, params).fetchall()) if fetch else []
    except psycopg.Error as exc:
        raise RuntimeError(f"PostgreSQL at {where}: {exc}") from exc


def _pg_when_idle(url: str, statement: str) -> None:
    """Run a statement that needs a database nobody is connected to, retrying while busy."""
    deadline = time.monotonic() + PG_BUSY_TIMEOUT
    while True:
        try:
            _pg(url, statement)
            return
        except RuntimeError as exc:
            if "being accessed by other users" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"{exc} (still after {PG_BUSY_TIMEOUT:.0f} s of retries)"
                                   ) from exc
            time.sleep(0.2)


@contextlib.contextmanager
def _pg_locked(url: str, name: str, timeout: float) -> Iterator[None]:
    """A session advisory lock on the server: checkouts with other lock files share it."""
    import psycopg

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    deadline = time.monotonic() + timeout
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise RuntimeError(f"PostgreSQL at {url}: {exc}") from exc
    with conn:  # closing the session releases the lock, also when this process dies
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if row and row[0]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL at {url}: advisory lock {name!r} still held "
                                   f"by another process after {timeout:.0f} s")
            time.sleep(0.5)
        yield


def _pg_template_name(seed: bool, key: str) -> str:
    return (PG_TEMPLATE_PREFIX if seed else PG_BARE_PREFIX) + key[:16]


def pg_template_name(seed: bool = True) -> str:
    """The PostgreSQL template's name for the current venv and seed (built or not)."""
    ensure_venv()
    return _pg_template_name(seed, _template_key(seed))


def _pg_stamp(url: str, name: str, key: str) -> dict[str, Any] | None:
    """The stamp of a finished template: the database's comment, set before the rename to
    its final name. None when the database is missing or is some other build."""
    rows = _pg(url, fetch="SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                          "WHERE datname = %s", params=(name,))
    if not rows or not rows[0][0]:
        return None
    try:
        stamp = json.loads(rows[0][0])
    except ValueError:
        return None
    return stamp if isinstance(stamp, dict) and stamp.get("key") == key else None


def ensure_pg_template(seed: bool = True, pg_url: str | None = None) -> str:
    """Build a PostgreSQL template database once per server; return its name.

    ``crmhub_tryton_bare_<key>`` has the modules activated, ``crmhub_tryton_tpl_<key>`` is a
    copy of it plus the seed (so a changed seed re-runs only the seed script). Keys as for
    the SQLite template. Built under ``<name>_build`` and renamed at the end, so a half-built
    template is never used; the stamp (with the seeded ids) is the database's comment, so it
    cannot outlive the database. A lock file and a server-wide advisory lock keep two
    builders apart; templates of other keys are dropped when a new one is built.
    """
    ensure_venv()
    url = pg_admin_url(pg_url)
    started = time.monotonic()
    key = _template_key(seed)
    name = _pg_template_name(seed, key)
    stamp = _pg_stamp(url, name, key)
    cached = stamp is not None
    if stamp is None:
        bare = ensure_pg_template(False, url) if seed else None
        kind = "template" if seed else "template-bare"
        with locked(HOME / f"{kind}-pg.lock"), \
                _pg_locked(url, f"crmhub-tryton-{kind}", ADMIN_TIMEOUT + SEED_TIMEOUT):
            stamp = _pg_stamp(url, name, key)
            cached = stamp is not None
            if stamp is None:
                _drop_stale_templates(url, name)
                stamp = _build_pg_template(url, name, key, bare, HOME / f"{kind}-pg-build.log")
    _record_timings(stamp, cached, started)
    return name


def _drop_stale_templates(url: str, keep: str) -> None:
    """Drop the other templates of ``keep``'s kind: killed builds, and finished ones of other
    keys not built within PG_STALE_TEMPLATE_SECONDS. Runs under the advisory lock."""
    prefix = keep[: -16]
    rows = _pg(url, fetch="SELECT datname, shobj_description(oid, 'pg_database') "
                          "FROM pg_database")
    for name, comment in rows:
        if not name.startswith(prefix) or name == keep:
            continue
        try:
            built = int(json.loads(comment or "{}").get("built_epoch", 0))
        except (ValueError, TypeError, AttributeError):
            built = 0
        if name.endswith("_build") or time.time() - built > PG_STALE_TEMPLATE_SECONDS:
            _pg(url, f"DROP DATABASE IF EXISTS {_q(name)} WITH (FORCE)")


def _build_pg_template(url: str, name: str, key: str, bare: str | None, log: Path
                       ) -> dict[str, Any]:
    building = f"{name}_build"
    _pg(url, f"DROP DATABASE IF EXISTS {_q(building)} WITH (FORCE)")
    staging = Path(tempfile.mkdtemp(prefix="crmhub-tryton-pg-build-"))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    try:
        started = time.monotonic()
        conf = staging / "trytond.conf"
        _write_conf(conf, None, pg_url=url)
        seeded: dict[str, Any] = {}
        if bare is None:
            _pg(url, f"CREATE DATABASE {_q(building)} ENCODING 'UTF8' TEMPLATE template0")
            passfile = staging / "admin.pass"
            passfile.write_text(ADMIN_PASSWORD)
            admin: list[str | Path] = [venv_bin("trytond-admin"), "-c", conf, "-d", building]
            env = _child_env({"TRYTONPASSFILE": str(passfile)})
            # Two passes with ANALYZE between: a new database has template0's catalog
            # statistics (not one foreign key), so the planner picks nested loops for
            # trytond's information_schema queries and one of them takes 0.1-1.5 s per
            # table. The catalog rows of a pass are uncommitted until it ends, so ANALYZE
            # has to come between passes: ~65 s instead of ~90 s in one pass (2 cores).
            run([*admin, "-u", "ir", "res", "--email", ADMIN_EMAIL], log,
                 timeout=ADMIN_TIMEOUT, env=env, cwd=staging)
            _pg(url, *(f"ANALYZE pg_catalog.{table}" for table in PG_CATALOGS),
                dbname=building)
            run([*admin, "-u", *MODULES, "--activate-dependencies", "--email", ADMIN_EMAIL],
                 log, timeout=ADMIN_TIMEOUT, env=env, cwd=staging)
            passfile.unlink()
            admin_seconds = time.monotonic() - started
        else:
            bare_stamp = _pg_stamp(url, bare, _template_key(False)) or {}
            admin_seconds = float(bare_stamp.get("timings", {}).get("admin_seconds", 0.0))
            _pg_when_idle(url, f"CREATE DATABASE {_q(building)} TEMPLATE {_q(bare)}")
            seeded = _run_seed(conf, building, staging, log)
        # every copy inherits these statistics: plans as on a database in use
        _pg(url, "ANALYZE", dbname=building)
        stamp = _stamp(key, bare is not None, seeded, admin_seconds, started)
        comment = json.dumps(stamp).replace("'", "''")
        _pg(url, f"COMMENT ON DATABASE {_q(building)} IS '{comment}'")
        # Nobody can connect to a finished template (a session on it would make every
        # CREATE DATABASE ... TEMPLATE fail); copies are created with connections allowed.
        _pg_when_idle(url, f"ALTER DATABASE {_q(building)} RENAME TO {_q(name)}")
        _pg(url, f"ALTER DATABASE {_q(name)} WITH ALLOW_CONNECTIONS false")
    except BaseException:
        with contextlib.suppress(RuntimeError):
            _pg(url, f"DROP DATABASE IF EXISTS {_q(building)} WITH (FORCE)")
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stamp


def _pg_run_database(url: str, template: str) -> str:
    """A fresh copy of the template for one server; drops orphans of killed runs first.

    The name carries its creation time (epoch seconds) and the creating pid.
    """
    now = int(time.time())
    rows = _pg(url, fetch="SELECT d.datname, (SELECT count(*) FROM pg_stat_activity a "
                          "WHERE a.datname = d.datname) FROM pg_database d")
    for name, sessions in rows:
        if not name.startswith(PG_RUN_PREFIX):
            continue
        try:
            age = now - int(name[len(PG_RUN_PREFIX):].split("_")[0])
        except ValueError:
            continue
        if age > PG_ABANDONED_SECONDS or (age > PG_ORPHAN_SECONDS and not sessions):
            with contextlib.suppress(RuntimeError):  # another start may be dropping it too
                _pg(url, f"DROP DATABASE IF EXISTS {_q(name)} WITH (FORCE)")
    name = f"{PG_RUN_PREFIX}{now}_{os.getpid()}_{os.urandom(3).hex()}"
    _pg_when_idle(url, f"CREATE DATABASE {_q(name)} TEMPLATE {_q(template)}")
    return name


def pg_run_databases(pg_url: str | None = None) -> list[str]:
    """The run databases on the server (this and other processes'): for tests and cleanup."""
    rows = _pg(pg_admin_url(pg_url), fetch="SELECT datname FROM pg_database ORDER BY 1")
    return [str(name) for name, in rows if str(name).startswith(PG_RUN_PREFIX)]


@dataclass(frozen=True)
class Prepared:
    venv: Path
    #: the SQLite template file, or the name of the PostgreSQL template database
    template: Path | str
    timings: dict[str, float]


def prepare(seed: bool = True, backend: str = "sqlite", pg_url: str | None = None
            ) -> Prepared:
    """ensure_venv() + the template of ``backend`` ("sqlite" or "postgresql"), with the
    timings of this call and (``cold_*``) of the build that made the template."""
    started = time.monotonic()
    venv = ensure_venv()
    venv_timings = {k: v for k, v in TIMINGS.items() if k.startswith("venv_")}
    template: Path | str
    if backend == "postgresql":
        template = ensure_pg_template(seed, pg_url)
    elif backend == "sqlite":
        template = ensure_template(seed)
    else:
        raise RuntimeError(f"unknown sandbox backend {backend!r}")
    timings = {**TIMINGS, **venv_timings}  # ensure_*_template re-ran ensure_venv (cached)
    timings["prepare_seconds"] = time.monotonic() - started
    return Prepared(venv=venv, template=template, timings=timings)


# --------------------------------------------------------------------------- server


class RPCError(RuntimeError):
    """A JSON-RPC call answered with an error (or a non-200 status)."""

    def __init__(self, status: int, error: Any) -> None:
        super().__init__(f"HTTP {status}: {error!r}")
        self.status = status
        self.error = error


def rpc_call(url: str, method: str, params: Sequence[Any], session: str | None = None,
             timeout: float = 10.0) -> Any:
    """One JSON-RPC call with the standard library (enough for readiness and setup checks)."""
    body = json.dumps({"method": method, "params": list(params), "id": 1}).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept-Encoding", "gzip")
    if session:
        request.add_header("Authorization", f"Session {session}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            if response.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            status = response.status
    except urllib.error.HTTPError as exc:
        raise RPCError(exc.code, exc.read()[:500].decode(errors="replace")) from None
    data = json.loads(raw)
    if data.get("error"):
        raise RPCError(status, data["error"])
    return data.get("result")


def session_header_value(user: str, uid: int, token: str) -> str:
    """The value after ``Session `` in the Authorization header: base64(user:uid:token)."""
    return base64.b64encode(f"{user}:{uid}:{token}".encode()).decode("ascii")


@dataclass
class TrytonServer:
    """A trytond on 127.0.0.1 serving a private copy of the template database.

    ``with TrytonServer() as erp: ...`` or ``start()`` / ``stop()``. After start: ``url``
    (``http://127.0.0.1:PORT``), ``rpc_url`` (``url/<database>/rpc/``), ``database``,
    ``user``, ``password``, ``pid``, ``port``, ``directory`` (the temp dir), ``log_path``,
    ``seeded`` (the ids the seed created).
    """

    seed: bool = True
    #: "sqlite" (a copied file; sequential writes) or "postgresql" (``CREATE DATABASE
    #: crmhub_tryton_run_... TEMPLATE`` the PostgreSQL template, dropped by stop(); for
    #: concurrency tests and benchmarks: SQLite loses concurrent writes).
    backend: str = "sqlite"
    #: PostgreSQL admin url (backend "postgresql"); None: $CRMHUB_SANDBOX_PG or DEFAULT_PG_URL.
    pg_url: str | None = None
    #: None: a free port is picked (retried if taken); after start() the port it listens on.
    port: int | None = None
    start_timeout: float = START_TIMEOUT
    stop_grace: float = STOP_GRACE
    #: idle seconds before a session expires (trytond's default is 300).
    session_timeout: int = 3600
    #: -v: warnings and errors in the log; 2: also every RPC call.
    verbose: int = 1
    keep_directory: bool = False
    #: "crmhub" (SQLite), or after start() the run database's name (PostgreSQL).
    database: str = DATABASE
    user: str = ADMIN_USER
    password: str = ADMIN_PASSWORD
    directory: Path | None = field(default=None, init=False)
    start_seconds: float = field(default=0.0, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    # -- properties
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the Tryton server is not started")
        return self._proc.pid

    @property
    def url(self) -> str:
        if self._proc is None or self.port is None:
            raise RuntimeError("the Tryton server is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def rpc_url(self) -> str:
        return f"{self.url}/{self.database}/rpc/"

    @property
    def log_path(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the Tryton server is not started")
        return self.directory / "trytond.log"

    @property
    def seeded(self) -> dict[str, Any]:
        """What the seed of this server's template created: ids by name, counts."""
        info = template_info(self.seed, self.backend, self.pg_url)
        seeded: dict[str, Any] = info.get("seeded", {})
        return seeded

    # -- lifecycle
    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError(f"the Tryton server is already started (pid {self._proc.pid})")
        started = time.monotonic()
        if self.backend not in ("sqlite", "postgresql"):
            raise RuntimeError(f"unknown sandbox backend {self.backend!r}")
        self.directory = Path(tempfile.mkdtemp(prefix="crmhub-tryton-"))
        db_dir: Path | None = self.directory / "db"
        if self.backend == "postgresql":
            db_dir = None
            try:
                self.database = self._create_run_database()
            except BaseException:
                self.stop()
                raise
        else:
            assert db_dir is not None
            template = ensure_template(self.seed)
            db_dir.mkdir()
            shutil.copyfile(template, db_dir / f"{self.database}.sqlite")
        attempts = 1 if self.port is not None else 3
        try:
            for attempt in range(1, attempts + 1):
                port = self.port if self.port is not None else free_port()
                if self._spawn(db_dir, port, last_attempt=attempt == attempts):
                    self.port = port
                    break
        except RuntimeError as exc:
            # the temp dir goes away with stop(): keep the log where the message points
            kept = HOME / "trytond-start-failure.log"
            message = str(exc)
            with contextlib.suppress(OSError):
                shutil.copyfile(self.log_path, kept)
                message = message.replace(str(self.log_path), str(kept))
            self.stop()
            raise RuntimeError(message) from exc
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        self.start_seconds = time.monotonic() - started
        return self

    def _create_run_database(self) -> str:
        url = pg_admin_url(self.pg_url)
        try:
            return _pg_run_database(url, ensure_pg_template(self.seed, url))
        except RuntimeError as exc:
            # a builder of another key may have dropped the template since we checked it
            if "does not exist" not in str(exc):
                raise
            return _pg_run_database(url, ensure_pg_template(self.seed, url))

    def _spawn(self, db_dir: Path | None, port: int, last_attempt: bool) -> bool:
        """Start trytond on ``port`` and wait for a login; False if the port was taken."""
        assert self.directory is not None
        conf = self.directory / "trytond.conf"
        _write_conf(conf, db_dir, port, pg_url=self.pg_url,
                    session=f"timeout = {self.session_timeout}")
        cmd: list[str | Path] = [venv_bin("trytond"), "-c", conf, "-d", self.database]
        if self.verbose:
            cmd.append("-" + "v" * self.verbose)
        log = self.log_path
        with log.open("ab") as out:  # its own process group: stop() kills it whole
            self._proc = spawn(cmd, out, _child_env(), cwd=self.directory)
        url = f"http://127.0.0.1:{port}/{self.database}/rpc/"

        def logged_in() -> bool:
            try:
                return bool(rpc_call(url, "common.db.login",
                                     [self.user, {"password": self.password}, "en"], timeout=5.0))
            except (urllib.error.URLError, http.client.HTTPException, OSError):
                return False
            except RPCError as exc:
                raise RuntimeError(failure(cmd, None, log, f"login refused: {exc}")) from exc

        if wait_ready(self._proc, cmd, log, logged_in, self.start_timeout, self.stop_grace,
                      "trytond", last_attempt=last_attempt):
            return True
        self._proc = None
        return False

    def stop(self) -> None:
        """Terminate the server by PID (SIGTERM, SIGKILL after the grace) and remove its dir."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_group(proc, self.stop_grace)
        if self.directory is not None and not self.keep_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        if self.backend == "postgresql" and self.database.startswith(PG_RUN_PREFIX):
            # a failed drop leaves an orphan that a later start drops (PG_ORPHAN_SECONDS)
            with contextlib.suppress(RuntimeError):
                _pg(pg_admin_url(self.pg_url),
                    f"DROP DATABASE IF EXISTS {_q(self.database)} WITH (FORCE)")
            self.database = DATABASE

    def halt(self) -> None:
        """Stop the server process but keep its database and port: an ERP outage."""
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_group(proc, self.stop_grace)

    def resume(self) -> None:
        """Start the halted server again on the same port with the same database."""
        if self._proc is not None or self.directory is None or self.port is None:
            raise RuntimeError("resume() needs a halted server")
        db_dir = None if self.backend == "postgresql" else self.directory / "db"
        self._spawn(db_dir, self.port, last_attempt=True)

    def login(self) -> tuple[int, str]:
        """Log in over JSON-RPC; return ``(uid, session header value)``."""
        uid, token, *_ = rpc_call(
            self.rpc_url, "common.db.login", [self.user, {"password": self.password}, "en"]
        )
        return int(uid), session_header_value(self.user, int(uid), str(token))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crmhub.dev.sandbox.tryton", description="Tryton 8.0 sandbox"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="build the venv and the template database")
    serve = sub.add_parser("serve", help="start a server and print how to reach it")
    for command in (prep, serve):
        command.add_argument("--bare", action="store_true", help="template without seed data")
        command.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
        command.add_argument("--pg-url", default=None,
                             help=f"PostgreSQL admin url (default $CRMHUB_SANDBOX_PG or "
                                  f"{DEFAULT_PG_URL})")
    serve.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            result = prepare(seed=not args.bare, backend=args.backend, pg_url=args.pg_url)
            t = result.timings
            state = "cached (warm)" if t.get("template_cached") else "built now (cold)"
            print(f"venv:     {result.venv}  ({t.get('venv_seconds', 0.0):.2f} s, "
                  f"{'cached' if t.get('venv_cached') else 'installed now'})")
            print(f"template: {result.template}  ({args.backend}, {state})")
            print(f"this call:  {t['prepare_seconds']:8.2f} s")
            print(f"cold build: trytond-admin {t.get('cold_admin_seconds', 0.0):.2f} s + seed "
                  f"{t.get('cold_seed_seconds', 0.0):.2f} s (last build step "
                  f"{t.get('cold_build_seconds', 0.0):.2f} s)")
            return 0
        def on_sigterm(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # trytond runs in its own process group: stop it ourselves

        signal.signal(signal.SIGTERM, on_sigterm)
        # a shell's background job inherits SIGINT as ignored; make Ctrl-C / kill -INT work
        signal.signal(signal.SIGINT, signal.default_int_handler)
        server = TrytonServer(seed=not args.bare, port=args.port, backend=args.backend,
                              pg_url=args.pg_url)
        server.start()
        try:
            print(f"url:      {server.url}")
            print(f"rpc:      {server.rpc_url}")
            print(f"database: {server.database}")
            print(f"user:     {server.user}")
            print(f"password: {server.password}")
            print(f"pid:      {server.pid}  (started in {server.start_seconds:.2f} s)")
            print(f"log:      {server.log_path}")
            print("Ctrl-C to stop", flush=True)
            while server.running:
                time.sleep(0.5)
            print(f"trytond exited; last lines of {server.log_path}:\n{tail(server.log_path)}")
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            server.stop()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
