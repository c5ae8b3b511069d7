"""deploy/k8s: both overlays render (kubectl kustomize), the rendered objects validate
(kubernetes-validate for built-in kinds, prometheus-operator's own CRD schemas for
ServiceMonitor / PrometheusRule / PodMonitor), checkov passes with every skip reasoned, and the
properties that matter hold on what is rendered, not on the sources: probes, limits and
securityContext on every container, the CDC singleton, PDBs, the HPA, the CronJob, Workload
Identity, secrets only by reference, NetworkPolicies. The settings ConfigMap's env files are
what render_settings.py renders now, and a bad settings file fails naming its key."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlparse

import hcl2
import jsonschema
import pytest
import yaml

from shopstream.config import Settings
from tests.support import deploy_tools
from tests.support.deploy_tools import DEPLOY, deploy_tool, run_tool, system_tool

K8S = DEPLOY / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
OVERLAYS = ("dev", "prod")
ROLES = ("collector", "cdc", "loader", "quality", "transform")
#: Components of objects that belong to no single role.
SHARED_COMPONENTS = {"namespace", "network", "settings", "monitoring"}
PUSHGATEWAY = "http://prometheus-pushgateway.monitoring.svc:9091"
SECRET_KEYS = {"write-keys", "postgres-dsn", "email-salt", "genai-api-key"}
#: Settings that are secrets: never a literal value in a pod or the ConfigMap.
SECRET_VARIABLES = {
    "SHOPSTREAM_WRITE_KEYS",
    "SHOPSTREAM_POSTGRES_DSN",
    "SHOPSTREAM_TRANSFORM__EMAIL_SALT",
    "SHOPSTREAM_GENAI__API_KEY",
    "SHOPSTREAM_KAFKA__CLIENT_CONFIG",
}
LOOKS_SECRET = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|DSN|SALT|CREDENTIAL", re.I)
CRD_GROUP = "monitoring.coreos.com/"
PLACEHOLDER_CIDR = "192.0.2.10/32"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


# --- rendering ------------------------------------------------------------------------------


class Overlay:
    """One rendered overlay: its YAML text and objects, with lookups."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self.objects: list[dict[str, Any]] = [d for d in yaml.safe_load_all(text) if d]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    @property
    def settings_data(self) -> dict[str, str]:
        return dict(self.get("ConfigMap", "shopstream-settings")["data"])

    @property
    def project(self) -> str:
        sink = urlparse(self.settings_data["SHOPSTREAM_SINK_URL"])
        assert sink.scheme == "pubsub", f"{self.name}: production transport is Pub/Sub"
        return sink.netloc

    def workloads(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, pod spec) for every Deployment and CronJob."""
        for obj in self.objects:
            if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                yield obj, obj["spec"]["template"]["spec"]
            elif obj["kind"] == "CronJob":
                yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]

    def containers(self) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
        for obj, pod in self.workloads():
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                yield obj, pod, container


def kustomize(overlay: str) -> str:
    result = run_tool([system_tool("kubectl"), "kustomize", K8S / "overlays" / overlay])
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def rendered() -> dict[str, Overlay]:
    """Both overlays, rendered once for the module."""
    return {name: Overlay(name, kustomize(name)) for name in OVERLAYS}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered: dict[str, Overlay]) -> Overlay:
    return rendered[request.param]


@pytest.fixture(scope="module")
def checkov_report(
    tmp_path_factory: pytest.TempPathFactory, rendered: dict[str, Overlay]
) -> dict[str, Any]:
    """checkov's Kubernetes findings for both rendered overlays, from one run, and the skip
    annotations of the objects it read."""
    checkov = deploy_tool("checkov")
    folder = tmp_path_factory.mktemp("rendered")
    files: list[str | Path] = []
    annotations = []
    for name, overlay in rendered.items():
        path = folder / f"{name}.yaml"
        path.write_text(overlay.text)
        files += ["-f", path]
        for obj in overlay.objects:
            for key, value in (obj["metadata"].get("annotations") or {}).items():
                if "checkov.io/skip" in key:  # checkov reads any key holding it
                    annotations.append((f"{name} {obj['metadata']['name']}", key, value))
    result = run_tool(
        [
            checkov,
            *("--skip-download", "--quiet", "--compact", "-o", "json"),
            *("--framework", "kubernetes", *files),
        ],
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
    )
    assert result.stdout.strip(), f"checkov said nothing:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert all(one["summary"]["parsing_errors"] == 0 for one in reports), report
    assert sum(one["summary"]["passed"] for one in reports) > 0, report
    return {
        "failed": [f for one in reports for f in one["results"].get("failed_checks", [])],
        "skipped": sum(one["summary"]["skipped"] for one in reports),
        "annotations": annotations,
    }


# --- the tools ------------------------------------------------------------------------------


def test_builtin_objects_pass_kubernetes_validate(overlay: Overlay) -> None:
    """Every object of a built-in kind is valid for Kubernetes 1.31 (strict: no unknown field)."""
    builtin = [o for o in overlay.objects if not o["apiVersion"].startswith(CRD_GROUP)]
    result = run_tool(
        [deploy_tool("kubernetes-validate"), "--strict", "--quiet", "-k", "1.31", "-"],
        input=yaml.safe_dump_all(builtin),
    )
    assert result.returncode == 0, f"{overlay.name}:\n{result.stdout}\n{result.stderr}"
    assert not re.search(r"warn|skip", result.stdout + result.stderr, re.I), result.stdout


def _crd_validator(kind: str) -> jsonschema.Draft7Validator:
    path = SCHEMAS / f"{kind}.json"
    assert path.is_file(), f"no schema for {kind} in {SCHEMAS}: copy it from the CRD"
    return jsonschema.Draft7Validator(json.loads(path.read_text())["schema"])


def test_monitoring_objects_match_prometheus_operator_schemas(overlay: Overlay) -> None:
    """ServiceMonitor, PrometheusRule, PodMonitor objects against the openAPIV3Schema of
    prometheus-operator's CRDs (tests/deploy/schemas, copied with their provenance)."""
    for obj in overlay.objects:
        if obj["apiVersion"].startswith(CRD_GROUP):
            errors = [
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in _crd_validator(obj["kind"]).iter_errors(obj)
            ]
            assert not errors, f"{overlay.name} {obj['kind']} {obj['metadata']['name']}: {errors}"


def test_the_crd_schemas_refuse_a_broken_object() -> None:
    """The schemas check something: a wrong ServiceMonitor fails, a right one passes."""
    good = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics"}]},
    }
    validator = _crd_validator("ServiceMonitor")
    assert not list(validator.iter_errors(good))
    bad = {**good, "spec": {"selector": {}, "endpoints": [{"port": 9464}]}}
    assert list(validator.iter_errors(bad))
    rule = _crd_validator("PrometheusRule")
    no_expr = {"spec": {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}}
    assert list(rule.iter_errors(no_expr))


def test_checkov_passes_with_every_skip_reasoned(checkov_report: dict[str, Any]) -> None:
    failed = [
        f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in checkov_report["failed"]
    ]
    assert not failed, "\n".join(failed)
    for where, key, value in checkov_report["annotations"]:
        assert re.fullmatch(r"checkov\.io/skip\d+", key), f"{where}: {key}"
        check, _, reason = value.partition("=")
        assert re.fullmatch(r"CKV2?_K8S_\d+", check), f"{where}: {value}"
        assert len(reason.split()) >= 5, f"{where}: {value}: why?"
    # Every check checkov skipped was skipped by one of those annotations (and each of them
    # skipped a check that applies: a stale skip would be counted out).
    assert checkov_report["skipped"] == len(checkov_report["annotations"])


# --- what every object and pod must be ------------------------------------------------------


def test_every_object_is_labelled_and_in_the_namespace(overlay: Overlay) -> None:
    for obj in overlay.objects:
        labels = obj["metadata"].get("labels") or {}
        where = f"{overlay.name} {obj['kind']} {obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/name") == "shopstream", where
        assert labels.get("app.kubernetes.io/part-of") == "shopstream", where
        component = labels.get("app.kubernetes.io/component")
        assert component in {*ROLES, *SHARED_COMPONENTS}, f"{where}: component {component}"
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "shopstream", where
    for obj, _ in overlay.workloads():
        template = (
            obj["spec"]["jobTemplate"]["spec"]["template"]
            if obj["kind"] == "CronJob"
            else obj["spec"]["template"]
        )
        assert template["metadata"]["labels"]["app.kubernetes.io/component"] in ROLES


def _probe(container: dict[str, Any], kind: str) -> tuple[str, str | int]:
    probe = container.get(kind)
    assert probe and "httpGet" in probe, f"{container['name']}: no HTTP {kind}"
    return probe["httpGet"]["path"], probe["httpGet"]["port"]


def test_every_container_is_locked_down_and_bounded(overlay: Overlay) -> None:
    pod_sas = set()
    for obj, pod, container in overlay.containers():
        where = f"{overlay.name} {obj['metadata']['name']}/{container['name']}"
        security = container.get("securityContext") or {}
        pod_security = pod.get("securityContext") or {}
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, where
        assert security.get("runAsUser", pod_security.get("runAsUser", 0)) > 0, where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], where
        assert security.get("capabilities", {}).get("add") is None, where
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile"))
        assert seccomp == {"type": "RuntimeDefault"}, where
        for what in ("requests", "limits"):
            assert set(container.get("resources", {}).get(what, {})) >= {"cpu", "memory"}, where
        # A read-only root: HOME and TMPDIR are /tmp, an emptyDir (data_dir too, but the
        # CDC reader's, on a claim: test_cdc_state_survives_a_reschedule).
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], where
        assert pod.get("automountServiceAccountToken") is False, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), where
        if obj["kind"] == "Deployment":
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                _probe(container, kind)
        pod_sas.add(pod["serviceAccountName"])
    accounts = {sa["metadata"]["name"] for sa in overlay.of_kind("ServiceAccount")}
    assert pod_sas <= accounts, f"pods name missing ServiceAccounts: {pod_sas - accounts}"


def test_service_accounts_use_workload_identity(overlay: Overlay) -> None:
    accounts = {sa["metadata"]["name"]: sa for sa in overlay.of_kind("ServiceAccount")}
    assert set(accounts) == {f"shopstream-{role}" for role in ROLES}
    for name, account in accounts.items():
        annotation = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        assert annotation == f"{name}@{overlay.project}.iam.gserviceaccount.com", annotation
        assert account.get("automountServiceAccountToken") is False, name
    assert "PROJECT_ID" not in overlay.text
    for _, _, container in overlay.containers():
        image = container["image"]
        assert image.startswith(
            f"europe-west1-docker.pkg.dev/{overlay.project}/shopstream/shopstream:"
        ) or re.match(r"[a-z0-9-]+-docker\.pkg\.dev/.+/shopstream/shopstream[:@]", image), image


# --- the roles ------------------------------------------------------------------------------


def _container(overlay: Overlay, kind: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    obj = overlay.get(kind, name)
    pod = (
        obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        if kind == "CronJob"
        else obj["spec"]["template"]["spec"]
    )
    assert len(pod["containers"]) == 1
    return pod, pod["containers"][0]


def _settings(overlay: Overlay) -> Settings:
    """The settings a pod gets from the ConfigMap, read as shopstream reads them."""
    with mock.patch.dict(os.environ, overlay.settings_data, clear=True):
        return Settings()


def test_collector(overlay: Overlay) -> None:
    pod, container = _container(overlay, "Deployment", "shopstream-collector")
    assert container["args"] == ["collector"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9464}
    settings = _settings(overlay)
    assert (settings.collector.port, settings.collector.metrics_port) == (8080, 9464)
    assert settings.collector.host == "0.0.0.0"
    assert _probe(container, "readinessProbe") == ("/readyz", "http")
    assert _probe(container, "livenessProbe") == ("/healthz", "http")
    # Drain: endpoints removed (preStop sleep) before SIGTERM, then the sink's flush.
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) >= 5
    flush = settings.pubsub.publish_timeout_seconds
    assert pod["terminationGracePeriodSeconds"] >= int(sleep[1]) + flush
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys >= {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert pod["affinity"]["podAntiAffinity"]
    assert not pod.get("tolerations"), "the collector stays off the Spot pool"

    hpa = overlay.get("HorizontalPodAutoscaler", "shopstream-collector")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "shopstream-collector"
    metrics = {
        m["resource"]["name"] if m["type"] == "Resource" else m["pods"]["metric"]["name"]
        for m in hpa["spec"]["metrics"]
    }
    assert metrics == {"cpu", "shopstream_collector_requests_per_second"}

    service = overlay.get("Service", "shopstream-collector")
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {
        ("http", 8080),
        ("metrics", 9464),
    }
    for public in overlay.of_kind("Service"):
        if public["spec"].get("type") in ("LoadBalancer", "NodePort"):
            targets = {p["targetPort"] for p in public["spec"]["ports"]}
            assert targets <= {"http", 8080}, f"{public['metadata']['name']} exposes {targets}"
    for ingress in overlay.of_kind("Ingress"):
        assert "/metrics" not in json.dumps(ingress) and "9464" not in json.dumps(ingress)


def test_cdc_is_one_reader(overlay: Overlay) -> None:
    deployment = overlay.get("Deployment", "shopstream-cdc")
    pod, container = _container(overlay, "Deployment", "shopstream-cdc")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["terminationGracePeriodSeconds"] == 60
    assert container["args"] == ["cdc"]
    assert _probe(container, "livenessProbe") == ("/healthz", "metrics")
    assert _settings(overlay).cdc.metrics_port == 9464
    assert not pod.get("tolerations"), "the CDC reader stays off the Spot pool"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert {"key": "cloud.google.com/gke-spot", "operator": "NotIn", "values": ["true"]} in terms[
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    # A singleton's PDB forbids voluntary evictions: an evicted reader's replacement would
    # start while it still flushes (two readers); it is moved by a Recreate rollout instead.
    pdb = overlay.get("PodDisruptionBudget", "shopstream-cdc")
    assert pdb["spec"] == {
        "maxUnavailable": 0,
        "selector": deployment["spec"]["selector"],
    }


def _image_env() -> dict[str, str]:
    """The runtime stage's ENV of the image (``KEY=value`` pairs, no spaces in values)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    runtime = text[text.rindex("\nFROM ") :]
    return dict(
        pair.split("=", 1)
        for line in runtime.splitlines()
        if line.startswith("ENV ")
        for pair in line.split()[1:]
    )


def _effective_env(overlay: Overlay, container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: the image's ENV, then envFrom
    (the settings ConfigMap), then env (literal values; references read as None)."""
    env = dict(_image_env())
    for source in container.get("envFrom", []):
        if source.get("configMapRef", {}).get("name") == "shopstream-settings":
            env.update(overlay.settings_data)
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value")
    return env


def _volume_at(pod: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume holding ``path`` in the container: the deepest mount above it."""
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mounts, f"{path} is on the read-only root filesystem"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    assert not mount.get("readOnly"), f"{path} is mounted read-only"
    return next(v for v in pod["volumes"] if v["name"] == mount["name"])


def test_cdc_state_survives_a_reschedule(overlay: Overlay) -> None:
    """The reader's state (``<data_dir>/cdc-<slot>.json``: did the snapshot finish;
    ``cdc-<slot>-schemas.json``: the schema versions recorded) outlives its pod: a pod
    rescheduled mid-snapshot that found the slot but no state would skip the snapshot
    (snapshot_mode initial) and leave raw half-filled, silently. So data_dir is on a
    PersistentVolumeClaim, never an emptyDir."""
    pod, container = _container(overlay, "Deployment", "shopstream-cdc")
    data_dir = _effective_env(overlay, container)["SHOPSTREAM_DATA_DIR"]
    assert data_dir and data_dir.startswith("/"), data_dir
    volume = _volume_at(pod, container, data_dir)
    assert "emptyDir" not in volume, f"the CDC's data_dir {data_dir} is an emptyDir"
    claim_name = volume.get("persistentVolumeClaim", {}).get("claimName")
    assert claim_name, f"the CDC's data_dir {data_dir} is not on a PersistentVolumeClaim"
    claim = overlay.get("PersistentVolumeClaim", claim_name)
    # One reader (Recreate: the old pod lets go of the disk before the new one mounts it).
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claim["spec"], "the cluster's default class"
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert claim["metadata"]["labels"]["app.kubernetes.io/component"] == "cdc"
    # Nothing else of the CDC reader or the other roles needs to survive a restart
    # (runtime.json is rewritten on start), so only the CDC reader has a claim.
    assert [c["metadata"]["name"] for c in overlay.of_kind("PersistentVolumeClaim")] == [claim_name]


def test_loader_reads_what_the_collectors_publish(overlay: Overlay) -> None:
    pod, container = _container(overlay, "Deployment", "shopstream-loader")
    args = container["args"]
    assert args[:2] == ["load", "--from"]
    variable = re.fullmatch(r"\$\((\w+)\)", args[2])
    assert variable, args
    assert overlay.settings_data[variable.group(1)] == f"pubsub://{overlay.project}"
    assert _probe(container, "livenessProbe") == ("/healthz", "metrics")
    assert _settings(overlay).loader.metrics_port == 9464
    toleration = {k: v for k, v in pod["tolerations"][0].items() if k != "effect"}
    assert toleration == {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true"}


def test_every_deployment_has_a_disruption_budget(overlay: Overlay) -> None:
    budgets = overlay.of_kind("PodDisruptionBudget")
    for budget in budgets:
        spec = budget["spec"]
        assert spec.get("minAvailable") not in (0, "0", "0%"), budget["metadata"]["name"]
        if spec.get("maxUnavailable") in (0, "0", "0%"):
            assert budget["metadata"]["name"] == "shopstream-cdc", "only the CDC singleton"
    for deployment in overlay.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, deployment["metadata"]["name"]
        min_available = covering[0]["spec"].get("minAvailable")
        if isinstance(min_available, int):
            replicas = deployment["spec"].get("replicas", 1)
            if deployment["metadata"]["name"] == "shopstream-collector":
                replicas = overlay.get("HorizontalPodAutoscaler", "shopstream-collector")["spec"][
                    "minReplicas"
                ]
            assert min_available < replicas, "a budget the Deployment's own pods cannot meet"


def test_quality_cronjob(overlay: Overlay) -> None:
    cronjob = overlay.get("CronJob", "shopstream-quality")
    pod, container = _container(overlay, "CronJob", "shopstream-quality")
    assert cronjob["spec"]["schedule"] == "*/30 * * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    # dev runs the checks here; prod's Airflow DAG runs them (never both).
    assert cronjob["spec"]["suspend"] is (overlay.name == "prod")
    assert container["args"] == ["quality", "run"]
    env = {**overlay.settings_data, **{e["name"]: e.get("value") for e in container["env"]}}
    assert env["SHOPSTREAM_OBSERVABILITY__PUSHGATEWAY_URL"] == PUSHGATEWAY
    # The replication check reads the CDC slot on the shop's PostgreSQL; without a DSN it
    # returns no result at all (src/shopstream/quality/checks/replication.py). Optional: a
    # shop without CDC has no postgres-dsn key, and the other checks run.
    dsn = {e["name"]: e for e in container["env"]}["SHOPSTREAM_POSTGRES_DSN"]
    assert dsn["valueFrom"]["secretKeyRef"] == {
        "name": "shopstream-secrets",
        "key": "postgres-dsn",
        "optional": True,
    }
    assert {t["key"] for t in pod["tolerations"]} == {"cloud.google.com/gke-spot"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "shopstream.io/pool", "operator": "In", "values": ["pipeline"]}
    ]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] < 30 * 60, "a run ends before the next is due"


# --- secrets, settings, network -------------------------------------------------------------


def test_secrets_are_referenced_never_inlined(overlay: Overlay) -> None:
    assert not overlay.of_kind("Secret"), "the Secret is created by the operator, not rendered"
    data = overlay.settings_data
    assert not SECRET_VARIABLES & set(data), "a secret in the settings ConfigMap"
    for name, value in data.items():
        assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"credentials in {name}"
    references = 0
    for obj, _, container in overlay.containers():
        for variable in container.get("env", []):
            where = f"{obj['metadata']['name']}: {variable['name']}"
            if "value" in variable:
                assert not LOOKS_SECRET.search(variable["name"]), f"{where} is inlined"
                assert variable["name"] not in SECRET_VARIABLES, where
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                references += 1
                assert ref["name"] == "shopstream-secrets", where
                assert ref["key"] in SECRET_KEYS, where
        for source in container.get("envFrom", []):
            assert "secretRef" not in source or source["secretRef"]["name"] == "shopstream-secrets"
    assert references >= 2


def test_the_settings_configmap_is_valid_settings(overlay: Overlay) -> None:
    """What pods read from the ConfigMap is the base's settings.yaml merged with the
    overlay's, as render_settings.py validated them."""
    render = _render_settings_module()
    merged = render.merge(
        render.load_yaml(K8S / "base" / "settings.yaml"),
        render.load_yaml(K8S / "overlays" / overlay.name / "settings.yaml"),
    )
    assert _settings(overlay).model_dump() == Settings.model_validate(merged).model_dump()
    assert _settings(overlay).pubsub.create is False, "Terraform creates topics in production"


def test_network_policies(overlay: Overlay) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in overlay.of_kind("NetworkPolicy")}
    deny = [
        s
        for s in policies.values()
        if s["podSelector"] == {}
        and set(s["policyTypes"]) == {"Ingress", "Egress"}
        and not s.get("ingress")
        and not s.get("egress")
    ]
    assert deny, "no default-deny policy"

    def selects(spec: dict[str, Any], component: str) -> bool:
        selector = spec["podSelector"]
        labels = {"app.kubernetes.io/name": "shopstream", "app.kubernetes.io/component": component}
        if selector.get("matchLabels", {}).items() - labels.items():
            return False
        for expression in selector.get("matchExpressions", []):
            assert expression["operator"] == "In"
            if labels.get(expression["key"]) not in expression["values"]:
                return False
        return True

    def ingress_ports(component: str) -> dict[int, list[Any]]:
        found: dict[int, list[Any]] = {}
        for spec in policies.values():
            if selects(spec, component):
                for rule in spec.get("ingress", []):
                    for port in rule.get("ports", []):
                        found.setdefault(port["port"], []).append(rule.get("from"))
        return found

    def egress_ports(component: str) -> set[int]:
        return {
            port["port"]
            for spec in policies.values()
            if selects(spec, component)
            for rule in spec.get("egress", [])
            for port in rule["ports"]  # every egress rule names its ports
        }

    monitoring = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    collector = ingress_ports("collector")
    assert collector[8080] == [None], "the intake takes events from anywhere"
    assert collector[9464] == [monitoring], "metrics only from namespace monitoring"
    for role in ("cdc", "loader"):
        assert ingress_ports(role) == {9464: [monitoring]}, role
    for role in ("quality", "transform"):
        assert ingress_ports(role) == {}, f"nothing calls {role}"
    for role in ROLES:
        assert {53, 443} <= egress_ports(role), role
    assert 5432 in egress_ports("cdc")
    assert 5432 in egress_ports("quality"), "the replication check reads the CDC slot"
    assert 5432 not in egress_ports("loader") | egress_ports("collector")
    # Both reach the one shop database through one policy: the address an overlay patches once.
    to_postgres = [
        name
        for name, spec in policies.items()
        if any(p["port"] == 5432 for rule in spec.get("egress", []) for p in rule["ports"])
    ]
    assert to_postgres == ["cdc-postgres"], to_postgres
    for role in ("quality", "transform"):
        assert 9091 in egress_ports(role), f"{role} pushes to the Pushgateway"
    cidrs = [
        peer["ipBlock"]["cidr"]
        for rule in policies["cdc-postgres"]["egress"]
        for peer in rule["to"]
    ]
    assert PLACEHOLDER_CIDR not in cidrs, "the overlay sets the shop database's address"


def _terraform_ranges() -> dict[str, ipaddress.IPv4Network]:
    """Every CIDR default of deploy/terraform's variables (environments and modules: nodes,
    pods, services, control plane), by where it is."""
    ranges = {}
    for path in sorted((DEPLOY / "terraform").rglob("*.tf")):
        parsed = hcl2.loads(
            path.read_text(),
            serialization_options=hcl2.SerializationOptions(strip_string_quotes=True),
        )
        for block in parsed.get("variable", []):
            for name, body in block.items():
                default = body.get("default")
                if isinstance(default, str) and re.fullmatch(r"[\d.]+/\d+", default):
                    where = f"{path.relative_to(DEPLOY)}: {name}"
                    ranges[where] = ipaddress.IPv4Network(default)
    return ranges


def test_the_shop_database_address_is_outside_terraforms_ranges(
    rendered: dict[str, Overlay],
) -> None:
    """The overlays' PostgreSQL address is not one of the cluster's own: inside the pods'
    or services' range the egress rule would let the CDC reader (and the quality run) reach
    pods instead of the database, and the database could never be there."""
    ranges = _terraform_ranges()
    names = {where.rsplit(": ", 1)[1] for where in ranges}
    assert {"nodes_cidr", "pods_cidr", "services_cidr", "master_cidr"} <= names, names
    for overlay in rendered.values():
        policy = overlay.get("NetworkPolicy", "cdc-postgres")
        for rule in policy["spec"]["egress"]:
            for peer in rule["to"]:
                address = ipaddress.IPv4Network(peer["ipBlock"]["cidr"])
                overlapping = [w for w, r in ranges.items() if r.overlaps(address)]
                assert not overlapping, f"{overlay.name}: {address} lies in {overlapping}"


# --- the deploy tools: skip, or fail when make test requires them ---------------------------


@pytest.mark.parametrize(
    ("required", "outcome"),
    [(None, pytest.skip.Exception), ("0", pytest.skip.Exception), ("1", pytest.fail.Exception)],
)
def test_a_missing_tool_skips_unless_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, required: str | None, outcome: type
) -> None:
    """Without the tools a check skips, saying how to get them; under make test
    (SHOPSTREAM_TEST_REQUIRE_DEPLOY_TOOLS=1) it fails with the same words."""
    if required is None:
        monkeypatch.delenv(deploy_tools.REQUIRE_TOOLS, raising=False)
    else:
        monkeypatch.setenv(deploy_tools.REQUIRE_TOOLS, required)
    monkeypatch.setattr(deploy_tools, "DEPLOY_BIN", tmp_path / "nothing")
    monkeypatch.setattr(deploy_tools, "AIRFLOW_BIN", tmp_path / "nothing")
    monkeypatch.setenv("PATH", str(tmp_path))
    for lookup, message in [
        (lambda: deploy_tools.deploy_tool("checkov"), "run `make deploy-tools`"),
        (lambda: deploy_tools.airflow_tool(), "run `make deploy-tools`"),
        (lambda: deploy_tools.system_tool("kubectl"), "run `make system-tools`"),
    ]:
        # Both caught: a skip escaping pytest.raises(Failed) would skip this test, not fail it.
        with pytest.raises((pytest.skip.Exception, pytest.fail.Exception)) as raised:
            lookup()
        assert raised.type is outcome, f"{raised.typename}: {raised.value}"
        assert message in str(raised.value), raised.value


# --- render_settings.py ---------------------------------------------------------------------


def _render_settings_module() -> Any:
    if "render_settings" in sys.modules:
        return sys.modules["render_settings"]
    spec = importlib.util.spec_from_file_location("render_settings", K8S / "render_settings.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_settings"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_settings_env_files_are_freshly_rendered() -> None:
    result = run_tool([sys.executable, K8S / "render_settings.py", "--check"])
    assert result.returncode == 0, result.stderr


@pytest.fixture
def settings_copy(tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(K8S / "base", tmp_path / "base", ignore=shutil.ignore_patterns("monitoring"))
    shutil.copytree(K8S / "overlays", tmp_path / "overlays")
    return tmp_path / "base", tmp_path / "overlays"


@pytest.mark.parametrize(
    ("where", "text", "message"),
    [
        (
            "overlays/prod",
            "collector:\n  metrics_prot: 9464\n",
            "unknown setting 'collector.metrics_prot'",
        ),
        ("base", "sink_urll: pubsub://x\n", "unknown setting 'sink_urll'"),
        ("overlays/dev", "collector:\n  port: 70000\n", "collector.port"),
        ("overlays/dev", "postgres_dsn: postgresql://u:p@db/shop\n", "'postgres_dsn' is a secret"),
        (
            "overlays/dev",
            "transform:\n  email_salt: abcdefghijklmnopq\n",
            "'transform.email_salt' is a secret",
        ),
        ("base", "sink_url: nosuch://x\n", "sink_url"),
    ],
)
def test_bad_settings_fail_naming_the_key(
    settings_copy: tuple[Path, Path], where: str, text: str, message: str
) -> None:
    base, overlays = settings_copy
    path = (base.parent / where) / "settings.yaml"
    path.write_text(path.read_text() + text)
    render = _render_settings_module()
    with pytest.raises(render.SettingsError, match=re.escape(message)) as raised:
        render.rendered_files(base, overlays)
    assert str(path) in str(raised.value)
    assert "u:p@" not in str(raised.value) and "abcdefghijklmnopq" not in str(raised.value)
