"""The Kubernetes manifests (deploy/kubernetes), checked without a cluster.

Schemas: the core kinds against the Kubernetes JSON schemas of `kubernetes-validate` (strict:
unknown fields are errors); the CRDs against models generated from their published CRDs,
`cloudcoil-models-prometheus-operator` (ServiceMonitor; 0.80.1.0 on Python < 3.14) and
`cloudcoil-models-keda` (ScaledObject, TriggerAuthentication; 2.16.1.0), where a field the
model does not know counts as an error too. Then the manifests against the code they deploy:
every environment variable against the settings classes, every secret setting in a Secret,
probes, ports and user against the image, resources against the measured figures.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from crmhub.settings import TLS_FILES, HubSettings
from tests.pki import TestCa
from tests.test_deploy import dockerfile_args

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33"  # the oldest release still supported upstream when written


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def applied() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in documents(K8S / name)]


def one(kind: str, name: str | None = None,
        docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    found = [d for d in (docs if docs is not None else applied()) if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def hub_container() -> dict[str, Any]:
    containers = one("Deployment", "crmhub")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "hub")


def config_data() -> dict[str, str]:
    return dict(one("ConfigMap", "crmhub-config")["data"])


def secret_data(name: str, docs: list[dict[str, Any]] | None = None) -> dict[str, str]:
    return dict(one("Secret", name, docs).get("stringData") or {})


def connector_settings() -> dict[str, type[BaseSettings]]:
    """Env prefix -> settings class of every system the hub can connect."""
    from connectors.bottlecrm.settings import BottleCrmSettings
    from connectors.caldav.settings import CaldavSettings
    from connectors.chatbots.settings import ChatbotSettings
    from connectors.matrix.settings import MatrixSettings
    from connectors.smtp.settings import SmtpSettings
    from connectors.tryton.settings import TrytonSettings
    from flows.oa import ApprovalSettings, NotifySettings

    return {"TRYTON_": TrytonSettings, "BOTTLECRM_": BottleCrmSettings,
            "APPROVAL_": ApprovalSettings, "MATRIX_": MatrixSettings, "SMTP_": SmtpSettings,
            "NOTIFY_": NotifySettings, "CHATBOTS_": ChatbotSettings, "CALDAV_": CaldavSettings}


def secret_fields(settings: type[BaseSettings]) -> set[str]:
    return {name for name, field in settings.model_fields.items()
            if field.annotation is SecretStr}


# -- schemas ---------------------------------------------------------------------------------
CORE_FILES = ["configmap.yaml", "secret.yaml", "filedrop-pvc.yaml", "deployment.yaml",
              "service.yaml", "poddisruptionbudget.yaml", "systems.example.yaml"]


@pytest.mark.parametrize("name", CORE_FILES)
def test_core_manifests_follow_the_kubernetes_schemas(name: str) -> None:
    import kubernetes_validate

    for doc in documents(K8S / name):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schemas_are_really_applied() -> None:
    import kubernetes_validate

    deployment = json.loads(json.dumps(one("Deployment", "crmhub")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def crd_model(kind: str) -> Any:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    return {"ScaledObject": ScaledObject, "TriggerAuthentication": TriggerAuthentication,
            "ServiceMonitor": ServiceMonitor}[kind]


def check_crd(doc: dict[str, Any]) -> None:
    """Valid against the model, and nothing in it that the model does not know."""
    model = crd_model(doc["kind"]).model_validate(doc)
    assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc, \
        f"{doc['kind']}: fields the CRD does not define"


@pytest.mark.parametrize("name", ["servicemonitor.yaml", "scaledobject.yaml"])
def test_custom_resources_follow_their_published_crds(name: str) -> None:
    for doc in documents(K8S / name):
        check_crd(doc)


def test_the_crd_models_refuse_what_the_crds_refuse() -> None:
    scaled = json.loads(json.dumps(one("ScaledObject", "crmhub")))
    scaled["spec"]["minReplicaCount"] = "two"
    with pytest.raises(ValueError):
        check_crd(scaled)
    scaled = json.loads(json.dumps(one("ScaledObject", "crmhub")))
    scaled["spec"]["maxReplicas"] = 4  # HPA's spelling, not KEDA's
    with pytest.raises(AssertionError, match="fields the CRD does not define"):
        check_crd(scaled)


def test_kustomization_applies_every_manifest_but_the_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - {"systems.example.yaml"}


# -- the hub's settings ----------------------------------------------------------------------
def test_every_hub_setting_is_set_and_every_secret_is_in_the_secret() -> None:
    config, secrets = config_data(), secret_data("crmhub-secrets")
    secret_names = {f"CRMHUB_{name.upper()}" for name in secret_fields(HubSettings)}
    every = {f"CRMHUB_{name.upper()}" for name in HubSettings.model_fields}
    assert set(secrets) == secret_names, "exactly the SecretStr settings go in the Secret"
    assert not set(config) & secret_names, "no secret setting in the ConfigMap"
    hub = {name for name in config if name.startswith("CRMHUB_")}
    assert hub | set(secrets) == every, "every HubSettings field, nothing else"
    assert set(config) - hub == {"FILEDROP_DIRECTORY"}
    assert all(isinstance(value, str) for value in config.values())


def test_the_hub_settings_validate_from_the_manifests(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    values = {**config_data(), **secret_data("crmhub-secrets"),
              "CRMHUB_DATABASE_URL": "postgresql+psycopg://crmhub:x@postgres:5432/crmhub"}
    for name in list(os.environ):
        if name.startswith("CRMHUB_"):
            monkeypatch.delenv(name)
    for name, value in values.items():
        if name.startswith("CRMHUB_"):
            # The mounted files exist in the pod, not here: a test CA stands in for them.
            is_file = name[len("CRMHUB_"):].lower() in TLS_FILES and value
            monkeypatch.setenv(name, str(ca.ca_file) if is_file else value)
    settings = HubSettings(_env_file=None)
    assert settings.kafka_tls and settings.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.session_timeout_ms >= 6000 and settings.enable_idempotence
    mounts = {m["mountPath"] for m in hub_container()["volumeMounts"]}
    assert str(Path(config_data()["CRMHUB_KAFKA_TLS_CA_FILE"]).parent) in mounts
    assert config_data()["FILEDROP_DIRECTORY"] in mounts


def test_the_systems_example_covers_every_system_setting_and_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    docs = documents(K8S / "systems.example.yaml")
    config = dict(one("ConfigMap", "crmhub-systems", docs)["data"])
    secrets = secret_data("crmhub-systems", docs)
    classes = connector_settings()
    wanted_secrets = {prefix + name.upper() for prefix, cls in classes.items()
                      for name in secret_fields(cls)}
    assert set(secrets) == wanted_secrets
    assert not set(config) & wanted_secrets
    assert config.pop("CRMHUB_FLOWS") == "", "with the systems, every flow and feed runs"
    for name in config:
        prefix = next(p for p in classes if name.startswith(p))
        assert name[len(prefix):].lower() in classes[prefix].model_fields, name
    for name in list(os.environ):
        if name.startswith(tuple(classes)):
            monkeypatch.delenv(name)
    for name, value in {**config, **secrets}.items():
        monkeypatch.setenv(name, value or "dummy")
    for cls in classes.values():
        cls()  # validates, the TLS policy for remote hosts included


def test_the_deployment_reads_the_config_and_the_secrets() -> None:
    sources = hub_container()["envFrom"]
    required = [(next(iter(s.keys() - {"optional"})), s[next(iter(s.keys() - {"optional"}))])
                for s in sources if not next(iter(s.values())).get("optional")]
    assert [(kind, ref["name"]) for kind, ref in required] == [
        ("configMapRef", "crmhub-config"), ("secretRef", "crmhub-secrets")]
    optional = [next(iter(s.values()))["name"] for s in sources
                if next(iter(s.values())).get("optional")]
    assert optional == ["crmhub-systems", "crmhub-systems"], "after the hub's own config"
    assert "env" not in hub_container(), "every variable comes from the ConfigMap or a Secret"


# -- the Deployment against the image and the measured figures -------------------------------
def test_probes_port_and_user_match_the_image() -> None:
    container = hub_container()
    port = int(config_data()["CRMHUB_HTTP_PORT"])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    scheme = "HTTPS" if config_data()["CRMHUB_HTTP_TLS_CERT_FILE"] else "HTTP"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
        assert container[probe]["httpGet"]["scheme"] == scheme
    uid, gid = dockerfile_args("USER")[-1].split(":")
    pod = one("Deployment", "crmhub")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid), int(gid))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["args"] == json.loads(dockerfile_args("CMD")[-1])


def test_resources_are_sized_from_the_measured_peak_memory() -> None:
    text = (ROOT / "docs" / "performance.md").read_text()
    measured = re.search(r'"rss_mb": ([0-9.]+)', text)
    assert measured, "docs/performance.md lost the BENCH line with rss_mb"
    rss = float(measured.group(1))
    resources = hub_container()["resources"]

    def mib(value: str) -> float:
        number, unit = re.fullmatch(r"([0-9.]+)(Mi|Gi)", value).groups()  # type: ignore[union-attr]
        return float(number) * (1024 if unit == "Gi" else 1) * 1.048576  # MiB -> MB

    assert mib(resources["requests"]["memory"]) >= 1.3 * rss, "request: peak RSS + headroom"
    assert mib(resources["limits"]["memory"]) >= 2.5 * rss, "limit: room for bursts"
    assert resources["requests"]["cpu"] and resources["limits"]["cpu"]


def test_replicas_disruption_budget_and_autoscaling_agree() -> None:
    deployment = one("Deployment", "crmhub")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = one("PodDisruptionBudget", "crmhub")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 2 and 1 <= pdb["spec"]["minAvailable"] < replicas
    scaled = one("ScaledObject", "crmhub")["spec"]
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["minReplicaCount"] == replicas
    assert scaled["maxReplicaCount"] <= int(config_data()["CRMHUB_TOPIC_PARTITIONS"]), \
        "past the partition count a replica has nothing to consume"


def test_autoscaling_watches_the_lag_of_groups_the_hub_runs() -> None:
    from flows import FLOWS

    config = config_data()
    running = HubSettings.model_validate({"flows": config["CRMHUB_FLOWS"]}).flows
    groups = {(flow.group, flow.topic) for flow in FLOWS if flow.name in running}
    triggers = one("ScaledObject", "crmhub")["spec"]["triggers"]
    assert {(t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in triggers} == groups
    auth = one("TriggerAuthentication", "crmhub-kafka")
    for trigger in triggers:
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["bootstrapServers"] == config["CRMHUB_BOOTSTRAP_SERVERS"]
        assert int(trigger["metadata"]["lagThreshold"]) == int(config["CRMHUB_BATCH_MAX_RECORDS"])
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    keda = secret_data("crmhub-keda-kafka")
    keda_names = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256",
                  "SCRAM-SHA-512": "scram_sha512"}
    assert keda["sasl"] == keda_names[config["CRMHUB_SASL_MECHANISM"]]
    assert keda["username"] == config["CRMHUB_SASL_USERNAME"]
    refs = {(r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert ("crmhub-secrets", "CRMHUB_SASL_PASSWORD") in refs


def test_metrics_are_scraped_from_the_hub_service() -> None:
    service = one("Service", "crmhub")
    monitor = one("ServiceMonitor", "crmhub")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    labels = one("Deployment", "crmhub")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
