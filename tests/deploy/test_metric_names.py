"""Every metric the alerts, the HPA's adapter rule and the dashboards name is emitted by a
running shopstream component (the seed alerted on metrics nothing emitted).

The emitted names are collected from /metrics of real processes, started once for the module:
a collector that answered one good and one bad request and ran the quality checks, a CDC reader
streaming a small PostgreSQL database, a loader loading from a Kafka-protocol broker, and a
Pushgateway after `shopstream record-run`. A name counts as emitted when it has a sample: a
labelled family that nothing has set yet is only declared (HELP/TYPE), not emitted.

The names a query uses come from deploy/monitoring/promql.py (a tokenizer, unit-tested below;
loaded through tests/support/promql.py).
"""

from __future__ import annotations

import contextlib
import doctest
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from shopstream.events.messages import Message, Topics, encode
from tests.support.cdc import cdc_process, wait_for, wait_streaming
from tests.support.collector import CollectorProcess, free_port
from tests.support.loader import LoaderProcess, create_topics, produce
from tests.support.pg_fixtures import drop_database
from tests.support.promql import promql
from tests.support.pushgateway import start_pushgateway
from tests.support.rows import event_row, tracked_event

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "rules" / "shopstream.rules.yml"
ADAPTER = MONITORING / "prometheus-adapter-values.yaml"
#: The dashboards' one copy (build.py renders it under the kustomization that packs it).
DASHBOARDS = sorted((ROOT / "deploy" / "k8s" / "base" / "monitoring" / "dashboards").glob("*.json"))

#: Metrics that come from outside the code, allowed in alerts only, with their source.
EXTERNAL = {
    "up": "Prometheus: one series per scrape target (1 scraped, 0 failed)",
    "kube_pod_container_status_restarts_total": "kube-state-metrics (kube-prometheus-stack)",
}


def _alerts() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def _adapter_queries() -> list[str]:
    values = yaml.safe_load(ADAPTER.read_text())
    queries = []
    for rule in values["rules"]["custom"]:
        series = rule["seriesQuery"]
        [name] = promql.metric_names(series)
        queries += [
            series,
            rule["metricsQuery"]
            .replace("<<.Series>>", name)
            .replace("{<<.LabelMatchers>>}", "")
            .replace("<<.GroupBy>>", "pod"),
        ]
    return queries


def _dashboard_queries(path: Path) -> list[str]:
    board = json.loads(path.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


# -- the tokenizer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        ('sum by (job) (rate(a_total{reason=~"busy|x"}[5m])) > 0', {"a_total"}),
        ("sum(rate(a[5m])) by (le, route)", {"a"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
        ("a / on (job, instance) group_left (pod) b", {"a", "b"}),
        ("a > ignoring (x) b unless c offset 1h", {"a", "b", "c"}),
        ('absent(x{table="events"}) or vector(0)', {"x"}),
        ("time() - max(x_seconds) > 1800 and y > 16 * 1024 * 1e-3", {"x_seconds", "y"}),
        ('{__name__="named", job="j"} and count_values("v", z)', {"named", "z"}),
        ('rate(a{l="}"}[5m]) and b{l="{[("}', {"a", "b"}),
        ("# a comment with words\nmax without (instance) (w)", {"w"}),
        ("topk(3, sum by (pod) (rate(q[${__rate_interval}])))", {"q"}),
        ("rate(a[5m:1m]) and bool b", {"a", "b"}),
        ("sum(x:recorded:rate5m)", {"x:recorded:rate5m"}),
        ("a offset -5m > b offset 1h30m", {"a", "b"}),
        ("x @ 1609746000 and y @ start() unless z @ end()", {"x", "y", "z"}),
        ("m offset 2ms + s", {"m", "s"}),
    ],
)
def test_the_tokenizer_finds_the_selected_metrics(expr: str, names: set[str]) -> None:
    assert promql.metric_names(expr) == names


def test_the_tokenizers_docstring_examples_hold() -> None:
    # deploy/ is outside pytest's doctest paths: its examples run here.
    result = doctest.testmod(promql)
    assert result.attempted >= 4 and result.failed == 0, result


def test_the_tokenizer_refuses_unbalanced_input() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        promql.metric_names("rate(a{b='c'[5m])")


@pytest.mark.parametrize(
    ("sample", "family"),
    [("a_total", "a"), ("h_bucket", "h"), ("h_count", "h"), ("h_sum", "h"), ("g", "g")],
)
def test_sample_names_map_to_their_family(sample: str, family: str) -> None:
    assert promql.family(sample) == family


# -- running components ----------------------------------------------------------------------


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> its (labels, value) pairs, from ``url`` (a /metrics address)."""
    text = httpx.get(url, timeout=10).text
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def has(samples: dict[str, Any], name: str, **labels: str) -> bool:
    return any(labels.items() <= ls.items() for ls, _ in samples.get(name, []))


def wait_until_scraped(url: str, name: str, timeout: float = 30, **labels: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            samples = scrape(url)
            if has(samples, name, **labels):
                return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never showed {name}{labels or ''}")
        time.sleep(0.2)


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    env.update(more)
    return env


def run_collector(data_dir: Path) -> dict[str, Any]:
    collector = CollectorProcess(data_dir, env={"SHOPSTREAM_QUALITY__SCHEDULE_MINUTES": "0"})
    collector.start()
    try:
        good, bad = tracked_event(), tracked_event(anonymous_id=None)  # no user: refused
        answer = httpx.post(f"{collector.url}/v1/events", json=[good, bad], timeout=30)
        assert answer.status_code < 300, answer.text
        broken = httpx.post(
            f"{collector.url}/v1/events",
            content=b"{not json",
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert 400 <= broken.status_code < 500, broken.text
        # The quality checks run where the warehouse is held: in this process.
        subprocess.run(
            [sys.executable, "-m", "shopstream", "quality", "run"],
            env=_env(SHOPSTREAM_DATA_DIR=str(data_dir), SHOPSTREAM_QUALITY__SCHEDULE_MINUTES="0"),
            cwd=data_dir,
            capture_output=True,
            timeout=120,
        )
        return wait_until_scraped(f"{collector.url}/metrics", "shopstream_quality_check_status")
    finally:
        assert collector.stop() == 0, collector.log()


def run_cdc(server: Any, data_dir: Path) -> dict[str, Any]:
    dbname = f"metrics_{uuid.uuid4().hex[:8]}"
    dsn = server.create_database(dbname)
    data_dir.mkdir(parents=True)
    port = free_port()
    process = None
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (order_id int PRIMARY KEY, total numeric)")
        process = cdc_process(
            dsn,
            data_dir,
            SHOPSTREAM_CDC__SNAPSHOT_MODE="never",
            SHOPSTREAM_CDC__METRICS_PORT=str(port),
            SHOPSTREAM_COLLECTOR__HOST="127.0.0.1",
            SHOPSTREAM_CDC__STATUS_INTERVAL_SECONDS="0.2",
        )
        wait_streaming(dsn, process)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO orders SELECT g, g FROM generate_series(1, 10) g")
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until_scraped(url, "shopstream_cdc_changes_total")
        # The slot's gauges are set at the next status round (unlabelled, they print 0 before).
        wait_for(
            lambda: any(v > 0 for _, v in scrape(url)["shopstream_cdc_slot_retained_wal_bytes"]),
            "the slot's retained WAL reported",
        )
        return scrape(url)
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        drop_database(server, dbname)


def run_loader(broker: Any, data_dir: Path) -> dict[str, Any]:
    topics = Topics(f"metrics-{uuid.uuid4().hex[:6]}")
    create_topics(broker.bootstrap, [topics.events], partitions=1)
    rows = [event_row(f"m-{i}", anonymous_id="a-1", session_id="s-1") for i in range(5)]
    poison = Message(topics.events, b"k", b"{this is not json", {})
    produce(broker.bootstrap, [*encode("events", rows, topics), poison])
    port = free_port()
    loader = LoaderProcess(
        data_dir,
        broker.url,
        prefix=topics.prefix,
        SHOPSTREAM_LOADER__METRICS_PORT=str(port),
        SHOPSTREAM_COLLECTOR__HOST="127.0.0.1",
    ).start()
    try:
        loader.wait_for("SELECT count(*) AS n FROM raw.events", 5)
        # (the loader counts poison in shopstream_loader_poison_messages_total, not as dead
        # letters: shopstream_dead_letters_total comes from the collector and CDC)
        return wait_until_scraped(
            f"http://127.0.0.1:{port}/metrics", "shopstream_loader_rows_total", table="events"
        )
    finally:
        loader.kill()


def run_pushgateway(tmp_path: Path) -> dict[str, Any]:
    gateway = start_pushgateway(tmp_path)
    pushgateway = next(gateway)
    try:
        env = _env(
            SHOPSTREAM_DATA_DIR=str(tmp_path),
            SHOPSTREAM_OBSERVABILITY__PUSHGATEWAY_URL=pushgateway.url,
        )
        for pipeline, outcome in [("transform", "success"), ("transform", "failed")]:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "shopstream",
                    "record-run",
                    pipeline,
                    "--outcome",
                    outcome,
                    "--reason",
                    "test_metric_names",
                ],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        return scrape(f"{pushgateway.url}/metrics")
    finally:
        gateway.close()


@pytest.fixture(scope="module")
def components(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, dict[str, Any]]:
    """component -> its /metrics samples, each from a real process (started side by side:
    most of their time is start-up)."""
    server = request.getfixturevalue("postgres_server")
    broker = request.getfixturevalue("kafka_broker")
    runs = {
        "collector": lambda: run_collector(tmp_path_factory.mktemp("collector")),
        "pushgateway": lambda: run_pushgateway(tmp_path_factory.mktemp("pushgateway")),
        "cdc": lambda: run_cdc(server, tmp_path_factory.mktemp("cdc") / "data"),
        "loader": lambda: run_loader(broker, tmp_path_factory.mktemp("loader")),
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {name: pool.submit(run) for name, run in runs.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def emitted(components: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """sample name -> the components that emit it."""
    names: dict[str, set[str]] = {}
    for component, samples in components.items():
        for name in samples:
            names.setdefault(name, set()).add(component)
    return names


#: Unlabelled gauges the alerts read, and the component that sets each. Every process exports
#: every unlabelled gauge of the shared registry, at 0 until its code sets it: a collector
#: prints shopstream_cdc_slot_retained_wal_bytes 0. So 0 proves nothing; the owner must report
#: a value its code set (non-zero).
SET_BY = {
    "shopstream_sink_queue_limit_rows": "collector",
    "shopstream_cdc_slot_retained_wal_bytes": "cdc",
    "shopstream_cdc_replication_lag_seconds": "cdc",
}
#: Unlabelled gauges whose true value at rest is 0, so a running component cannot prove it set
#: them; each with the reason an alert may still read it.
ZERO_AT_REST = {
    "shopstream_sink_queue_rows": "an idle sink's queue is empty; SinkBackPressure divides it by "
    "shopstream_sink_queue_limit_rows (> 0 only once a sink set it, checked in SET_BY)",
    "shopstream_cdc_replication_lag_bytes": "0 once the reader confirmed all WAL; "
    "CdcReplicationLagHigh needs it *and* shopstream_cdc_replication_lag_seconds (in SET_BY)",
}
#: Alerts that can fire on one transport only, and why. Nothing else may read these gauges.
TRANSPORT_SPECIFIC = {
    "LoaderConsumerLagHigh": (
        "shopstream_loader_lag_messages",
        "Kafka only: loader/kafka.py lag() sets it; a Pub/Sub loader never does (the gauge "
        "stays 0) and Cloud Monitoring alerts on the subscription's backlog instead. The test "
        "loader (Kafka) has caught up, so its 0 is true but cannot prove the gauge is set.",
    ),
}


def _unlabelled_gauges() -> set[str]:
    """The registry's gauges without labels (those print a sample, 0, before anything sets
    them)."""
    from shopstream.observability.metrics import REGISTRY

    return {
        m.name
        for m in REGISTRY.collect()
        if m.type == "gauge" and m.samples and all(not s.labels for s in m.samples)
    }


def unemitted(names: set[str], emitted: dict[str, set[str]], external: bool) -> list[str]:
    allowed = EXTERNAL if external else {}
    return sorted(n for n in names if n not in emitted and n not in allowed)


ALERTS = _alerts()


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_every_metric_an_alert_names_is_emitted(alert: str, emitted: dict[str, set[str]]) -> None:
    names = promql.metric_names(ALERTS[alert])
    assert names, f"{alert} names no metric"
    missing = unemitted(names, emitted, external=True)
    assert not missing, f"{alert} reads metrics no running component emits: {missing}"


def test_unlabelled_gauges_in_alerts_are_proven_set_or_listed_with_a_reason(
    components: dict[str, dict[str, Any]],
) -> None:
    """A gauge every process prints at 0 is not "emitted" by the one that should set it."""
    transport_gauges = {gauge for gauge, _ in TRANSPORT_SPECIFIC.values()}
    for alert, expr in ALERTS.items():
        for name in promql.metric_names(expr) & _unlabelled_gauges():
            if name in transport_gauges:
                assert alert in TRANSPORT_SPECIFIC, (
                    f"{alert} reads {name}, which only one transport sets: "
                    "make it work from metrics every transport reports"
                )
                continue
            assert name in SET_BY or name in ZERO_AT_REST, (
                f"{alert} reads the unlabelled gauge {name}: say in SET_BY which component "
                "sets it (the test wants a non-zero value), or why 0 is its rest value"
            )
    for name, owner in SET_BY.items():
        values = [v for _, v in components[owner].get(name, [])]
        assert values and all(v != 0 for v in values), (name, owner, values)


def test_the_external_metrics_are_the_documented_ones() -> None:
    used = set().union(*(promql.metric_names(e) for e in ALERTS.values()))
    assert {n for n in used if not n.startswith("shopstream_")} <= set(EXTERNAL)


def test_the_adapter_rule_reads_an_emitted_metric(emitted: dict[str, set[str]]) -> None:
    names = set().union(*(promql.metric_names(q) for q in _adapter_queries()))
    assert names == {"shopstream_collector_request_seconds_count"}
    assert unemitted(names, emitted, external=False) == []
    assert "collector" in emitted["shopstream_collector_request_seconds_count"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_dashboard_query_names_emitted_metrics(
    path: Path, emitted: dict[str, set[str]]
) -> None:
    for expr in _dashboard_queries(path):
        names = promql.metric_names(expr)
        assert names, f"{path.name}: {expr!r} names no metric"
        assert unemitted(names, emitted, external=False) == [], f"{path.name}: {expr!r}"


def test_the_new_operations_metrics_carry_real_values(
    components: dict[str, dict[str, Any]],
) -> None:
    """Declared is not wired: an unlabelled gauge prints 0 before anything sets it."""
    collector = components["collector"]
    assert has(collector, "shopstream_collector_responses_total", status="2xx")
    assert has(collector, "shopstream_collector_responses_total", status="4xx")
    limits = [v for _, v in collector.get("shopstream_sink_queue_limit_rows", [])]
    assert limits and all(v > 0 for v in limits), limits
    # Both writers of raw report it: the collector's warehouse sink (one machine) and the
    # loader's (production: Pub/Sub -> loader -> BigQuery).
    for writer in ("collector", "loader"):
        newest = [
            v
            for ls, v in components[writer].get(
                "shopstream_raw_newest_record_timestamp_seconds", []
            )
            if ls.get("table") == "events"
        ]
        assert newest and max(newest) > time.time() - 3600, (writer, newest)
    pushed = components["pushgateway"]
    for name in (
        "shopstream_pipeline_last_success_timestamp_seconds",
        "shopstream_pipeline_last_failure_timestamp_seconds",
    ):
        assert has(pushed, name, job="shopstream_pipeline", pipeline="transform"), name
