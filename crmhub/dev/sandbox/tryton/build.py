"""What building either template (SQLite file or PostgreSQL database) shares: running the seed
script, the stamp, the timings."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crmhub.dev.sandbox.common import read_json, run, tail
from crmhub.dev.sandbox.tryton.config import (
    MODULES,
    REQUIREMENTS,
    SEED_SCRIPT,
    SEED_TIMEOUT,
    SEED_VERSION,
    TIMINGS,
    venv_bin,
)


def record_timings(stamp: Mapping[str, Any], cached: bool, started: float) -> None:
    TIMINGS["template_cached"] = 1.0 if cached else 0.0
    TIMINGS["template_seconds"] = time.monotonic() - started
    for name in ("admin_seconds", "seed_seconds", "build_seconds"):
        TIMINGS[f"cold_{name}"] = float(stamp.get("timings", {}).get(name, 0.0))


def run_seed(conf: Path, database: str, staging: Path, log: Path) -> dict[str, Any]:
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


def template_stamp(key: str, seed: bool, seeded: dict[str, Any], admin_seconds: float,
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
