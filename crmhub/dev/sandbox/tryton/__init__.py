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

from crmhub.dev.sandbox.tryton.config import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ADMIN_USER,
    DATABASE,
    DEFAULT_PG_URL,
    HOME,
    MODULES,
    PRICE_DECIMAL,
    REQUIREMENTS,
    SEED_PRODUCTS,
    SEED_VERSION,
    SERIES,
    TIMINGS,
    VENV,
    ensure_venv,
    pg_admin_url,
    venv_bin,
    venv_dir,
)
from crmhub.dev.sandbox.tryton.postgres import (
    PG_BARE_PREFIX,
    PG_ORPHAN_SECONDS,
    PG_RUN_PREFIX,
    PG_TEMPLATE_PREFIX,
    ensure_pg_template,
    pg_run_databases,
    pg_template_name,
)
from crmhub.dev.sandbox.tryton.server import Prepared, TrytonServer, prepare, template_info
from crmhub.dev.sandbox.tryton.sqlite import ensure_template, template_db, template_dir

__all__ = [
    "ADMIN_EMAIL", "ADMIN_PASSWORD", "ADMIN_USER", "DATABASE", "DEFAULT_PG_URL", "HOME",
    "MODULES", "PG_BARE_PREFIX", "PG_ORPHAN_SECONDS", "PG_RUN_PREFIX", "PG_TEMPLATE_PREFIX",
    "PRICE_DECIMAL", "REQUIREMENTS", "SEED_PRODUCTS", "SEED_VERSION", "SERIES", "TIMINGS",
    "VENV", "Prepared", "TrytonServer", "ensure_pg_template", "ensure_template", "ensure_venv",
    "pg_admin_url", "pg_run_databases", "pg_template_name", "prepare", "template_db",
    "template_dir", "template_info", "venv_bin", "venv_dir",
]
