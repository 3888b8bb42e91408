"""Production deployment files: docker-compose.yml, Dockerfile, .dockerignore, Prometheus config.

No Docker engine is needed: the files are parsed and checked against the code they deploy
(HubSettings, FileDropSettings, pyproject.toml), so a renamed setting or a wrong port fails here.
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
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

HUB_PREFIX = "CRMHUB_"
FILEDROP_PREFIX = "FILEDROP_"
# What the operator's shell or .env file would provide when `docker compose up` runs.
DUMMY_ENV = {"POSTGRES_PASSWORD": "dummy-pg-password"}
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


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CRMHUB_*/FILEDROP_* or config file from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith((HUB_PREFIX, FILEDROP_PREFIX)) or name == CONFIG_FILE_ENV:
            monkeypatch.delenv(name)
    return monkeypatch


def hub_values(hub_env: dict[str, str]) -> dict[str, str]:
    return {name: interpolate(str(value), DUMMY_ENV) for name, value in hub_env.items()}


def settings_from_kwargs(hub_env: dict[str, str]) -> HubSettings:
    values = hub_values(hub_env)
    kwargs: dict[str, Any] = {name[len(HUB_PREFIX):].lower(): value
                              for name, value in values.items() if name.startswith(HUB_PREFIX)}
    # Init kwargs and env vars spell lists differently (split string vs JSON); all flows = "".
    kwargs["flows"] = ""
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
        clean_env: pytest.MonkeyPatch, hub_env: dict[str, str]) -> None:
    prefix = "BOTTLECRM_"
    named = {name[len(prefix):].lower() for name in hub_env if name.startswith(prefix)}
    assert {"url", "token", "webhook_secret"} <= named
    assert named <= set(BottleCrmSettings.model_fields), "BOTTLECRM_* names that are no setting"
    for name in list(os.environ):
        if name.startswith(prefix):
            clean_env.delenv(name)
    for name, value in hub_values(hub_env).items():
        if name.startswith(prefix):
            clean_env.setenv(name, value)
    settings = BottleCrmSettings()
    assert settings.url == "http://bottlecrm:8000"
    assert settings.webhook_secret.get_secret_value() == ""  # only from the operator's .env


def test_hub_settings_validate_from_compose_values(
        clean_env: pytest.MonkeyPatch, services: dict[str, dict[str, Any]],
        hub_env: dict[str, str]) -> None:
    settings = settings_from_kwargs(hub_env)
    assert settings.session_timeout_ms >= 6000
    assert settings.heartbeat_interval_ms * 3 <= settings.session_timeout_ms
    assert settings.enable_idempotence is True
    assert not settings.embedded_broker
    assert settings.flows == []
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
    assert settings.flows == [], "CRMHUB_FLOWS must select all flows"
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.enable_idempotence is True
    assert settings.session_timeout_ms == 10000
    assert settings.http_port == 8080
    assert FileDropSettings().directory == Path("/data/filedrop")


def test_hub_settings_defaults_are_written_explicitly(
        clean_env: pytest.MonkeyPatch, hub_env: dict[str, str]) -> None:
    production = {"bootstrap_servers", "database_url", "enable_idempotence",
                  "session_timeout_ms", "heartbeat_interval_ms", "http_host"}
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


def test_hub_healthcheck_hits_healthz_on_the_http_port(
        services: dict[str, dict[str, Any]], hub_env: dict[str, str]) -> None:
    urls = http_urls(healthcheck_text(services["hub"]))
    assert urls, "the hub healthcheck must call the HTTP server"
    for url in urls:
        parts = urlsplit(url)
        assert parts.path == "/healthz"
        assert parts.hostname in ("127.0.0.1", "localhost")
        assert parts.port == int(hub_env["CRMHUB_HTTP_PORT"])


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
    assert dockerfile_args("FROM") == ["python:3.12-slim"]
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
    assert any("pip install --no-cache-dir ." in args for args in dockerfile_args("RUN"))
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file()


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = dockerfile_args("USER")
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0")
    instructions = [word for word, _ in dockerfile_instructions()]
    assert instructions.index("USER") < instructions.index("ENTRYPOINT")


def test_dockerfile_exposes_and_checks_the_hub_http_port(hub_env: dict[str, str]) -> None:
    port = int(hub_env["CRMHUB_HTTP_PORT"])
    assert [int(p.split("/")[0]) for p in dockerfile_args("EXPOSE")] == [port]
    assert HubSettings.model_fields["http_port"].default == port
    checks = dockerfile_args("HEALTHCHECK")
    assert len(checks) == 1 and "urllib" in checks[0]
    urls = http_urls(checks[0])
    assert urls
    for url in urls:
        parts = urlsplit(url)
        assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", port, "/healthz")
    env_lines = " ".join(dockerfile_args("ENV"))
    assert "CRMHUB_HTTP_HOST=0.0.0.0" in env_lines, "127.0.0.1 would be unreachable from outside"


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    patterns = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".venv", ".sandbox", "var", ".git", ".pytest_cache", ".env"} <= patterns
    assert not patterns & {"pyproject.toml", *PACKAGES}, "the build needs these"


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
def test_oa_env_names_match_the_oa_settings(hub_env: dict[str, str], prefix: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.caldav.settings import CaldavSettings
    from connectors.chatbots.settings import ChatbotSettings
    from connectors.matrix.settings import MatrixSettings
    from connectors.smtp.settings import SmtpSettings
    from flows.oa import ApprovalSettings, NotifySettings

    settings_class = {"APPROVAL_": ApprovalSettings, "MATRIX_": MatrixSettings,
                      "SMTP_": SmtpSettings, "NOTIFY_": NotifySettings,
                      "CHATBOTS_": ChatbotSettings, "CALDAV_": CaldavSettings}[prefix]
    named = {name for name in hub_env if name.startswith(prefix)}
    assert named, f"the hub's environment sets no {prefix}* variable"
    assert {n[len(prefix):].lower() for n in named} <= set(settings_class.model_fields)
    for name in list(os.environ):
        if name.startswith(prefix):
            monkeypatch.delenv(name)
    for name in named:
        monkeypatch.setenv(name, interpolate(str(hub_env[name]), DUMMY_ENV))
    settings_class()  # the compose values validate
