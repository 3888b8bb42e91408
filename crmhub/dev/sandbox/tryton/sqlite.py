"""The SQLite template of the Tryton sandbox: a crmhub.sqlite file per key, bare (modules
activated) and seeded, built once and copied by every server."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from crmhub.dev.sandbox.common import locked, read_json, run, write_json
from crmhub.dev.sandbox.tryton.build import record_timings, run_seed, template_stamp
from crmhub.dev.sandbox.tryton.config import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ADMIN_TIMEOUT,
    DATABASE,
    HOME,
    MODULES,
    ensure_venv,
    template_key,
    trytond_env,
    venv_bin,
    write_conf,
)


def template_dir(seed: bool = True) -> Path:
    """The folder of the template of the current venv and seed (built or not)."""
    return HOME / f"{'template' if seed else 'template-bare'}-{template_key(seed)[:12]}"


def template_db(seed: bool = True) -> Path:
    return template_dir(seed) / f"{DATABASE}.sqlite"


def _template_ok(seed: bool, key: str) -> dict[str, Any] | None:
    stamp = read_json(template_dir(seed) / "stamp.json")
    if stamp is None or stamp.get("key") != key or not template_db(seed).exists():
        return None
    return stamp


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
    key = template_key(seed)
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
    record_timings(stamp, cached, started)
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
        write_conf(conf, staging)
        db_file = staging / f"{DATABASE}.sqlite"
        seeded: dict[str, Any] = {}
        if seed:
            bare = _template_ok(False, template_key(False))
            if bare is None:
                raise RuntimeError(f"the bare template {template_db(False)} vanished")
            shutil.copyfile(template_db(False), db_file)
            admin_seconds = float(bare.get("timings", {}).get("admin_seconds", 0.0))
            seeded = run_seed(conf, DATABASE, staging, log)
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
                env=trytond_env({"TRYTONPASSFILE": str(passfile)}),
                cwd=staging,
            )
            passfile.unlink()
            admin_seconds = time.monotonic() - started
        stamp = template_stamp(key, seed, seeded, admin_seconds, started)
        conf.unlink()
        write_json(staging / "stamp.json", stamp)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stamp
