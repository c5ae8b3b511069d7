"""deploy/terraform checked offline: ``terraform fmt``, every file parsed as HCL2, checkov, and
what the parsed files say compared with what the code does (topic and subscription names,
dead-letter policies, raw table schemas, Workload Identity members, IAM).

``terraform init`` / ``validate`` need the Google provider, which cannot be downloaded here:
fmt, the HCL2 parser and checkov are what runs (deploy/README.md shows an operator's
``init`` / ``plan``).

The parser is python-hcl2 v8, from the platform's dev dependencies: checkov's own fork of it
(bc-python-hcl2) installs the same ``hcl2`` package in ``.venv-deploy`` and wins there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from hcl2 import SerializationOptions

from shopstream.config import BeamSettings, CdcSettings, PubSubSettings, TransportSettings
from shopstream.events.messages import Topics
from shopstream.events.raw import cdc_table_name
from shopstream.generators.shop import SHOP_TABLES
from shopstream.sinks.pubsub_admin import subscription_name
from shopstream.warehouse.base import LAYERS
from tests.support.deploy_tools import DEPLOY, ROOT, deploy_tool, run_tool, system_tool

TERRAFORM = DEPLOY / "terraform"
MODULES = TERRAFORM / "modules"
#: The one root module every environment applies, and where the environments are: each only
#: its variables (<env>.tfvars) and its state (<env>.backend.hcl).
PLATFORM = "platform"
ENVIRONMENTS_DIR = TERRAFORM / "environments"
ENVIRONMENTS = ("dev", "prod")
K8S = DEPLOY / "k8s"
#: The Kubernetes ServiceAccounts the brief decided, for when deploy/k8s is not there yet.
DECIDED_K8S_ACCOUNTS = {
    f"shopstream-{role}" for role in ("collector", "cdc", "loader", "quality", "transform")
}
NAMESPACE = "shopstream"
#: Roles that may appear nowhere in the Terraform.
FORBIDDEN_ROLES = {"roles/owner", "roles/editor", "roles/bigquery.admin"}
#: Roles granted on the project (everything else is granted on the resource): each has no
#: narrower home (jobs are a project's; Dataflow workers; GKE nodes' logs and metrics; the
#: loader lists topics under the prefix).
PROJECT_ROLES = {
    "roles/bigquery.jobUser",
    "roles/pubsub.viewer",
    "roles/dataflow.worker",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/autoscaling.metricsWriter",
    "roles/serviceusage.serviceUsageConsumer",
}


def hcl_files() -> list[Path]:
    return sorted(
        p
        for p in TERRAFORM.rglob("*")
        if p.suffix in (".tf", ".tfvars") or p.name.endswith(".backend.hcl")
    )


@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    """Relative path -> {"doc": parsed file} or {"error": ...} (every file's error, not only
    the first)."""
    result: dict[str, Any] = {}
    for path in hcl_files():
        try:
            document = hcl2.loads(
                path.read_text(),
                serialization_options=SerializationOptions(strip_string_quotes=True),
            )
            result[str(path.relative_to(TERRAFORM))] = {"doc": document}
        except Exception as exc:
            result[str(path.relative_to(TERRAFORM))] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


def doc(parsed: dict[str, Any], path: str) -> dict[str, Any]:
    entry = parsed[path]
    assert "error" not in entry, f"{path}: {entry.get('error')}"
    document: dict[str, Any] = entry["doc"]
    return document


def module_doc(parsed: dict[str, Any], module: str) -> dict[str, Any]:
    """Every file of a module (or environment) merged: kind -> list of its items."""
    merged: dict[str, list[Any]] = {}
    prefix = f"{module}/"
    for path in parsed:
        if path.startswith(prefix) and path.endswith(".tf") and "/" not in path[len(prefix) :]:
            for kind, items in doc(parsed, path).items():
                merged.setdefault(kind, []).extend(items)
    assert merged, f"no .tf files under {module}"
    return merged


def resources(document: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: body
        for item in document.get("resource", [])
        for type_, named in item.items()
        if type_ == kind
        for name, body in named.items()
    }


def all_resources(parsed: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    for path in parsed:
        if path.endswith(".tf"):
            for item in doc(parsed, path).get("resource", []):
                for type_, named in item.items():
                    for name, body in named.items():
                        yield path, type_, name, body


def local(document: dict[str, Any], name: str) -> Any:
    for block in document.get("locals", []):
        if name in block:
            return block[name]
    raise KeyError(f"no local {name}")


def variable_default(document: dict[str, Any], name: str) -> Any:
    for item in document.get("variable", []):
        if name in item:
            return item[name].get("default")
    raise KeyError(f"no variable {name}")


def plain(body: dict[str, Any]) -> dict[str, Any]:
    """A parsed body without the parser's own keys (``__is_block__``, ``__comments__``)."""
    return {k: v for k, v in body.items() if not (k.startswith("__") and k.endswith("__"))}


def blocks(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = body.get(name, [])
    return value if isinstance(value, list) else [value]


def module_call(document: dict[str, Any], name: str) -> dict[str, Any]:
    for item in document.get("module", []):
        if name in item:
            body: dict[str, Any] = item[name]
            return body
    raise KeyError(f"no module {name}")


_INTERPOLATION = re.compile(r"\$\{([^${}]+)\}")


def evaluate(template: str, values: dict[str, str]) -> str:
    """A string template's value: each ``${name}`` replaced from ``values`` (a name it does
    not know fails: the template changed and the test must learn it)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        assert name in values, f"template {template!r} names {name!r}, unknown to the test"
        return values[name]

    return _INTERPOLATION.sub(one, template)


def for_template(expression: str) -> tuple[str, str]:
    """``{for X in ... : X => "<template>"}`` -> (X, template)."""
    found = re.search(r'for (\w+) in [^:]+: \w+ => \\?"(.+?)\\?"\}', expression)
    assert found, f"not a for expression over one template: {expression!r}"
    return found.group(1), found.group(2)


# -- tools ----------------------------------------------------------------------------------


def test_terraform_fmt_is_clean() -> None:
    terraform = system_tool("terraform")
    done = run_tool([terraform, "fmt", "-check", "-recursive", "-diff", TERRAFORM], timeout=60)
    assert done.returncode == 0, f"terraform fmt would change:\n{done.stdout}{done.stderr}"


def test_every_file_parses(parsed: dict[str, Any]) -> None:
    expected = {str(p.relative_to(TERRAFORM)) for p in hcl_files()}
    assert set(parsed) == expected
    errors = {path: entry["error"] for path, entry in parsed.items() if "error" in entry}
    assert not errors, errors
    assert len([p for p in parsed if p.endswith(".tf")]) >= 30


CHECKOV_OUTPUT = ("-o", "json", "--quiet", "--compact")


@pytest.fixture(scope="module")
def checkov() -> dict[str, Any]:
    binary = deploy_tool("checkov")
    env = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
    done = run_tool(
        [binary, "--framework", "terraform", "-d", TERRAFORM, "--skip-download", *CHECKOV_OUTPUT],
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    reports: list[dict[str, Any]] = report if isinstance(report, list) else [report]
    assert len(reports) == 1 and reports[0]["check_type"] == "terraform", done.stdout[:500]
    return reports[0]


def test_checkov_finds_no_failed_check(checkov: dict[str, Any]) -> None:
    summary = checkov["summary"]
    assert summary["parsing_errors"] == 0, summary
    assert summary["resource_count"] >= 40, summary
    failed = [
        f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
        for f in checkov["results"].get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    assert summary["passed"] > 0


def test_every_checkov_skip_gives_a_reason() -> None:
    skips = 0
    for path in TERRAFORM.rglob("*.tf"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "checkov:skip" in line:
                skips += 1
                assert re.fullmatch(r"\s*# checkov:skip=CKV2?_GCP_\d+: \S.{20,}", line), (
                    f"{path.relative_to(ROOT)}:{number}: a skip names one check and says why"
                )
    assert skips > 0


# -- BigQuery -------------------------------------------------------------------------------

RENDER = MODULES / "bigquery" / "render_schemas.py"


def test_raw_table_schemas_match_the_package() -> None:
    spec = importlib.util.spec_from_file_location("render_schemas", RENDER)
    assert spec and spec.loader
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    wanted = render.render()
    on_disk = {p.name: p.read_text() for p in (MODULES / "bigquery" / "schemas").glob("*.json")}
    stale = sorted(name for name in wanted if on_disk.get(name) != wanted[name])
    extra = sorted(set(on_disk) - set(wanted))
    assert not stale and not extra, (
        f"schemas drifted from the package (stale {stale}, unknown {extra}): run "
        f".venv/bin/python {RENDER.relative_to(ROOT)}"
    )


def test_datasets_and_raw_tables(parsed: dict[str, Any]) -> None:
    bigquery = module_doc(parsed, "modules/bigquery")
    datasets = variable_default(bigquery, "datasets")
    assert set(datasets) == set(LAYERS)
    assert all(d["partition_expiration_days"] > 0 for d in datasets.values())
    [dataset] = resources(bigquery, "google_bigquery_dataset").values()
    assert dataset["for_each"] == "${var.datasets}"
    assert "partition_expiration_days" in dataset["default_partition_expiration_ms"]
    assert dataset["delete_contents_on_destroy"] is False
    platform = module_doc(parsed, PLATFORM)
    assert set(variable_default(platform, "datasets")) == set(LAYERS)
    for env in ENVIRONMENTS:
        values = doc(parsed, f"environments/{env}.tfvars")
        if "datasets" in values:
            assert set(values["datasets"]) == set(LAYERS), env

    [table] = resources(bigquery, "google_bigquery_table").values()
    assert table["deletion_protection"] == "${var.deletion_protection}"
    [partitioning] = blocks(table, "time_partitioning")
    assert partitioning["type"] == "DAY"
    assert "layouts[each.value].partition_by" in partitioning["field"]
    assert "layouts[each.value].cluster_by" in table["clustering"]
    assert "schemas/${each.value}.json" in table["schema"]

    # raw.<table>: the three fixed tables, and cdc_<table> named as the code names it.
    fixed = local(bigquery, "raw_tables")
    assert "events" in fixed and "dead_letter" in fixed and "source_schemas" in fixed
    expression = local(bigquery, "cdc_tables")
    schema = variable_default(bigquery, "cdc_schema")
    assert schema == CdcSettings().schema_name
    tables = variable_default(bigquery, "captured_tables")
    assert tables == list(SHOP_TABLES)
    found = re.search(r'\? \\?"(cdc_[^"\\]+)\\?" : \\?"(cdc_[^"\\]+)\\?"', expression)
    assert found, expression
    for table_name in tables:
        named = found.group(1) if schema == "public" else found.group(2)
        assert evaluate(named, {"table": table_name, "var.cdc_schema": schema}) == (
            cdc_table_name(table_name, schema)
        )
        other = evaluate(found.group(2), {"table": table_name, "var.cdc_schema": "sales"})
        assert other == cdc_table_name(table_name, "sales")


# -- Pub/Sub --------------------------------------------------------------------------------


def test_topics_and_subscriptions_are_named_as_the_code_names_them(
    parsed: dict[str, Any],
) -> None:
    pubsub = module_doc(parsed, "modules/pubsub")
    settings = PubSubSettings()
    values = {
        "var.topic_prefix": variable_default(pubsub, "topic_prefix"),
        "var.cdc_schema": variable_default(pubsub, "cdc_schema"),
        "var.loader_subscription": variable_default(pubsub, "loader_subscription"),
        "var.beam_subscription": variable_default(pubsub, "beam_subscription"),
    }
    assert values["var.topic_prefix"] == TransportSettings().topic_prefix
    assert values["var.cdc_schema"] == CdcSettings().schema_name
    assert values["var.loader_subscription"] == settings.subscription
    assert values["var.beam_subscription"] == BeamSettings().subscription
    assert variable_default(pubsub, "ack_deadline_seconds") == settings.ack_deadline_seconds
    assert variable_default(pubsub, "max_delivery_attempts") == settings.max_delivery_attempts
    captured = variable_default(pubsub, "captured_tables")
    assert captured == list(SHOP_TABLES)

    topics = Topics(values["var.topic_prefix"])
    fixed = {evaluate(t, values) for t in local(pubsub, "fixed_topics").values()}
    assert fixed == set(topics.fixed())
    assert evaluate(local(pubsub, "fixed_topics")["dead_letter"], values) == topics.dead_letter
    name, template = for_template(local(pubsub, "change_topics"))
    changes = {evaluate(template, {**values, name: t}) for t in captured}
    assert changes == {topics.changes(values["var.cdc_schema"], t) for t in captured}

    every_topic = fixed | changes
    name, template = for_template(local(pubsub, "loader_subscriptions"))
    assert {evaluate(template, {**values, name: t}) for t in every_topic} == {
        subscription_name(t, settings) for t in every_topic
    }
    name, template = for_template(local(pubsub, "beam_subscriptions"))
    assert {evaluate(template, {**values, name: t}) for t in every_topic} == {
        f"{t}.{BeamSettings().subscription}" for t in every_topic
    }

    # The platform passes the code's defaults on, and no environment changes them (the
    # overlays' settings would have to change with them).
    platform = module_doc(parsed, PLATFORM)
    assert variable_default(platform, "topic_prefix") == TransportSettings().topic_prefix
    assert variable_default(platform, "captured_tables") == list(SHOP_TABLES)
    assert variable_default(platform, "cdc_schema") == CdcSettings().schema_name
    assert variable_default(platform, "max_delivery_attempts") == settings.max_delivery_attempts
    call = module_call(platform, "pubsub")
    for argument in ("topic_prefix", "cdc_schema", "captured_tables"):
        assert call[argument] == f"${{var.{argument}}}", argument
    for env in ENVIRONMENTS:
        values = doc(parsed, f"environments/{env}.tfvars")
        assert not values.keys() & {"topic_prefix", "cdc_schema", "captured_tables"}, env


def test_dead_letter_policies(parsed: dict[str, Any]) -> None:
    """Every loader subscription but the dead-letter topic's own is dead-lettered after
    pubsub.max_delivery_attempts; the Beam subscriptions have no policy, as the code creates
    them (Dataflow sends what it cannot load to raw.dead_letter itself); every other
    subscription anywhere has a policy."""
    pubsub = module_doc(parsed, "modules/pubsub")
    assert local(pubsub, "dead_letter") == "${local.fixed_topics.dead_letter}"
    subscriptions = resources(pubsub, "google_pubsub_subscription")
    assert set(subscriptions) == {"loader", "beam"}

    loader = subscriptions["loader"]
    assert loader["for_each"] == "${local.loader_subscriptions}"
    assert loader["ack_deadline_seconds"] == "${var.ack_deadline_seconds}"
    [dynamic] = [d["dead_letter_policy"] for d in blocks(loader, "dynamic")]
    assert isinstance(dynamic["for_each"], str) and re.fullmatch(
        r"\$\{each\.key == local\.dead_letter \? \[\] : \['?(\$\{)?local\.dead_letter\}?'?\]\}",
        dynamic["for_each"],
    ), dynamic["for_each"]
    [content] = blocks(dynamic, "content")
    assert content["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    assert "dead_letter_policy.value" in content["dead_letter_topic"]
    for subscription in subscriptions.values():
        assert blocks(subscription, "expiration_policy")[0]["ttl"] == "", "never expires"

    beam = subscriptions["beam"]
    assert "dead_letter_policy" not in beam and not blocks(beam, "dynamic")
    beam_source = (ROOT / "src/shopstream/beam/sources.py").read_text()
    assert "dead_letter_policy" not in beam_source  # the code creates them without one

    # The Pub/Sub service agent may move dead letters: publish to the dead-letter topic,
    # acknowledge on every dead-lettered subscription.
    publishers = local(pubsub, "publishers")
    assert re.search(r"pubsub-agent/\$\{local\.dead_letter\}", publishers)
    readers = local(pubsub, "readers")
    assert re.search(
        r"pubsub-agent/\$\{name\}.+roles/pubsub\.subscriber.+local\.service_agent.+"
        r"if topic != local\.dead_letter",
        readers,
    ), readers
    assert "gcp-sa-pubsub.iam.gserviceaccount.com" in local(pubsub, "service_agent")

    others = [
        (path, name)
        for path, type_, name, body in all_resources(parsed)
        if type_ == "google_pubsub_subscription"
        and not path.startswith("modules/pubsub/")
        and "dead_letter_policy" not in body
    ]
    assert not others, others


BACKLOG_METRICS = {
    "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
    "pubsub.googleapis.com/subscription/num_undelivered_messages",
}


def condition_filters(policy: dict[str, Any]) -> dict[str, str]:
    """metric type -> the filter of the policy's threshold condition on it (quotes unescaped)."""
    found: dict[str, str] = {}
    for condition in blocks(policy, "conditions"):
        for threshold in blocks(condition, "condition_threshold"):
            text = threshold["filter"].replace('\\"', '"')
            [metric] = re.findall(r'metric\.type = "([^"]+)"', text)
            found[metric] = text
    return found


def test_every_loader_subscription_has_backlog_alerts(parsed: dict[str, Any]) -> None:
    """On Pub/Sub the loader reports no lag (shopstream_loader_lag_messages is Kafka's), so
    Cloud Monitoring alerts on each loader subscription's oldest unacked message age and
    undelivered messages, and on messages reaching the dead-letter topic; each notifies the
    channels of the variable and links the LoaderConsumerLagHigh runbook."""
    pubsub = module_doc(parsed, "modules/pubsub")
    policies = resources(pubsub, "google_monitoring_alert_policy")
    values = {
        "var.topic_prefix": variable_default(pubsub, "topic_prefix"),
        "var.cdc_schema": variable_default(pubsub, "cdc_schema"),
        "var.loader_subscription": variable_default(pubsub, "loader_subscription"),
    }
    topics = Topics(values["var.topic_prefix"])
    every_topic = set(topics.fixed()) | {
        topics.changes(values["var.cdc_schema"], t) for t in SHOP_TABLES
    }
    name, template = for_template(local(pubsub, "loader_subscriptions"))
    loader_subscriptions = {evaluate(template, {**values, name: t}) for t in every_topic}

    # Which subscription each backlog policy watches, per metric.
    covered: dict[str, set[str]] = {metric: set() for metric in BACKLOG_METRICS}
    for policy in policies.values():
        filters = condition_filters(policy)
        if not filters.keys() & BACKLOG_METRICS:
            continue
        assert policy["for_each"] == "${local.loader_subscriptions}", policy["for_each"]
        for metric, text in filters.items():
            assert 'resource.type = "pubsub_subscription"' in text, text
            for subscription in loader_subscriptions:
                found = re.search(
                    r'subscription_id = "([^"]+)"', evaluate(text, {"each.value": subscription})
                )
                assert found, text
                covered[metric].add(found.group(1))
    for metric, subscriptions in covered.items():
        assert subscriptions == loader_subscriptions, (metric, loader_subscriptions - subscriptions)

    [dead_letters] = [
        p
        for p in policies.values()
        if "pubsub.googleapis.com/subscription/dead_letter_message_count" in condition_filters(p)
    ]
    [text] = condition_filters(dead_letters).values()
    # Every loader subscription's name ends so (and no Beam subscription's).
    assert 'subscription_id = ends_with(".${var.loader_subscription}")' in text, text
    assert "for_each" not in dead_letters

    assert variable_default(pubsub, "backlog_age_seconds") == 600
    assert variable_default(pubsub, "backlog_duration") == "600s"
    runbooks = variable_default(pubsub, "runbook_url")
    assert (ROOT / runbooks).is_file() and re.search(
        r"^## LoaderConsumerLagHigh$", (ROOT / runbooks).read_text(), re.M
    )
    for policy in policies.values():
        assert policy["notification_channels"] == "${var.notification_channels}"
        [documentation] = blocks(policy, "documentation")
        assert "${var.runbook_url}#loaderconsumerlaghigh" in documentation["content"]
    assert variable_default(pubsub, "notification_channels") == []
    platform = module_doc(parsed, PLATFORM)
    assert variable_default(platform, "notification_channels") == []
    call = module_call(platform, "pubsub")
    assert call["notification_channels"] == "${var.notification_channels}"


# -- IAM ------------------------------------------------------------------------------------


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def test_iam_is_least_privilege(parsed: dict[str, Any]) -> None:
    for path, entry in parsed.items():
        for text in strings(entry.get("doc", {})):
            for role in re.findall(r"roles/[A-Za-z.]+", text):
                # The bigquery module's validation names the forbidden roles to refuse them.
                if path == "modules/bigquery/variables.tf" and "contains([" in text:
                    continue
                assert role not in FORBIDDEN_ROLES, f"{path}: {role}"
    kinds = {type_ for _, type_, _, _ in all_resources(parsed)}
    authoritative = {k for k in kinds if k.endswith(("_iam_binding", "_iam_policy"))}
    assert not authoritative, f"authoritative IAM replaces others' grants: {authoritative}"
    project_members = [
        path for path, type_, _, _ in all_resources(parsed) if type_ == "google_project_iam_member"
    ]
    assert project_members == ["modules/iam/main.tf"]

    iam = module_doc(parsed, "modules/iam")
    project_roles = local(iam, "project_roles")
    granted = {grant["role"] for grant in project_roles.values()}
    assert granted <= PROJECT_ROLES, granted - PROJECT_ROLES
    by_account: dict[str, set[str]] = {}
    for grant in project_roles.values():
        by_account.setdefault(grant["account"], set()).add(grant["role"])
    # The writers need nothing on the project: their topics' grants are on the topics.
    assert not by_account.keys() & {"collector", "cdc"}
    assert by_account["dataflow"] == {"roles/dataflow.worker"}
    # BigQuery jobs only for the roles that query (dbt; the quality checks' queries and dry
    # runs): the loader and the Dataflow workers append through the Storage Write API
    # (tables.updateData), look tables up and make them, and run no job.
    job_users = {a for a, roles in by_account.items() if "roles/bigquery.jobUser" in roles}
    assert job_users == {"transform", "quality"}
    assert by_account["loader"] == {"roles/pubsub.viewer"}

    # Datasets: who writes a layer, who reads it, granted on the dataset.
    access = module_call(module_doc(parsed, PLATFORM), "bigquery")["dataset_access"]
    assert set(access) == set(LAYERS)

    def holders(dataset: str, role: str) -> set[str]:
        members = access[dataset].get(f"roles/bigquery.{role}", {})
        for name, member in members.items():  # each grant's name is the account it names
            assert f'members["{name}"]' in member.replace('\\"', '"'), (name, member)
        return set(members)

    assert holders("raw", "dataEditor") == {"loader", "dataflow"}
    assert holders("raw", "dataViewer") == {"transform", "quality"}
    assert holders("staging", "dataEditor") == {"transform"}
    assert holders("mart", "dataEditor") == {"transform", "dataflow"}
    assert holders("monitoring", "dataEditor") == {"quality", "transform"}
    # Every role sees only the datasets its code looks at (ensure_layers(ROLE_LAYERS[role])):
    # the loader raw, the Dataflow workers raw and mart, quality monitoring (and reads the
    # rest), transform all four.
    seen: dict[str, set[str]] = {}
    for dataset, roles in access.items():
        for role in roles:
            for account in holders(dataset, role.removeprefix("roles/bigquery.")):
                seen.setdefault(account, set()).add(dataset)
    assert seen == {
        "loader": {"raw"},
        "dataflow": {"raw", "mart"},
        "quality": set(LAYERS),
        "transform": set(LAYERS),
    }, seen
    for dataset in ("raw", "staging", "mart"):
        assert "quality" in holders(dataset, "dataViewer") | holders(dataset, "dataEditor")

    # Topics: each writer publishes to its own topics only.
    publishers = local(module_doc(parsed, "modules/pubsub"), "publishers")
    assert re.search(
        r"local\.fixed_topics\.events.+local\.dead_letter.+collector/.+var\.members\.collector",
        publishers,
    )
    assert re.search(
        r"values\(local\.change_topics\).+source_schemas.+var\.members\.cdc", publishers
    )
    assert "var.members.loader" in publishers
    assert "${local.topics}" not in publishers  # nobody publishes everywhere


@pytest.fixture(scope="module")
def kubernetes_objects() -> list[dict[str, Any]] | None:
    """The prod overlay of deploy/k8s, rendered once (None until deploy/k8s has it), and the
    Airflow worker pod templates (deploy/airflow/pod_templates) when there are any."""
    overlay = K8S / "overlays" / "prod"
    if not (overlay / "kustomization.yaml").is_file():
        return None
    done = run_tool([system_tool("kubectl"), "kustomize", overlay], timeout=60)
    assert done.returncode == 0, done.stderr
    objects = [item for item in yaml.safe_load_all(done.stdout) if item]
    for template in sorted((DEPLOY / "airflow" / "pod_templates").glob("*.yaml")):
        objects += [item for item in yaml.safe_load_all(template.read_text()) if item]
    return objects


def kubernetes_accounts(objects: list[dict[str, Any]] | None) -> dict[str, str | None]:
    """The ServiceAccounts deploy/k8s renders in namespace shopstream -> their Workload
    Identity annotation; the brief's names until deploy/k8s exists."""
    if objects is None:
        return dict.fromkeys(sorted(DECIDED_K8S_ACCOUNTS))
    accounts: dict[str, str | None] = {}
    for item in objects:
        if item.get("kind") == "ServiceAccount":
            meta = item["metadata"]
            if meta.get("namespace") == NAMESPACE:
                notes = meta.get("annotations") or {}
                accounts[meta["name"]] = notes.get("iam.gke.io/gcp-service-account")
    assert accounts, "deploy/k8s renders no ServiceAccount in namespace shopstream"
    return accounts


def test_workload_identity_members_name_kubernetes_service_accounts(
    parsed: dict[str, Any], kubernetes_objects: list[dict[str, Any]] | None
) -> None:
    iam = module_doc(parsed, "modules/iam")
    assert variable_default(iam, "namespace") == NAMESPACE
    workloads = set(
        local(iam, "workloads")
        .removeprefix("${toset(")
        .removesuffix(")}")[1:-1]
        .replace('"', "")
        .replace("'", "")
        .replace(" ", "")
        .split(",")
    )
    [binding] = resources(iam, "google_service_account_iam_member").values()
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["for_each"] == "${local.workloads}"
    template = binding["member"]
    assert template == (
        "serviceAccount:${var.workload_pool}[${var.namespace}/shopstream-${each.key}]"
    )
    [account] = resources(iam, "google_service_account").values()
    assert account["account_id"] == "shopstream-${each.key}"
    google_accounts = set(local(iam, "accounts"))
    assert google_accounts == workloads | {"dataflow", "nodes"}

    project = "my-project"
    members = {
        evaluate(
            template,
            {
                "var.workload_pool": f"{project}.svc.id.goog",
                "var.namespace": NAMESPACE,
                "each.key": role,
            },
        )
        for role in workloads
    }
    kubernetes = kubernetes_accounts(kubernetes_objects)
    # Each binding names a ServiceAccount deploy/k8s has...
    missing = members - {
        f"serviceAccount:{project}.svc.id.goog[{NAMESPACE}/{name}]" for name in kubernetes
    }
    assert not missing, f"Workload Identity for ServiceAccounts deploy/k8s lacks: {missing}"
    # ...and each of those that asks for a Google account (or all, before deploy/k8s) has one,
    # the account its annotation names.
    for name, annotation in kubernetes.items():
        if annotation is None and kubernetes_objects is not None:
            continue
        assert f"serviceAccount:{project}.svc.id.goog[{NAMESPACE}/{name}]" in members, name
        if annotation is not None:
            assert re.fullmatch(rf"{name}@[^@]+\.iam\.gserviceaccount\.com", annotation), (
                name,
                annotation,
            )
    call = module_call(module_doc(parsed, PLATFORM), "iam")
    assert call["namespace"] == NAMESPACE
    assert call["workload_pool"] == "${module.gke.workload_pool}"


# -- GKE, secrets, Cloud SQL, environments --------------------------------------------------


def pod_specs(node: Any) -> Iterator[dict[str, Any]]:
    """Every pod spec in a Kubernetes object (Deployment, CronJob, Pod...)."""
    if isinstance(node, dict):
        if "containers" in node:
            yield node
        for value in node.values():
            yield from pod_specs(value)
    elif isinstance(node, list):
        for value in node:
            yield from pod_specs(value)


def test_gke_private_cluster_and_spot_pipeline_pool(
    parsed: dict[str, Any], kubernetes_objects: list[dict[str, Any]] | None
) -> None:
    gke = module_doc(parsed, "modules/gke")
    [cluster] = resources(gke, "google_container_cluster").values()
    [private] = blocks(cluster, "private_cluster_config")
    assert private["enable_private_nodes"] is True
    assert blocks(cluster, "master_authorized_networks_config")
    [identity] = blocks(cluster, "workload_identity_config")
    assert identity["workload_pool"] == "${local.workload_pool}"
    assert local(gke, "workload_pool") == "${var.project_id}.svc.id.goog"
    assert cluster["enable_shielded_nodes"] is True
    assert cluster["datapath_provider"] == "ADVANCED_DATAPATH"
    assert blocks(cluster, "release_channel")

    pools = resources(gke, "google_container_node_pool")
    assert set(pools) == {"general", "pipeline"}
    for name, pool in pools.items():
        [config] = blocks(pool, "node_config")
        assert config["service_account"] == "${var.node_service_account}"
        assert blocks(config, "workload_metadata_config")[0]["mode"] == "GKE_METADATA"
        assert config["labels"] == {"shopstream.io/pool": name}
    [spot] = blocks(pools["pipeline"], "node_config")
    assert spot["spot"] is True
    [taint] = blocks(spot, "taint")
    assert (taint["key"], taint["value"], taint["effect"]) == (
        "cloud.google.com/gke-spot",
        "true",
        "NO_SCHEDULE",
    )
    assert "spot" not in blocks(pools["general"], "node_config")[0]

    # What deploy/k8s and the Airflow pod template tolerate and select is this pool's taint
    # and these pools' labels.
    if kubernetes_objects is None:
        return
    taint_effect = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute"}[taint["effect"]]
    pool_names = {
        blocks(pool, "node_config")[0]["labels"]["shopstream.io/pool"] for pool in pools.values()
    }
    tolerating = 0
    for spec in pod_specs(kubernetes_objects):
        for toleration in spec.get("tolerations", []):
            if toleration.get("key") == taint["key"]:
                tolerating += 1
                assert (toleration.get("value"), toleration.get("effect")) == (
                    taint["value"],
                    taint_effect,
                ), toleration
        affinity = spec.get("affinity", {}).get("nodeAffinity", {})
        for term in pod_specs_terms(affinity):
            if term.get("key") == "shopstream.io/pool":
                assert set(term.get("values", [])) <= pool_names, term
    assert tolerating, "no pod of deploy/k8s tolerates the Spot pipeline pool"


def pod_specs_terms(node: Any) -> Iterator[dict[str, Any]]:
    """Every match expression under a nodeAffinity."""
    if isinstance(node, dict):
        if "key" in node and "operator" in node:
            yield node
        for value in node.values():
            yield from pod_specs_terms(value)
    elif isinstance(node, list):
        for value in node:
            yield from pod_specs_terms(value)


def test_secrets_are_created_without_values(parsed: dict[str, Any]) -> None:
    secrets = module_doc(parsed, "modules/secrets")
    ids = set(variable_default(secrets, "secrets"))
    keys = ("write-keys", "postgres-dsn", "email-salt", "genai-api-key")
    assert ids == {f"shopstream-{key}" for key in keys}
    kinds = {type_ for _, type_, _, _ in all_resources(parsed)}
    assert "google_secret_manager_secret_version" not in kinds


def test_cloud_sql_has_logical_decoding(parsed: dict[str, Any]) -> None:
    cloudsql = module_doc(parsed, "modules/cloudsql")
    [instance] = resources(cloudsql, "google_sql_database_instance").values()
    assert instance["count"] == "${var.enabled ? 1 : 0}"
    assert variable_default(cloudsql, "enabled") is False
    [settings] = blocks(instance, "settings")
    flags = {flag["name"]: flag["value"] for flag in blocks(settings, "database_flags")}
    assert flags["cloudsql.logical_decoding"] == "on"
    [network] = blocks(settings, "ip_configuration")
    assert network["ipv4_enabled"] is False


def test_one_platform_and_environments_of_variables_only(parsed: dict[str, Any]) -> None:
    """One root module (platform) calls every module; an environment is only its variables
    and its backend: no .tf of its own, so dev and prod cannot drift apart in code."""
    modules = {p.name for p in MODULES.iterdir() if p.is_dir()}
    platform = module_doc(parsed, PLATFORM)
    calls = {name for item in platform["module"] for name in item}
    assert calls == modules
    for name in calls:
        assert module_call(platform, name)["source"] == f"../modules/{name}"
    [settings] = platform["terraform"]
    [backend] = blocks(settings, "backend")
    assert {kind: plain(body) for kind, body in plain(backend).items()} == {"gcs": {}}, (
        "the bucket and prefix are each environment's backend file"
    )
    roots = sorted(
        path.rsplit("/", 1)[0]
        for path in parsed
        if path.endswith(".tf") and "terraform" in doc(parsed, path)
        for item in doc(parsed, path)["terraform"]
        if "backend" in item
    )
    assert roots == [PLATFORM], f"one root module only: {roots}"

    assert sorted(p.name for p in ENVIRONMENTS_DIR.iterdir()) == sorted(
        f"{env}{suffix}" for env in ENVIRONMENTS for suffix in (".tfvars", ".backend.hcl")
    )
    declared = {name: body for item in platform["variable"] for name, body in item.items()}
    required = {name for name, body in declared.items() if "default" not in body}
    for env in ENVIRONMENTS:
        values = plain(doc(parsed, f"environments/{env}.tfvars"))
        assert values.keys() <= declared.keys(), (env, values.keys() - declared.keys())
        assert required <= values.keys(), (env, required - values.keys())
        assert values["environment"] == env
        state = plain(doc(parsed, f"environments/{env}.backend.hcl"))
        assert state.keys() == {"bucket", "prefix"}, env
        assert state["prefix"] == f"shopstream/{env}"
        # The state bucket of step 3 of deploy/README.md, in the environment's own project.
        assert state["bucket"] == f"{values['project_id']}-tfstate", env


def test_the_guide_runs_terraform_as_the_files_are_laid_out() -> None:
    """deploy/README.md's Terraform commands: in the platform root, each environment's state at
    init and its variables at plan/apply/destroy (a plan without them would ask for every
    variable, or apply another environment's state)."""
    guide = (DEPLOY / "README.md").read_text()
    commands = re.findall(r"^\s*(terraform (?:init|plan|apply|destroy)\b.*)$", guide, re.M)
    assert commands
    for command in commands:
        if command.startswith("terraform init"):
            assert "-backend-config=../environments/ENV.backend.hcl" in command, command
        elif command.split()[1] != "apply" or not command.split()[-1].endswith(".tfplan"):
            assert "-var-file=../environments/ENV.tfvars" in command, command
    assert "cd deploy/terraform/platform" in guide
    for env in ENVIRONMENTS:
        assert (ENVIRONMENTS_DIR / f"{env}.tfvars").is_file()
        assert (ENVIRONMENTS_DIR / f"{env}.backend.hcl").is_file()
    assert "environments/ENV\n" not in guide and "terraform.tfvars" not in guide
