"""python -m crmhub.dev.sandbox.tryton prepare|serve: build the sandbox, or run one server."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence

from crmhub.dev.sandbox.common import tail
from crmhub.dev.sandbox.tryton.config import DEFAULT_PG_URL
from crmhub.dev.sandbox.tryton.server import TrytonServer, prepare


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
