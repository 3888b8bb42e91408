"""The `crmhub` command: run, demo, status, topics, config, dlq, parked, schemas, backfill, docs.

With crmhub/app.py (to come) and crmhub/dev/, the one place that may import the catalogue
(connectors, flows) as well as the runtime: it hands the runtime what it needs as arguments.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from connectors.spec import ConnectorSettings, read_config_file
from crmhub import docgen, logs
from crmhub.settings import CONFIG_FILE_ENV, HubSettings, secret_values
from crmhub.store import RawMessage, Store, describe_bytes

app = typer.Typer(help="crmhub: CRM, ERP, supply chain and OA in sync over Kafka.",
                  no_args_is_help=True, add_completion=False)
dlq_app = typer.Typer(help="Dead letters: list, show, replay, discard.", no_args_is_help=True)
parked_app = typer.Typer(help="Messages parked until a dependency is bound.",
                         no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
schemas_app = typer.Typer(help="Canonical schemas.", no_args_is_help=True)
backfill_app = typer.Typer(help="Initial loads: publish what a system already holds.",
                           no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(parked_app, name="parked")
app.add_typer(topics_app, name="topics")
app.add_typer(config_app, name="config")
app.add_typer(schemas_app, name="schemas")
app.add_typer(backfill_app, name="backfill")


def _settings() -> HubSettings:
    try:
        return HubSettings()
    except ValidationError as exc:
        for problem in settings_problems(exc):
            typer.echo(f"config error: {problem}", err=True)
        raise typer.Exit(2) from None


def _store() -> Store:
    store = Store(_settings().database_url.get_secret_value())
    store.migrate()
    return store


def settings_problems(exc: ValidationError,
                      settings: type[BaseSettings] = HubSettings) -> list[str]:
    """One readable line per problem, naming the environment variable to fix; the values of
    secret fields are never shown."""
    secret = {name for name, f in settings.model_fields.items() if f.annotation is SecretStr}
    problems = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        if field not in settings.model_fields:  # an alias (TRYTON_URL for tryton_stock's url)
            field = next((name for name in settings.model_fields
                          if field.upper() in docgen.env_names(settings, name)), field)
        prefix = str(settings.model_config.get("env_prefix") or "")
        if issubclass(settings, ConnectorSettings):  # TRYTON_STOCK_ for an alias-only class
            prefix = prefix or f"{settings.tables()[-1].upper()}_"
        whole = f"{prefix}*" if settings is not HubSettings else "settings"  # cross-field
        name = (docgen.env_names(settings, field)[0] if field in settings.model_fields
                else f"{prefix}{field.upper()}" if field else whole)
        given = error.get("input")
        shown = f" (got {given!r})" if field and field not in secret and not isinstance(
            given, dict) else ""
        problems.append(f"{name}: {error['msg']}{shown}")
    return problems


def catalogue_settings() -> list[tuple[str, type[ConnectorSettings]]]:
    """(name, settings class) of every connector (connectors.catalogue) and of the flows' own
    rules (flows.SETTINGS): what `config check` validates and `docs` documents."""
    from connectors.catalogue import CONNECTORS
    from flows import SETTINGS

    return [(spec.slug, spec.settings) for spec in CONNECTORS] + [
        (cls.tables()[-1], cls) for cls in SETTINGS]


def connector_secrets() -> list[str]:
    """Every secret of the connectors' and flows' settings (environment or TOML), for the hub
    to redact from logs and dead letters. A class whose settings are invalid is left out: its
    flows refuse to start with the reason (and `crmhub config check` names it), while flows
    that do not use it run as before."""
    secrets: list[str] = []
    for _, settings in catalogue_settings():
        try:
            secrets += secret_values(settings())
        except ValidationError:
            continue
    return secrets


# -- run / demo ------------------------------------------------------------------------------
@app.command()
def run() -> None:
    """Run the hub until SIGTERM/SIGINT. No CRMHUB_BOOTSTRAP_SERVERS = embedded broker."""
    from connectors.extras import MissingExtra
    from crmhub.transport import KafkaSecurityError

    settings = _settings()
    logs.configure(settings.log_level)
    try:
        asyncio.run(_serve(settings))
    except (KafkaSecurityError, MissingExtra) as exc:  # configuration: no traceback, the fix
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


async def _serve(settings: HubSettings, once: Any = None) -> int:
    from crmhub.http import HttpServer
    from crmhub.hub import Hub

    started = time.monotonic()
    hub = Hub(settings, extra_secrets=connector_secrets())
    try:
        await hub.start()
    except BaseException:  # a refused start must not leave the embedded broker behind
        await hub.stop()
        raise
    http = HttpServer(hub, settings.http_host, settings.http_port)
    await http.start()
    where = "embedded broker" if hub.embedded else "broker"
    typer.echo(f"crmhub ready in {time.monotonic() - started:.2f}s: {len(hub.flows)} flows, "
               f"{where} {hub.bootstrap_servers}, {http.url}")
    code = 0
    try:
        if once is not None:
            code = await once(hub)
        else:
            await _until_signalled()
    finally:
        await http.stop()
        await hub.stop()
    return code


async def _until_signalled() -> None:
    """Wait for SIGINT or SIGTERM; the caller then stops the HTTP server and the hub."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    typer.echo("stopping ...")


@app.command()
def demo(once: Annotated[bool, typer.Option(
        "--once", help="Exit 0 after the scenario succeeds (1 if it does not).")] = False) -> None:
    """The main job on embedded defaults: embedded broker, SQLite, the Tryton sandbox as the
    ERP and SCM, Synapse/aiosmtpd/Radicale as the OA system, and a scripted scenario from won
    order to paid invoice and delivery, plus an order approved in the chat."""
    _source_checkout_only("the demo")
    from connectors.tryton.client import TrytonClient
    from crmhub.dev.demo import (
        DEMO_DIR,
        Timeline,
        demo_settings,
        prepare,
        run_approval_scenario,
        run_crm_scenario,
        run_erp_scenario,
        run_scenario,
        start_oa_sandboxes,
    )
    from crmhub.dev.sandbox.bottlecrm import BottleCrmServer
    from crmhub.dev.sandbox.tryton import TrytonServer, template_info

    drop = prepare(DEMO_DIR)
    os.environ.setdefault("FILEDROP_DIRECTORY", str(drop))
    logs.configure("WARNING")
    say = Timeline()
    say("starting the Tryton sandbox (ERP + stock; the first run builds it, about a minute)")
    erp_server = TrytonServer()
    try:
        erp_server.start()
    except RuntimeError as exc:
        typer.echo(f"error: the Tryton sandbox did not start: {exc}", err=True)
        raise typer.Exit(1) from exc
    say(f"Tryton 8.0 at {erp_server.url} (database {erp_server.database}, "
        f"started in {erp_server.start_seconds:.1f}s)")
    tryton = erp_server.settings()
    for name, value in (("URL", tryton.url), ("DATABASE", tryton.database),
                        ("USER", tryton.user), ("PASSWORD", tryton.password.get_secret_value())):
        os.environ[f"TRYTON_{name}"] = value
    crm_server, port = _start_bottlecrm(say, BottleCrmServer(), erp_server.stop)
    try:
        oa = start_oa_sandboxes(say)
    except RuntimeError as exc:
        crm_server.stop()
        erp_server.stop()
        typer.echo(f"error: an OA sandbox did not start: {exc}", err=True)
        raise typer.Exit(1) from exc
    settings = demo_settings(DEMO_DIR, http_port=port)

    async def scenario(hub: Any) -> int:
        ok = await run_scenario(hub, say)
        folder = Path(os.environ["FILEDROP_DIRECTORY"])
        typer.echo(f"files dropped under {folder}:")
        for path in await asyncio.to_thread(lambda: sorted(folder.rglob("*.json"))):
            typer.echo(f"  {path}")
        if ok:
            async with TrytonClient(tryton) as erp:
                method = template_info()["seeded"]["payment_method"]
                ok = await run_erp_scenario(hub, say, erp, method)
                ok = ok and await run_crm_scenario(hub, say, crm_server, erp, method)
        ok = ok and await run_approval_scenario(hub, say, oa)
        typer.echo("scenario " + ("succeeded" if ok else "FAILED"))
        if ok and not once:
            typer.echo("hub keeps running; try `curl localhost:PORT/status`. Ctrl-C to stop.")
            await _until_signalled()
        return 0 if ok else 1

    try:
        code = asyncio.run(_serve(settings, once=scenario))
    finally:
        crm_server.stop()
        erp_server.stop()
        oa.stop()
    raise typer.Exit(code)


def _source_checkout_only(what: str) -> None:
    """The production image leaves the demo and the sandboxes out (Dockerfile)."""
    import importlib.util

    if importlib.util.find_spec("crmhub.dev") is None:
        typer.echo(f"error: {what} and its sandbox systems are not part of this installation "
                   "(the production image leaves them out); run it from a source checkout "
                   "with `make demo`", err=True)
        raise typer.Exit(2)


def _start_bottlecrm(say: Any, server: Any, on_failure: Any) -> tuple[Any, int]:
    """The demo's BottleCRM, its webhook pointed at the hub's ingress (on a port picked now);
    the connector's BOTTLECRM_* settings in the environment for the hub's flows."""
    from crmhub.embedded import free_port

    say("starting the BottleCRM sandbox (the CRM; the first run builds it, a few minutes)")
    try:
        server.start()
        port = free_port()
        _, secret = server.register_webhook(f"http://127.0.0.1:{port}/ingress/bottlecrm")
    except RuntimeError as exc:
        server.stop()
        on_failure()
        typer.echo(f"error: the BottleCRM sandbox did not start: {exc}", err=True)
        raise typer.Exit(1) from exc
    say(f"BottleCRM {server.url} (started in {server.start_seconds:.1f}s), webhooks to "
        f"http://127.0.0.1:{port}/ingress/bottlecrm")
    os.environ.update(BOTTLECRM_URL=server.url, BOTTLECRM_TOKEN=server.token,
                      BOTTLECRM_WEBHOOK_SECRET=secret, BOTTLECRM_DEFAULT_TAX_RATE="19")
    return server, port


@app.command()
def health() -> None:
    """Exit 0 when the hub on this machine answers /healthz: the image's HEALTHCHECK, over
    HTTPS when CRMHUB_HTTP_TLS_CERT_FILE is set."""
    import ssl
    import urllib.request

    settings = _settings()
    tls = settings.http_tls_cert_file is not None
    # A probe of our own process over loopback: the certificate names the public host, not
    # 127.0.0.1, so it is not verified here (clients outside do verify it).
    context = ssl._create_unverified_context() if tls else None
    url = f"{'https' if tls else 'http'}://127.0.0.1:{settings.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as answer:
            typer.echo(f"{url}: {answer.status}")
    except OSError as exc:
        typer.echo(f"{url}: {exc}", err=True)
        raise typer.Exit(1) from None


# -- status ------------------------------------------------------------------------------------
@app.command()
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Per-flow counts, parked and dead letters, and which target systems are down since when."""
    summary = _store().summary()
    if as_json:
        typer.echo(json.dumps(summary, default=str, indent=2))
        return
    typer.echo("flows:")
    for flow, counts in sorted(summary["flows"].items()):
        typer.echo(f"  {flow:28} " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if not summary["flows"]:
        typer.echo("  (nothing processed yet)")
    typer.echo(f"parked: {sum(summary['parked'].values())}  {summary['parked'] or ''}")
    waiting = summary["awaiting_approval"]
    typer.echo(f"awaiting approval: {len(waiting)}  {' '.join(waiting[:20])}"
               + (" ..." if len(waiting) > 20 else ""))
    typer.echo(f"dead letters: {summary['dead_letters'] or 0}")
    for target in summary["targets"]:
        since = target["down_since"]
        typer.echo(f"  {target['system']}: " + (f"UNAVAILABLE since {since.isoformat()} "
                                                f"({target['last_error']})" if since else "up"))


# -- topics / config / schemas -----------------------------------------------------------------
@topics_app.command("create")
def topics_create() -> None:
    """Create every topic the enabled flows need, with its partition count (and the DLQs)."""
    from crmhub.hub import Hub

    settings = _settings()
    if settings.embedded_broker:
        typer.echo("no CRMHUB_BOOTSTRAP_SERVERS configured: the embedded broker lives inside "
                   "`crmhub run`, which creates its topics itself", err=True)
        raise typer.Exit(2)
    created = asyncio.run(Hub(settings).create_topics())
    typer.echo(f"created {len(created)} topics: {', '.join(created) or '(all existed)'}")


@config_app.command("check")
def config_check() -> None:
    """Validate environment + the optional TOML file (CRMHUB_CONFIG): the hub's settings and
    every connector's (and the flows' rules); name every problem by its variable."""
    problems: list[str] = []
    config_file = os.environ.get(CONFIG_FILE_ENV)
    if config_file and not Path(config_file).is_file():
        problems.append(f"{CONFIG_FILE_ENV}: file {config_file} does not exist")
    known = {f"CRMHUB_{name.upper()}" for name in HubSettings.model_fields}
    known |= {CONFIG_FILE_ENV, "CRMHUB_TEST_PG", "CRMHUB_SANDBOX_DIR"}
    problems.extend(f"{name}: not a crmhub setting (misspelt?)"
                    for name in sorted(os.environ) if name.startswith("CRMHUB_")
                    and name not in known)
    catalogue = catalogue_settings()
    problems += _unknown_connector_variables(catalogue)
    settings = None
    try:
        problems += _unknown_tables(catalogue, read_config_file())
        settings = HubSettings()
    except ValidationError as exc:
        problems.extend(settings_problems(exc))
    except ValueError as exc:  # unreadable TOML
        problems.append(f"{CONFIG_FILE_ENV}: {exc}")
    loaded: list[BaseSettings] = []
    for _, cls in catalogue:
        try:
            loaded.append(cls())
        except ValidationError as exc:
            problems.extend(settings_problems(exc, cls))
        except ValueError:  # unreadable TOML: reported once above
            pass
    if problems:
        for problem in problems:
            typer.echo(f"problem: {problem}", err=True)
        raise typer.Exit(1)
    assert settings is not None
    from crmhub.transport import transport_warnings

    for warning in transport_warnings(settings):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo("configuration OK")
    for item in (settings, *loaded):
        for name in type(item).model_fields:
            value = getattr(item, name)
            shown = "**********" if isinstance(value, SecretStr) else value
            typer.echo(f"  {docgen.env_names(type(item), name)[0]} = {shown}")


def _unknown_connector_variables(
        catalogue: list[tuple[str, type[ConnectorSettings]]]) -> list[str]:
    """TRYTON_PASWORD and the like: a variable with a connector's prefix that no field reads
    (the connectors themselves ignore unknown variables)."""
    known = {env for _, cls in catalogue for name in cls.model_fields
             for env in docgen.env_names(cls, name)}
    prefixes = sorted(((f"{slug.upper()}_", slug) for slug, _ in catalogue),
                      key=lambda p: -len(p[0]))  # TRYTON_STOCK_ before TRYTON_
    problems = []
    for variable in sorted(os.environ):
        owner = next((slug for prefix, slug in prefixes if variable.startswith(prefix)), None)
        if owner is not None and variable not in known:
            problems.append(f"{variable}: not a setting of {owner} (misspelt?)")
    return problems


def _unknown_tables(catalogue: list[tuple[str, type[ConnectorSettings]]],
                    config: dict[str, Any]) -> list[str]:
    """Tables of the TOML file that no connector reads, and keys no field of theirs takes."""
    readers: dict[str, list[type[ConnectorSettings]]] = {}
    for _, cls in catalogue:
        for table in cls.tables():
            readers.setdefault(table, []).append(cls)
    problems = []
    for table, values in config.items():
        if not isinstance(values, dict):
            continue
        if table not in readers:
            problems.append(f"{CONFIG_FILE_ENV}: [{table}] is not read by anything (tables: "
                            f"{', '.join(sorted(readers))})")
            continue
        problems.extend(f"{CONFIG_FILE_ENV}: [{table}] {key}: not a setting of {table} "
                        "(misspelt?)" for key in values
                        if not any(key in cls.model_fields for cls in readers[table]))
    return problems


@schemas_app.command("export")
def schemas_export(directory: Path) -> None:
    """Write the JSON Schema of each canonical model and its event envelope."""
    from schemas.export import write_json_schemas

    for path in write_json_schemas(directory):
        typer.echo(str(path))


# -- dead letters --------------------------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(flow: Annotated[str | None, typer.Option()] = None,
             status: Annotated[str | None, typer.Option(help="dead, replay_requested, "
                                                         "replayed, discarded")] = None,
             error_class: Annotated[str | None, typer.Option()] = None,
             limit: Annotated[int, typer.Option()] = 100) -> None:
    """List dead letters, oldest first."""
    rows = _store().list_dead_letters(flow=flow, status=status, error_class=error_class,
                                      limit=limit)
    for row in rows:
        typer.echo(f"#{row.id:<5} {row.status:16} {row.flow:24} {row.topic}[{row.partition}]"
                   f"@{row.offset}  {row.error_message[:90]}")
    typer.echo(f"{len(rows)} dead letters")


@dlq_app.command("show")
def dlq_show(dead_letter_id: int) -> None:
    """Everything kept about one dead letter, including the original bytes and headers."""
    row = _store().get_dead_letter(dead_letter_id)
    if row is None:
        typer.echo(f"no dead letter #{dead_letter_id}", err=True)
        raise typer.Exit(1)
    info = row.model_dump(exclude={"key", "value", "headers"})
    info["key"] = describe_bytes(row.key)
    info["headers"] = {k: describe_bytes(v) for k, v in RawMessage.headers_from_json(row.headers)}
    info["value"] = describe_bytes(row.value)
    typer.echo(json.dumps(info, default=str, indent=2, ensure_ascii=False))


@dlq_app.command("replay")
def dlq_replay(ids: Annotated[list[int] | None, typer.Argument(help="dead letter ids")] = None,
               flow: Annotated[str | None, typer.Option()] = None,
               error_class: Annotated[str | None, typer.Option()] = None,
               everything: Annotated[bool, typer.Option("--all")] = False) -> None:
    """Queue dead letters for replay (by id, by filter, or --all); the running hub sends them."""
    try:
        count = _store().request_replay(ids=ids or (), flow=flow, error_class=error_class,
                                        everything=everything)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{count} dead letters queued for replay; the running hub republishes them "
               "to their original topic within a sweep interval")


@dlq_app.command("discard")
def dlq_discard(dead_letter_id: int,
                reason: Annotated[str, typer.Option(help="why it is dropped (kept)")]) -> None:
    """Mark a dead letter as handled without replaying it."""
    try:
        done = _store().discard(dead_letter_id, reason)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if not done:
        typer.echo(f"no dead letter #{dead_letter_id} to discard", err=True)
        raise typer.Exit(1)
    typer.echo(f"dead letter #{dead_letter_id} discarded: {reason}")


@parked_app.command("list")
def parked_list(flow: Annotated[str | None, typer.Option()] = None,
                limit: Annotated[int, typer.Option()] = 100) -> None:
    """Parked messages and what each waits for."""
    rows = _store().list_parked(flow=flow, limit=limit)
    for row in rows:
        typer.echo(f"#{row.id:<5} {row.state:9} {row.flow:24} {row.entity_id:16} waits for "
                   f"{row.waits_entity} {row.waits_id} in {row.waits_system}; expires "
                   f"{row.expires_at.isoformat(timespec='seconds')}")
    typer.echo(f"{len(rows)} parked")


# -- backfill ------------------------------------------------------------------------------------
@backfill_app.command("bottlecrm")
def backfill_bottlecrm(kind: Annotated[str, typer.Argument(help="accounts or deals")]) -> None:
    """Publish BottleCRM's accounts (customer.upserted) or won deals (order.won), page by
    page; a re-run publishes only what changed since. Needs CRMHUB_BOOTSTRAP_SERVERS and the
    BOTTLECRM_* connection settings."""
    from rich.progress import Progress

    from connectors.bottlecrm.client import BottleCrm
    from crmhub.backfill import KINDS, Backfill
    from crmhub.errors import HubError

    if kind not in KINDS:
        typer.echo(f"unknown kind {kind!r}: one of {', '.join(KINDS)}", err=True)
        raise typer.Exit(2)
    settings = _settings()
    if settings.embedded_broker:
        typer.echo("no CRMHUB_BOOTSTRAP_SERVERS configured: a backfill publishes to the "
                   "broker the running hubs read, so name it", err=True)
        raise typer.Exit(2)

    async def go() -> Any:
        async with BottleCrm.from_env() as crm:
            with Progress(transient=False) as bar:
                task = bar.add_task(f"bottlecrm {kind}", total=None)
                return await Backfill(settings, crm).run(
                    kind, lambda n, total: bar.update(task, advance=n, total=total))

    try:
        counts = asyncio.run(go())
    except HubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{counts.read} read, {counts.published} published, {counts.unchanged} "
               f"unchanged since the last run, {counts.skipped} not won, "
               f"{len(counts.refused)} refused")
    for reason in counts.refused:
        typer.echo(f"  refused: {reason}", err=True)


# -- docs ------------------------------------------------------------------------------------------
SETTINGS_PREFACE = """Every setting is an environment variable and a key of the TOML file named by
`CRMHUB_CONFIG`: the hub's at the top level, each connector's in its table (`[tryton]`, the
`key` column). Where values come from, in which order, and how `crmhub config check` reports
problems: [configuration.md](configuration.md). Booleans accept `true/false`, `1/0`, `yes/no`,
`on/off`. Secrets are masked here and in `crmhub config check`, and redacted from logs and
dead letters."""


def generated_docs() -> dict[str, str]:
    """The generated pages, by file name under docs/: settings.md and flows.md."""
    from connectors.catalogue import CONNECTORS
    from connectors.spec import STATUSES
    from flows import FEEDS, FLOWS, SETTINGS

    statuses = "; ".join(f"**{name}**: {meaning}" for name, meaning in STATUSES.items())
    catalogue = "\n".join(
        ["| connector | status | what it does |", "|---|---|---|"]
        + [f"| [{spec.slug}](#{spec.slug}) | {spec.status} | {spec.summary} |"
           for spec in CONNECTORS])
    groups = [docgen.SettingsGroup(
        "Hub", HubSettings, "`crmhub/settings.py` `HubSettings`: env prefix `CRMHUB_`, TOML "
        "at the top level. Unknown `CRMHUB_*` variables and top-level keys are refused.")]
    for index, spec in enumerate(CONNECTORS):
        groups.append(docgen.SettingsGroup(
            spec.slug, spec.settings, level=3,
            intro=f"{spec.summary} (**{spec.status}**). {_about(spec.settings)}",
            before="" if index else (
                "## Connectors\n\nListed in `connectors/catalogue.py`, each declared by the "
                "`SPEC` in its package. Unknown variables with a connector's prefix and "
                "unknown keys in its table are reported by `crmhub config check`. Status: "
                f"{statuses}.\n\n{catalogue}")))
    for index, cls in enumerate(SETTINGS):
        groups.append(docgen.SettingsGroup(
            cls.tables()[-1], cls, level=3, intro=_about(cls),
            before="" if index else (
                "## Flow rules\n\nSettings of the flows themselves (`flows.SETTINGS`), "
                "beyond their connectors'.")))
    return {"settings.md": docgen.render_settings(groups, preface=SETTINGS_PREFACE),
            "flows.md": docgen.render_flows(FLOWS, FEEDS)}


def _about(cls: type[ConnectorSettings]) -> str:
    """Where a settings class lives, which TOML tables it reads, and its own docstring."""
    doc = " ".join(str(cls.__dict__.get("__doc__") or "").split())
    tables = " over ".join(f"`[{table}]`" for table in reversed(cls.tables()))
    return (f"`{cls.__module__.replace('.', '/')}.py` `{cls.__name__}`, TOML {tables}."
            + (f" {doc}" if doc else ""))


@app.command("docs")
def docs(directory: Annotated[Path, typer.Argument(help="where the docs are")] = Path("docs"),
         check: Annotated[bool, typer.Option(
             "--check", help="change nothing; exit 1 if a page is stale")] = False) -> None:
    """Write the pages generated from the code: settings.md (the settings classes of the hub,
    every connector and the flows) and flows.md (the flow catalogue and its contracts)."""
    stale = []
    for name, text in generated_docs().items():
        path = directory / name
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not check:
            path.write_text(text, encoding="utf-8")
    verb = "stale" if check else "written"
    typer.echo(", ".join(f"{path} {verb}" for path in stale) or "docs up to date")
    if check and stale:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    sys.exit(app())
