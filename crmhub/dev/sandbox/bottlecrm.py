"""A real BottleCRM (PyPI ``django-crm``) for tests and the demo: cached venv, migrated
snapshot with an org and an access token, gunicorn and a webhook dispatcher by PID.

Layout under ``SANDBOX_ROOT`` (``$CRMHUB_SANDBOX_DIR`` or ``<repo>/.sandbox``, git-ignored)::

    bottlecrm-1.35.0/venv/            django-crm + gunicorn (stamp: .crmhub-stamp.json)
    bottlecrm-1.35.0/snapshot-<key>/  crm.sqlite migrated and bootstrapped (stamp.json: the
                                      org, the admin user and a personal access token)
    bottlecrm-1.35.0/*.lock, *.log    build locks and the logs of the last install / build

``<key>`` is a short digest of what the snapshot depends on (what pip resolved, the settings
module and the bootstrap script of ``scripts/``, the seed values), so checkouts at different
versions sharing one sandbox folder each keep their own snapshot. Migrations take ~2 minutes
(CPU-bound), so they run once per key; each ``BottleCrmServer`` copies the snapshot into its
own temp dir and serves it with gunicorn on a free port of 127.0.0.1. The settings module
(``scripts/crmhub_bottlecrm_settings.py``) imports ``crm.settings`` and
changes what a test instance needs: SQLite, DEBUG, a 32+ byte SECRET_KEY, Celery run eagerly
(a delivery is attempted inside the request that caused it), and the webhook SSRF guard
relaxed so BottleCRM may call a hub on 127.0.0.1 at any port.

Webhook retries are BottleCRM's own: a failed attempt leaves the delivery row pending with
``next_attempt_at = now + webhooks.tasks.BACKOFF[n]`` and ``dispatch_due_deliveries`` (beat
runs it every minute in production) sends what is due. The sandbox shortens BACKOFF to
``RETRY_SECONDS`` in both gunicorn and a dispatcher process that runs that task every
``DISPATCH_SECONDS``, so a delivery refused with a 503 really is sent again a few seconds later.

    python -m crmhub.dev.sandbox.bottlecrm prepare    # build, print timings (cold or warm)
    python -m crmhub.dev.sandbox.bottlecrm serve      # url and token until Ctrl-C
"""

from __future__ import annotations

import argparse
import atexit
import functools
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from crmhub.dev.sandbox.common import (
    SANDBOX_ROOT,
    SCRIPTS,
    Venv,
    child_env,
    http_ok,
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

VERSION = "1.35.0"
HOME = SANDBOX_ROOT / f"bottlecrm-{VERSION}"
REQUIREMENTS: tuple[str, ...] = (f"django-crm=={VERSION}", "gunicorn>=23")
MIN_PYTHON = (3, 12)
SETTINGS_MODULE = "crmhub_bottlecrm_settings"
ADMIN_EMAIL = "admin@crmhub.example"
ORG_NAME = "crmhub sandbox"
#: The signing key of every JWT (BottleCRM wants >= 32 bytes); a sandbox-only value.
SECRET_KEY = "crmhub-sandbox-bottlecrm-secret-key-0123456789abcdef"
#: Bump when the bootstrap script changes: the snapshot is rebuilt on the next prepare.
BOOTSTRAP_VERSION = 2
#: Products the bootstrap creates: the Tryton sandbox's catalogue (same SKUs and list prices),
#: so a deal built from them becomes a sale of products the ERP has.
PRODUCTS: tuple[tuple[str, str, str], ...] = (
    ("WIDGET", "Widget", "12.50"), ("PUMP-200", "Pump 200", "1450.00"),
    ("SEAL-KIT", "Seal kit", "39.90"), ("VALVE-9", "Valve 9", "89.00"),
    ("MANUAL", "Operating manual (print)", "19.00"))
RETRY_SECONDS = 2.0
DISPATCH_SECONDS = 1.0
MIGRATE_TIMEOUT = 900.0
START_TIMEOUT = 60.0
STOP_GRACE = 5.0

#: Timings of the last ensure_venv / ensure_snapshot calls in this process (seconds).
TIMINGS: dict[str, float] = {}

VENV = Venv(HOME / "venv", REQUIREMENTS, MIN_PYTHON, "the BottleCRM sandbox",
            ("gunicorn", "django-admin"), 900.0, TIMINGS)

#: The files every BottleCRM process of the sandbox loads, copied into its folder from
#: scripts/: the settings module, the retry patch, the WSGI entry and the dispatcher.
SUPPORT: tuple[str, ...] = (f"{SETTINGS_MODULE}.py", "crmhub_bottlecrm_patch.py",
                            "crmhub_bottlecrm_wsgi.py", "crmhub_bottlecrm_dispatch.py")
#: Run once into the snapshot, after migrate: the admin user, the org, a personal access
#: token and the products.
BOOTSTRAP = SCRIPTS / "bottlecrm_bootstrap.py"


# --------------------------------------------------------------------------- venv / snapshot


def ensure_venv() -> Path:
    """Create ``.sandbox/bottlecrm-1.35.0/venv`` (once); return its path."""
    return VENV.ensure()


def snapshot_dir() -> Path:
    """The folder of the snapshot of the current venv, settings and bootstrap (built or not):
    checkouts at different versions sharing one sandbox folder keep one each."""
    return HOME / f"snapshot-{_snapshot_key()[:12]}"


def snapshot_db() -> Path:
    return snapshot_dir() / "crm.sqlite"


def _snapshot_key() -> str:
    """What the snapshot depends on: the resolved packages, the settings, the bootstrap."""
    stamp = VENV.stamp() or {}
    material = {"freeze": stamp.get("freeze", []),
                "settings": (SCRIPTS / f"{SETTINGS_MODULE}.py").read_text(),
                "bootstrap": BOOTSTRAP.read_text(), "bootstrap_version": BOOTSTRAP_VERSION,
                "products": PRODUCTS,
                "email": ADMIN_EMAIL, "org": ORG_NAME, "secret": SECRET_KEY}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _snapshot_ok(key: str) -> dict[str, Any] | None:
    stamp = read_json(snapshot_dir() / "stamp.json")
    if stamp is None or stamp.get("key") != key or not snapshot_db().exists():
        return None
    return stamp


def _write_support(directory: Path) -> None:
    """The settings module, the retry patch, the WSGI entry and the dispatcher script."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in SUPPORT:
        shutil.copyfile(SCRIPTS / name, directory / name)


def _env(directory: Path, db: Path) -> dict[str, str]:
    return child_env({
        "PYTHONPATH": str(directory), "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
        "CRMHUB_BOTTLECRM_DB": str(db), "SECRET_KEY": SECRET_KEY, "ENV_TYPE": "dev",
        "DEBUG": "True", "PYTHONWARNINGS": "ignore",
        "CRMHUB_BOTTLECRM_RETRY_SECONDS": str(RETRY_SECONDS),
        "CRMHUB_BOTTLECRM_DISPATCH_SECONDS": str(DISPATCH_SECONDS),
    }, drop_prefixes=("DJANGO_", "BOTTLECRM_", "CELERY_", "DB"))


def ensure_snapshot() -> Path:
    """Migrate and bootstrap the snapshot once per key (locked); return the SQLite file."""
    ensure_venv()
    started = time.monotonic()
    key = _snapshot_key()
    stamp = _snapshot_ok(key)
    cached = stamp is not None
    if stamp is None:
        with locked(HOME / f"{snapshot_dir().name}.lock"):
            stamp = _snapshot_ok(key)
            cached = stamp is not None
            if stamp is None:
                stamp = _build_snapshot(key)
    TIMINGS["snapshot_seconds"] = time.monotonic() - started
    TIMINGS["snapshot_cached"] = 1.0 if cached else 0.0
    for name, value in stamp.get("timings", {}).items():
        TIMINGS[f"cold_{name}"] = float(value)
    return snapshot_db()


def _build_snapshot(key: str) -> dict[str, Any]:
    staging = Path(tempfile.mkdtemp(prefix="crmhub-bottlecrm-build-", dir=HOME))
    log = HOME / f"{snapshot_dir().name}-build.log"
    log.write_text("")
    try:
        _write_support(staging)
        db = staging / "crm.sqlite"
        env = _env(staging, db)
        started = time.monotonic()
        run([VENV.bin("django-admin"), "migrate", "--noinput"], log, MIGRATE_TIMEOUT, env,
            cwd=staging)
        migrate_seconds = time.monotonic() - started
        result = staging / "bootstrap.json"
        run([VENV.bin("python"), BOOTSTRAP, ADMIN_EMAIL, ORG_NAME, result,
             json.dumps(PRODUCTS)], log, 300, env, cwd=staging)
        boot = json.loads(result.read_text())
        token = boot["token"]
        stamp = {
            "key": key, "version": VERSION, "email": ADMIN_EMAIL,
            "org_id": _org_id(boot), "token": token.get("token") or token.get("raw_token"),
            "products": boot.get("products", {}),
            "timings": {"migrate_seconds": migrate_seconds,
                        "bootstrap_seconds": time.monotonic() - started - migrate_seconds},
        }
        if not stamp["token"] or not str(stamp["token"]).startswith("bcrm_pat_"):
            raise RuntimeError(f"the bootstrap minted no personal access token: {token!r}")
        target = snapshot_dir()
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        shutil.copy2(db, target / "crm.sqlite")
        write_json(target / "stamp.json", stamp)
        return stamp
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _org_id(boot: dict[str, Any]) -> str:
    org = boot.get("org", {})
    found = (org.get("org") or {}).get("id") or org.get("id") or boot["switched"].get("org_id")
    if not found:
        raise RuntimeError(f"the bootstrap created no org: {org!r}")
    return str(found)


def snapshot_info() -> dict[str, Any]:
    ensure_snapshot()
    return read_json(snapshot_dir() / "stamp.json") or {}


@dataclass(frozen=True)
class Prepared:
    venv: Path
    snapshot: Path
    timings: dict[str, float]


def prepare() -> Prepared:
    started = time.monotonic()
    venv = ensure_venv()
    venv_timings = {k: v for k, v in TIMINGS.items() if k.startswith("venv_")}
    snapshot = ensure_snapshot()
    timings = {**TIMINGS, **venv_timings, "prepare_seconds": time.monotonic() - started}
    return Prepared(venv, snapshot, timings)


# --------------------------------------------------------------------------- server


#: What the hub subscribes to (every account, deal and invoice event).
WEBHOOK_EVENTS: tuple[str, ...] = (
    "account.created", "account.updated", "deal.created", "deal.updated", "deal.won",
    "deal.lost", "invoice.created", "invoice.updated", "invoice.paid")


class ApiError(RuntimeError):
    """A BottleCRM API call the sandbox made was refused."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status} {body[:500]}")
        self.status = status


@dataclass
class BottleCrmServer:
    """A gunicorn serving a private copy of the snapshot, plus the webhook dispatcher.

    ``with BottleCrmServer() as crm: ...`` or ``start()`` / ``stop()``. After start: ``url``
    (``http://127.0.0.1:PORT``), ``token`` (a ``bcrm_pat_...`` personal access token of the
    org's admin), ``org_id``, ``pid``, ``directory``, ``log_path``. ``register_webhook(url)``
    points BottleCRM's webhooks at a receiver and returns ``(endpoint id, secret)``.
    """

    port: int | None = None
    #: gunicorn threads (one worker process): requests that deliver webhooks inline wait
    threads: int = 8
    start_timeout: float = START_TIMEOUT
    stop_grace: float = STOP_GRACE
    #: run the dispatcher that retries failed webhook deliveries (BottleCRM's beat task)
    dispatcher: bool = True
    keep_directory: bool = False
    directory: Path | None = field(default=None, init=False)
    token: str = field(default="", init=False)
    org_id: str = field(default="", init=False)
    email: str = field(default=ADMIN_EMAIL, init=False)
    start_seconds: float = field(default=0.0, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _dispatch: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _jwt: tuple[str, float] | None = field(default=None, init=False, repr=False)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the BottleCRM server is not started")
        return self._proc.pid

    @property
    def url(self) -> str:
        if self._proc is None or self.port is None:
            raise RuntimeError("the BottleCRM server is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the BottleCRM server is not started")
        return self.directory / "bottlecrm.log"

    def start(self) -> Self:
        started = time.monotonic()
        ensure_snapshot()
        stamp = read_json(snapshot_dir() / "stamp.json") or {}
        self.token, self.org_id = str(stamp["token"]), str(stamp["org_id"])
        self.directory = Path(tempfile.mkdtemp(prefix="crmhub-bottlecrm-"))
        try:
            _write_support(self.directory)
            shutil.copy2(snapshot_db(), self.directory / "crm.sqlite")
            for attempt in range(3):
                port = self.port or free_port()
                if self._spawn(port, last_attempt=attempt == 2 or self.port is not None):
                    self.port = port
                    break
            if self.dispatcher:
                env = _env(self.directory, self.directory / "crm.sqlite")
                with (self.directory / "dispatcher.log").open("ab") as out:
                    self._dispatch = spawn([VENV.bin("python"), "crmhub_bottlecrm_dispatch.py"],
                                           out, env, cwd=self.directory)
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        self.start_seconds = time.monotonic() - started
        return self

    def _spawn(self, port: int, last_attempt: bool) -> bool:
        """Start gunicorn on ``port`` and wait for /healthz/; False if the port was taken."""
        assert self.directory is not None
        env = _env(self.directory, self.directory / "crm.sqlite")
        cmd: list[str | Path] = [
            VENV.bin("gunicorn"), "crmhub_bottlecrm_wsgi:application",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", str(self.threads),
            "--worker-class", "gthread", "--timeout", "120", "--graceful-timeout", "2",
            "--error-logfile", "-"]
        with self.log_path.open("ab") as out:
            self._proc = spawn(cmd, out, env, cwd=self.directory)
        if wait_ready(self._proc, cmd, self.log_path,
                      functools.partial(http_ok, f"http://127.0.0.1:{port}/healthz/", 5.0),
                      self.start_timeout, self.stop_grace, "gunicorn",
                      last_attempt=last_attempt):
            return True
        self._proc = None
        return False

    def stop(self) -> None:
        """Terminate gunicorn and the dispatcher by PID and remove the run directory."""
        atexit.unregister(self.stop)
        for attr in ("_dispatch", "_proc"):
            proc = getattr(self, attr)
            setattr(self, attr, None)
            if proc is not None:
                kill_group(proc, self.stop_grace)
        if self.directory is not None and not self.keep_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- API helpers for setup (the hub itself uses connectors.bottlecrm)
    def org_jwt(self) -> str:
        """An org-bound access JWT for the admin (webhook management refuses tokens):
        ``django-admin devlogin EMAIL --org ORG``, cached for 50 minutes."""
        if self._jwt is not None and self._jwt[1] > time.monotonic():
            return self._jwt[0]
        assert self.directory is not None
        env = _env(self.directory, self.directory / "crm.sqlite")
        result = subprocess.run([str(VENV.bin("django-admin")), "devlogin", self.email,
                                 "--org", self.org_id], capture_output=True, text=True,
                                env=env, cwd=self.directory, timeout=120)
        found = [line.split()[-1] for line in result.stdout.splitlines()
                 if line.startswith("access_token:")]
        if result.returncode != 0 or not found:
            raise RuntimeError(f"devlogin failed ({result.returncode}): "
                               f"{(result.stderr or result.stdout)[-1000:]}")
        self._jwt = (found[0], time.monotonic() + 50 * 60)
        return found[0]

    def api(self, method: str, path: str, body: Any = None, *, jwt: bool = False) -> Any:
        """One JSON call with the personal access token (``jwt``: the org JWT)."""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method,
            data=None if body is None else json.dumps(body).encode())
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {self.org_jwt() if jwt else self.token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(method, path, exc.code, exc.read().decode(errors="replace")
                           ) from None
        return json.loads(raw) if raw else None

    def register_webhook(self, url: str, events: Sequence[str] = WEBHOOK_EVENTS
                         ) -> tuple[str, str]:
        """Register ``url`` for ``events``; returns (endpoint id, signing secret)."""
        created = self.api("POST", "/api/webhooks/",
                           {"url": url, "events": list(events), "description": "crmhub"},
                           jwt=True)
        return str(created["id"]), str(created["secret"])

    def unregister_webhook(self, endpoint_id: str) -> None:
        """Delete the endpoint (an org may have at most 10)."""
        self.api("DELETE", f"/api/webhooks/{endpoint_id}/", jwt=True)

    @property
    def products(self) -> dict[str, str]:
        """The snapshot's products: SKU -> BottleCRM product id."""
        return dict((read_json(snapshot_dir() / "stamp.json") or {}).get("products", {}))

    def deliveries(self, endpoint_id: str) -> list[dict[str, Any]]:
        """The endpoint's delivery log, newest first (status, attempts, response_status)."""
        page = self.api("GET", f"/api/webhooks/{endpoint_id}/deliveries/?limit=200", jwt=True)
        return list(page.get("results", page) if isinstance(page, dict) else page)



# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crmhub.dev.sandbox.bottlecrm",
                                     description=f"BottleCRM {VERSION} sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="build the venv and the migrated snapshot")
    serve = sub.add_parser("serve", help="start a server and print how to reach it")
    serve.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            result = prepare()
            t = result.timings
            state = "cached (warm)" if t.get("snapshot_cached") else "built now (cold)"
            print(f"venv:       {result.venv}  ({t.get('venv_seconds', 0.0):.2f} s, "
                  f"{'cached' if t.get('venv_cached') else 'installed now'})")
            print(f"snapshot:   {result.snapshot}  ({state})")
            print(f"this call:  {t['prepare_seconds']:8.2f} s")
            print(f"cold build: migrate {t.get('cold_migrate_seconds', 0.0):.2f} s + bootstrap "
                  f"{t.get('cold_bootstrap_seconds', 0.0):.2f} s")
            started = time.monotonic()
            with BottleCrmServer(dispatcher=False) as crm:
                print(f"start:      {crm.start_seconds:8.2f} s (copy + gunicorn ready)")
                accounts = crm.api("GET", "/api/accounts/?limit=1")
                jwt_started = time.monotonic()
                crm.org_jwt()
                print(f"org JWT:    {time.monotonic() - jwt_started:8.2f} s (devlogin)")
                print(f"API check:  GET /api/accounts/ -> {type(accounts).__name__}")
            print(f"start+stop: {time.monotonic() - started:8.2f} s")
            return 0

        def on_sigterm(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_sigterm)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        server = BottleCrmServer(port=args.port)
        server.start()
        try:
            print(f"url:      {server.url}")
            print(f"token:    {server.token}")
            print(f"org:      {server.org_id}")
            print(f"pid:      {server.pid}  (started in {server.start_seconds:.2f} s)")
            print(f"log:      {server.log_path}")
            print("Ctrl-C to stop", flush=True)
            while server.running:
                time.sleep(0.5)
            print(f"gunicorn exited; last lines of {server.log_path}:\n{tail(server.log_path)}")
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
