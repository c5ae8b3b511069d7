"""The alerts and their Kubernetes wrapping, checked with the real tools: promtool checks the
rule file and runs its unit tests (every alert fires in one case and stays quiet in another),
build.py --check proves the rendered PrometheusRule, ServiceMonitors, dashboards and adapter
values match their sources, the custom resources validate against the operator's CRD schemas
(when the k8s work supplies them), and every alert is documented in the runbooks."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy_tools import DEPLOY, ROOT, deploy_tool, run_tool, system_tool
from tests.support.promql import load_monitoring_module

MONITORING = DEPLOY / "monitoring"
RULES = MONITORING / "rules" / "shopstream.rules.yml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
RUNBOOKS = MONITORING / "runbooks.md"
RENDERED = DEPLOY / "k8s" / "base" / "monitoring"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
SEVERITIES = {"critical", "warning"}


build = load_monitoring_module("build")


def _alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


ALERTS = _alerts()


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_promtool_checks_the_rule_file() -> None:
    promtool = system_tool("promtool")
    done = run_tool([promtool, "check", "rules", RULES])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    promtool = system_tool("promtool")
    assert RULE_TESTS
    done = run_tool([promtool, "test", "rules", *RULE_TESTS], cwd=MONITORING / "tests")
    assert done.returncode == 0, done.stdout + done.stderr


def _cases() -> list[tuple[str, list[dict[str, Any]]]]:
    cases = []
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.append((case["alertname"], case.get("exp_alerts") or []))
    return cases


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_every_alert_has_a_firing_and_a_quiet_unit_test(alert: str) -> None:
    expected = [fires for name, fires in _cases() if name == alert]
    assert any(expected), f"no promtool case where {alert} fires"
    assert any(not fires for fires in expected), f"no promtool case where {alert} stays quiet"


def test_the_unit_tests_name_only_real_alerts() -> None:
    assert {name for name, _ in _cases()} <= set(ALERTS)


def _anchors() -> set[str]:
    # GitHub's anchor of "## AlertName" is the lower-cased heading.
    return {m.lower() for m in re.findall(r"^## (\S+)\s*$", RUNBOOKS.read_text(), re.MULTILINE)}


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_every_alert_is_labelled_and_documented(alert: str) -> None:
    rule = ALERTS[alert]
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    url = annotations["runbook_url"]
    assert url == f"deploy/monitoring/runbooks.md#{alert.lower()}"
    assert url.split("#")[1] in _anchors(), f"runbooks.md has no '## {alert}' section"


def test_every_runbook_section_is_an_alert() -> None:
    assert _anchors() == {a.lower() for a in ALERTS}


def test_the_rendered_files_match_their_sources() -> None:
    python = deploy_tool("python")
    done = run_tool([python, MONITORING / "build.py", "--check"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_prometheus_rule_wraps_the_rule_file() -> None:
    [rule] = _documents(RENDERED / "prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    base = os.environ.get(build.RUNBOOK_BASE_ENV, "")
    source = yaml.safe_load(RULES.read_text())["groups"]
    assert rule["spec"]["groups"] == build.runbook_urls(source, base)


def _runbook_urls(rendered: str) -> dict[str, str]:
    [rule] = [doc for doc in yaml.safe_load_all(rendered) if doc]
    return {
        r["alert"]: r["annotations"]["runbook_url"]
        for group in rule["spec"]["groups"]
        for r in group["rules"]
    }


def test_runbook_urls_stay_repo_relative_without_a_base_url() -> None:
    urls = _runbook_urls(build.prometheus_rule(""))
    for alert, url in urls.items():
        assert url == f"deploy/monitoring/runbooks.md#{alert.lower()}"
        assert (ROOT / url.split("#")[0]).is_file()


def test_the_operators_base_url_makes_every_runbook_url_absolute() -> None:
    """Alertmanager and Grafana open runbook_url as it is: a repo-relative path resolves
    against nothing there. The operator's base URL (where the repository is browsable) makes
    each one absolute, pointing at its alert's section of the very runbooks.md checked here."""
    base = "https://git.example.test/acme/shopstream/blob/v1.2.0"
    urls = _runbook_urls(build.prometheus_rule(base + "/"))
    assert set(urls) == set(ALERTS)
    for alert, url in urls.items():
        assert url == f"{base}/deploy/monitoring/runbooks.md#{alert.lower()}", url
        path, anchor = url.removeprefix(base + "/").split("#")
        assert (ROOT / path) == RUNBOOKS and anchor in _anchors()
    with pytest.raises(ValueError, match="http"):
        build.prometheus_rule("git.example.test/acme")


def test_the_service_monitors_select_each_role_by_its_metrics_port() -> None:
    monitors = {m["metadata"]["name"]: m for m in _documents(RENDERED / "servicemonitors.yaml")}
    assert set(monitors) == {"shopstream-collector", "shopstream-cdc", "shopstream-loader"}
    for name, monitor in monitors.items():
        role = name.removeprefix("shopstream-")
        spec = monitor["spec"]
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert spec["jobLabel"] == "app.kubernetes.io/component"
        assert spec["selector"]["matchLabels"]["app.kubernetes.io/component"] == role
        assert [e["port"] for e in spec["endpoints"]] == ["metrics"]


@pytest.mark.parametrize(
    ("kind", "file"),
    [("PrometheusRule", "prometheusrule.yaml"), ("ServiceMonitor", "servicemonitors.yaml")],
)
def test_the_custom_resources_validate_against_their_crd_schema(kind: str, file: str) -> None:
    import jsonschema

    schema_file = SCHEMAS / f"{kind}.json"
    if not schema_file.is_file():
        pytest.skip(f"no {schema_file.name} under tests/deploy/schemas (the k8s work adds them)")
    schema = json.loads(schema_file.read_text())["schema"]
    for document in _documents(RENDERED / file):
        errors = sorted(
            jsonschema.Draft7Validator(schema).iter_errors(document), key=lambda e: e.path
        )
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_kustomize_renders_the_monitoring_dir_with_the_dashboards() -> None:
    kubectl = system_tool("kubectl")
    done = run_tool([kubectl, "kustomize", RENDERED])
    assert done.returncode == 0, done.stderr
    objects = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(done.stdout)}
    config_map = objects[("ConfigMap", "shopstream-dashboards")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    boards = sorted(p.name for p in (RENDERED / "dashboards").glob("*.json"))
    assert sorted(config_map["data"]) == boards and len(boards) == 5
    for name in boards:
        assert config_map["data"][name] == (RENDERED / "dashboards" / name).read_text()
    # One copy: no second set of dashboard JSON outside the kustomization.
    assert not list(MONITORING.rglob("*.json"))
    assert ("PrometheusRule", "shopstream") in objects


def test_the_adapter_exposes_the_hpa_metric() -> None:
    values = yaml.safe_load((MONITORING / "prometheus-adapter-values.yaml").read_text())
    [rule] = values["rules"]["custom"]
    assert rule["name"]["as"] == "shopstream_collector_requests_per_second"
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert "rate(<<.Series>>{<<.LabelMatchers>>}[2m])" in rule["metricsQuery"]
    assert rule["seriesQuery"].startswith("shopstream_collector_request_seconds_count{")


def test_the_stack_finds_the_dashboards_and_keeps_the_pushed_labels() -> None:
    stack = yaml.safe_load((MONITORING / "kube-prometheus-stack-values.yaml").read_text())
    sidecar = stack["grafana"]["sidecar"]["dashboards"]
    [config_map] = [d for d in _documents(RENDERED / "kustomization.yaml")[0]["configMapGenerator"]]
    labels = config_map["options"]["labels"]
    assert labels[sidecar["label"]] == sidecar["labelValue"]
    assert sidecar["searchNamespace"] == "ALL"
    assert sidecar["folderAnnotation"] in config_map["options"]["annotations"]
    gateway = yaml.safe_load((MONITORING / "pushgateway-values.yaml").read_text())
    assert gateway["serviceMonitor"]["honorLabels"] is True
    assert gateway["serviceMonitor"]["additionalLabels"]["release"] == "kube-prometheus-stack"
