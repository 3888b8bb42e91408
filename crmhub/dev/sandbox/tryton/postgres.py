"""The PostgreSQL template of the Tryton sandbox: bare and seeded template databases per key on
a server, stamped in their comment, and one run database per server copied from them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from crmhub.dev.sandbox.common import locked, run, wait_until
from crmhub.dev.sandbox.tryton.build import record_timings, run_seed, template_stamp
from crmhub.dev.sandbox.tryton.config import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ADMIN_TIMEOUT,
    HOME,
    MODULES,
    SEED_TIMEOUT,
    ensure_venv,
    pg_admin_url,
    template_key,
    trytond_env,
    venv_bin,
    write_conf,
)

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


def _when_idle(url: str, statement: str) -> None:
    """Run a statement that needs a database nobody is connected to, retrying while busy."""
    busy: list[RuntimeError] = []

    def done() -> bool:
        try:
            _pg(url, statement)
        except RuntimeError as exc:
            if "being accessed by other users" not in str(exc):
                raise
            busy[:] = [exc]
            return False
        return True

    wait_until(done, PG_BUSY_TIMEOUT, lambda: f"{busy[-1]} (still after "
               f"{PG_BUSY_TIMEOUT:.0f} s of retries)", interval=0.2)


@contextlib.contextmanager
def _pg_locked(url: str, name: str, timeout: float) -> Iterator[None]:
    """A session advisory lock on the server: checkouts with other lock files share it."""
    import psycopg

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise RuntimeError(f"PostgreSQL at {url}: {exc}") from exc
    with conn:  # closing the session releases the lock, also when this process dies

        def acquired() -> bool:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            return bool(row and row[0])

        wait_until(acquired, timeout, lambda: f"PostgreSQL at {url}: advisory lock {name!r} "
                   f"still held by another process after {timeout:.0f} s", interval=0.5)
        yield


def _pg_template_name(seed: bool, key: str) -> str:
    return (PG_TEMPLATE_PREFIX if seed else PG_BARE_PREFIX) + key[:16]


def pg_template_name(seed: bool = True) -> str:
    """The PostgreSQL template's name for the current venv and seed (built or not)."""
    ensure_venv()
    return _pg_template_name(seed, template_key(seed))


def pg_stamp(url: str, name: str, key: str) -> dict[str, Any] | None:
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
    key = template_key(seed)
    name = _pg_template_name(seed, key)
    stamp = pg_stamp(url, name, key)
    cached = stamp is not None
    if stamp is None:
        bare = ensure_pg_template(False, url) if seed else None
        kind = "template" if seed else "template-bare"
        with locked(HOME / f"{kind}-pg.lock"), \
                _pg_locked(url, f"crmhub-tryton-{kind}", ADMIN_TIMEOUT + SEED_TIMEOUT):
            stamp = pg_stamp(url, name, key)
            cached = stamp is not None
            if stamp is None:
                _drop_stale_templates(url, name)
                stamp = _build_pg_template(url, name, key, bare, HOME / f"{kind}-pg-build.log")
    record_timings(stamp, cached, started)
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
        write_conf(conf, None, pg_url=url)
        seeded: dict[str, Any] = {}
        if bare is None:
            _pg(url, f"CREATE DATABASE {_q(building)} ENCODING 'UTF8' TEMPLATE template0")
            passfile = staging / "admin.pass"
            passfile.write_text(ADMIN_PASSWORD)
            admin: list[str | Path] = [venv_bin("trytond-admin"), "-c", conf, "-d", building]
            env = trytond_env({"TRYTONPASSFILE": str(passfile)})
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
            bare_stamp = pg_stamp(url, bare, template_key(False)) or {}
            admin_seconds = float(bare_stamp.get("timings", {}).get("admin_seconds", 0.0))
            _when_idle(url, f"CREATE DATABASE {_q(building)} TEMPLATE {_q(bare)}")
            seeded = run_seed(conf, building, staging, log)
        # every copy inherits these statistics: plans as on a database in use
        _pg(url, "ANALYZE", dbname=building)
        stamp = template_stamp(key, bare is not None, seeded, admin_seconds, started)
        comment = json.dumps(stamp).replace("'", "''")
        _pg(url, f"COMMENT ON DATABASE {_q(building)} IS '{comment}'")
        # Nobody can connect to a finished template (a session on it would make every
        # CREATE DATABASE ... TEMPLATE fail); copies are created with connections allowed.
        _when_idle(url, f"ALTER DATABASE {_q(building)} RENAME TO {_q(name)}")
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
    _when_idle(url, f"CREATE DATABASE {_q(name)} TEMPLATE {_q(template)}")
    return name


def pg_run_databases(pg_url: str | None = None) -> list[str]:
    """The run databases on the server (this and other processes'): for tests and cleanup."""
    rows = _pg(pg_admin_url(pg_url), fetch="SELECT datname FROM pg_database ORDER BY 1")
    return [str(name) for name, in rows if str(name).startswith(PG_RUN_PREFIX)]


def create_run_database(seed: bool, pg_url: str | None) -> str:
    """A fresh copy of the (seeded or bare) template for one server, the template built first
    if missing; its name."""
    url = pg_admin_url(pg_url)
    try:
        return _pg_run_database(url, ensure_pg_template(seed, url))
    except RuntimeError as exc:
        # a builder of another key may have dropped the template since we checked it
        if "does not exist" not in str(exc):
            raise
        return _pg_run_database(url, ensure_pg_template(seed, url))


def drop_run_database(pg_url: str | None, name: str) -> None:
    """Drop a server's run database; a failed drop leaves an orphan that a later start drops
    (PG_ORPHAN_SECONDS)."""
    with contextlib.suppress(RuntimeError):
        _pg(pg_admin_url(pg_url), f"DROP DATABASE IF EXISTS {_q(name)} WITH (FORCE)")


def pg_template_info(seed: bool, pg_url: str | None) -> dict[str, Any]:
    """The stamp of the built template on the server of ``pg_url``; {} if it is not built."""
    ensure_venv()  # the template's name comes from what pip resolved
    key = template_key(seed)
    return pg_stamp(pg_admin_url(pg_url), _pg_template_name(seed, key), key) or {}
