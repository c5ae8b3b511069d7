"""The quality run end to end: `shopstream quality run` as a user runs it (a subprocess) on a
real DuckDB file with nothing running, and against a running platform (a real collector
process) over its local query socket; results in monitoring.data_quality_checks, the report in
monitoring.data_quality_reports, exit codes, formats, the schedule, the metrics.

The checks are business rules (kind ``rule``) on raw.events in a checks file of the test's own,
with every default check disabled, so that the verdicts are known: search events break a
failing rule, app opens a warning one, purchases (there are none) a passing one. No LLM is
configured: the deterministic analyst writes the report.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import yaml

from shopstream.quality.evidence import gather_evidence
from shopstream.quality.results import CHECKS_SCHEMA
from shopstream.quality.spec import load_config
from shopstream.quality.store import REPORTS_SCHEMA
from shopstream.runtime import read_runtime
from shopstream.warehouse.duckdb.database import DuckDBWarehouse
from shopstream.warehouse.duckdb.query_endpoint import QUALITY_ROUTE
from tests.support.collector import CollectorProcess
from tests.support.pushgateway import Pushgateway, pushgateway  # noqa: F401
from tests.support.rows import events_table

NOW = "2026-12-01T10:00:00+00:00"
FAILING = "raw.events.no_search"
WARNING = "raw.events.few_app_opens"
PASSING = "raw.events.no_purchases"


def checks_yaml() -> str:
    defaults = [check.name for check in load_config(None).checks()]
    return f"""
tables:
  raw.events:
    time_column: event_ts
    landed_column: received_at
    key: [event_id]
    checks:
      - kind: rule
        name: {FAILING}
        description: no search events (the test's failing rule)
        sql: SELECT event_id, event_type, ip FROM raw.events WHERE event_type = 'search'
      - kind: rule
        name: {WARNING}
        description: app opens stay few (the test's warning rule)
        sql: SELECT event_id FROM raw.events WHERE event_type = 'app_open'
        warn_rows: 0
        fail_rows: 100
      - kind: rule
        name: {PASSING}
        description: no purchases here (the test's passing rule)
        sql: SELECT event_id FROM raw.events WHERE event_type = 'purchase'
disable: {json.dumps(defaults)}
"""


def seed_warehouse(data_dir: Path) -> Path:
    """raw.events with 3 searches (one with an IP), 2 app opens, 4 page views; 2 dead letters."""
    data_dir.mkdir(parents=True, exist_ok=True)
    checks = data_dir / "checks.yml"
    checks.write_text(checks_yaml())
    warehouse = DuckDBWarehouse(data_dir / "shopstream.duckdb")
    try:
        warehouse.ensure_layers()
        searches = events_table("s-1", "s-2", event_type="search")
        warehouse.append({"events": searches})
        warehouse.append({"events": events_table("s-3", event_type="search", ip="203.0.113.9")})
        warehouse.append({"events": events_table("a-1", "a-2", event_type="app_open")})
        warehouse.append({"events": events_table("p-1", "p-2", "p-3", "p-4")})
    finally:
        warehouse.close()
    return checks


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPSTREAM_", "RUNNER_TEST_"))}
    env.update(
        {
            "SHOPSTREAM_DATA_DIR": str(data_dir),
            "SHOPSTREAM_QUALITY__CHECKS_FILE": str(data_dir / "checks.yml"),
            # Wide enough that a row of the table or an error stays on one line.
            "COLUMNS": "200",
            **extra,
        }
    )
    return env


def quality(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopstream", "quality", "run", *args],
        env=env or env_for(data_dir),
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def rows(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(data_dir / "shopstream.duckdb"), read_only=True)
    try:
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse with nothing running on it."""
    data_dir = tmp_path_factory.mktemp("quality-idle")
    seed_warehouse(data_dir)
    return data_dir


# -- with nothing running ---------------------------------------------------------------------


def test_a_failed_check_exits_1_and_its_rows_and_report_are_stored(idle: Path) -> None:
    done = quality(idle, "--format", "json", "--now", NOW)
    assert done.returncode == 1, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    run = answer["run"]
    status = {c["name"]: c["status"] for c in run["checks"]}
    assert status == {FAILING: "fail", WARNING: "warn", PASSING: "pass"}
    assert run["checked_at"] == NOW
    stored = rows(
        idle,
        f"SELECT * FROM monitoring.data_quality_checks WHERE run_id = '{run['run_id']}' "
        "ORDER BY check_name",
    )
    assert [r["check_name"] for r in stored] == sorted(status)
    assert list(stored[0]) == CHECKS_SCHEMA.names
    failing = next(r for r in stored if r["check_name"] == FAILING)
    assert failing["status"] == "fail" and failing["observed"] == 3.0
    assert failing["kind"] == "rule" and failing["table_name"] == "raw.events"
    assert failing["checked_at"] == datetime.fromisoformat(NOW)
    assert failing["unit"] == "rows" and failing["severity"] == "high"
    evidence = json.loads(failing["evidence"])
    assert {e["event_id"] for e in evidence} == {"s-1", "s-2", "s-3"}
    assert "203.0.113.9" not in failing["evidence"]  # redacted before it is stored
    assert json.loads(failing["details"])["offending_rows"] == 3
    # The report: in the answer and in monitoring.data_quality_reports, beside the rows.
    report = answer["report"]
    assert report is not None and report["run_id"] == run["run_id"]
    assert report["analyst"] == "deterministic"
    assert {f["check"] for f in report["findings"]} >= {FAILING, WARNING}
    [kept] = rows(
        idle, f"SELECT * FROM monitoring.data_quality_reports WHERE run_id = '{run['run_id']}'"
    )
    assert list(kept) == REPORTS_SCHEMA.names
    assert kept["analyst"] == "deterministic" and FAILING in kept["markdown"]
    assert json.loads(kept["report"])["findings"] == report["findings"]
    assert json.loads(kept["usage"]) == report["usage"]


def test_warnings_do_not_fail_the_command(idle: Path) -> None:
    warned = quality(idle, "--select", WARNING, "--format", "json", "--now", NOW)
    assert warned.returncode == 0, warned.stdout + warned.stderr
    answer = json.loads(warned.stdout)
    assert [c["status"] for c in answer["run"]["checks"]] == ["warn"]
    assert answer["report"] is not None  # a warning is worth a report
    reports = len(rows(idle, "SELECT run_id FROM monitoring.data_quality_reports"))
    passed = quality(idle, "--select", PASSING, "--format", "json", "--now", NOW)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    answer = json.loads(passed.stdout)
    assert [c["status"] for c in answer["run"]["checks"]] == ["pass"]
    assert answer["report"] is None  # nothing to analyse, no report row
    assert len(rows(idle, "SELECT run_id FROM monitoring.data_quality_reports")) == reports


def test_the_table_and_markdown_formats(idle: Path) -> None:
    table = quality(idle, "--now", NOW)
    assert table.returncode == 1, table.stdout + table.stderr
    lines = table.stdout.splitlines()
    row = next(line for line in lines if FAILING in line)
    assert "fail" in row and "3 rows vs 0" in row and "break the rule" in row
    # Worst first, and the report after the table.
    assert table.stdout.index(FAILING) < table.stdout.index(WARNING)
    assert table.stdout.index(WARNING) < table.stdout.index(PASSING)
    assert "Data quality report" in table.stdout
    assert table.stdout.index(PASSING) < table.stdout.index("Data quality report")
    assert "1 pass, 1 warn, 1 fail" in table.stdout
    markdown = quality(idle, "--format", "markdown", "--now", NOW)
    assert markdown.returncode == 1
    assert "| status | check | observed vs expected | message |" in markdown.stdout
    assert f"| fail | {FAILING} | 3 rows vs 0 |" in markdown.stdout
    assert "# Data quality report (run " in markdown.stdout


def test_usage_errors_exit_2(idle: Path, tmp_path: Path) -> None:
    for args, says in (
        (("--format", "xml"), "table, json, markdown"),
        (("--now", "yesterday"), "ISO 8601"),
        (("--now", "2026-12-01T10:00:00"), "time zone"),
    ):
        done = quality(idle, *args)
        assert done.returncode == 2, (args, done.stdout + done.stderr)
        assert says in done.stderr, done.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("tables:\n  raw.events:\n    checks:\n      - kind: rule\n    colour: red\n")
    done = quality(idle, env=env_for(idle, SHOPSTREAM_QUALITY__CHECKS_FILE=str(broken)))
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(broken) in done.stderr and "colour" in done.stderr


def test_the_evidence_has_the_trend_related_checks_and_dead_letter_reasons(idle: Path) -> None:
    quality(idle, "--select", FAILING, "--now", NOW)  # an earlier run, at the pinned time
    first = json.loads(quality(idle, "--select", FAILING, "--format", "json").stdout)["run"]
    second = json.loads(quality(idle, "--select", "raw.events.", "--format", "json").stdout)
    warehouse = DuckDBWarehouse(idle / "shopstream.duckdb")
    try:
        warehouse.append(
            {
                "dead_letter": _dead_letters(
                    ("invalid_json", "collector"), ("invalid_json", "collector"), ("bad", "cdc")
                )
            }
        )
        from shopstream.quality.runs import QualityRun

        run = QualityRun.from_dict(second["run"])
        evidence = gather_evidence(
            warehouse.query,
            run.results,
            run_id=run.run_id,
            checked_at=datetime.now(UTC),
            pipeline={"cdc": {"state": "not configured"}},
        )
    finally:
        warehouse.close()
    by_check = {e.result["check"]: e for e in evidence.checks}
    assert set(by_check) == {FAILING, WARNING}  # only what alarms
    trend = by_check[FAILING].trend
    # Earlier runs of the same check, newest first; this run's own row is not its trend.
    assert trend[0]["checked_at"] == first["checked_at"]
    assert all(t["status"] == "fail" and t["observed"] == 3.0 for t in trend)
    assert run.run_id not in json.dumps(trend)
    assert len(trend) >= 2 and trend[-1]["checked_at"] == NOW  # the older run last
    related = {r["check"]: r["status"] for r in by_check[FAILING].related}
    assert related == {WARNING: "warn", PASSING: "pass"}
    assert evidence.dead_letter_reasons[0] == {
        "reason": "invalid_json",
        "source": "collector",
        "count": 2,
    }
    assert evidence.pipeline == {"cdc": {"state": "not configured"}}


def _dead_letters(*reasons: tuple[str, str]) -> Any:
    import pyarrow as pa

    from shopstream.events.raw import schema_for

    now = datetime.now(UTC)
    return pa.Table.from_pylist(
        [
            {
                "dead_letter_id": f"d-{i}",
                "source": source,
                "reason": reason,
                "payload": "{",
                "context": "{}",
                "received_at": now,
            }
            for i, (reason, source) in enumerate(reasons)
        ],
        schema=schema_for("dead_letter"),
    )


def test_a_disabled_check_leaves_the_metrics(tmp_path: Path) -> None:
    """A failing check that is then disabled must not keep its alert firing: after a full run
    its label sets are gone; a run of some checks (``select``) leaves the others' alone."""
    from shopstream.config import Settings
    from shopstream.observability.metrics import REGISTRY
    from shopstream.quality.runs import QualityRequest, run_on

    checks = seed_warehouse(tmp_path)
    settings = Settings(data_dir=tmp_path, quality={"checks_file": checks})
    now = datetime.fromisoformat(NOW)

    def status(check: str, value: str) -> float | None:
        labels = {"check": check, "table": "raw.events", "kind": "rule", "status": value}
        return REGISTRY.get_sample_value("shopstream_quality_check_status", labels)

    def observed(check: str) -> float | None:
        labels = {"check": check, "table": "raw.events", "kind": "rule"}
        return REGISTRY.get_sample_value("shopstream_quality_check_observed", labels)

    warehouse = DuckDBWarehouse(tmp_path / "shopstream.duckdb")
    try:
        assert run_on(warehouse, settings, QualityRequest(now=now)).error is None
        assert status(FAILING, "fail") == 1.0 and observed(FAILING) == 3.0
        # Only the warning rule runs: the failing one's labels stay (it was not judged).
        assert run_on(warehouse, settings, QualityRequest((WARNING,), now)).error is None
        assert status(FAILING, "fail") == 1.0 and observed(FAILING) == 3.0
        # The failing rule disabled: the next full run drops its labels, keeps the others'.
        config = yaml.safe_load(checks.read_text())
        config["disable"].append(FAILING)
        checks.write_text(yaml.safe_dump(config))
        assert run_on(warehouse, settings, QualityRequest(now=now)).error is None
    finally:
        warehouse.close()
    for each in ("pass", "warn", "fail", "error", "learning"):
        assert status(FAILING, each) is None, each
    assert observed(FAILING) is None
    assert status(WARNING, "warn") == 1.0 and observed(WARNING) == 2.0
    assert status(PASSING, "pass") == 1.0


# -- a running platform -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    data_dir = tmp_path_factory.mktemp("quality-running")
    seed_warehouse(data_dir)
    process = CollectorProcess(
        data_dir,
        env={
            "SHOPSTREAM_QUALITY__CHECKS_FILE": str(data_dir / "checks.yml"),
            # 1.2 s: the schedule is seen within the test.
            "SHOPSTREAM_QUALITY__SCHEDULE_MINUTES": "0.02",
            "SHOPSTREAM_TRANSFORM__SCHEDULE_MINUTES": "0",
        },
    )
    process.start()
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log(), process.log()
    if "quality run started" in process.log():  # (a run of -k route alone stops before)
        # The closing status line shows the last quality run.
        assert "quality   last" in process.log() and "1 fail" in process.log()


def test_the_platform_runs_the_checks_on_its_schedule(running: CollectorProcess) -> None:
    deadline = time.monotonic() + 60
    # Two runs stored, rows and report: the schedule goes on after the first.
    while True:
        try:
            [counts] = running.query(
                "SELECT (SELECT count(DISTINCT run_id) FROM monitoring.data_quality_checks) "
                "AS runs, (SELECT count(*) FROM monitoring.data_quality_reports) AS reports, "
                "(SELECT count(*) FROM monitoring.data_quality_reports WHERE run_id NOT IN "
                " (SELECT run_id FROM monitoring.data_quality_checks)) AS orphans"
            )
        except RuntimeError as exc:  # the first run's store creates the tables
            if "does not exist" not in str(exc):
                raise
            counts = {"runs": 0, "reports": 0}
        if counts["runs"] >= 2 and counts["reports"] >= 2:
            break
        assert time.monotonic() < deadline, (counts, running.log())
        time.sleep(0.3)
    assert running.log().count("quality run started (schedule)") >= 2
    # Every run had a failing check, so every run has its report beside its rows (the rows
    # are stored first: a run may be between the two).
    assert counts["reports"] in (counts["runs"], counts["runs"] - 1), counts
    assert counts["orphans"] == 0


def test_the_command_asks_the_running_platform(
    running: CollectorProcess,
    pushgateway: Pushgateway,  # noqa: F811
) -> None:
    done = quality(
        running.data_dir,
        "--format",
        "json",
        env=env_for(
            running.data_dir,
            SHOPSTREAM_QUALITY__SCHEDULE_MINUTES="0",
            SHOPSTREAM_OBSERVABILITY__PUSHGATEWAY_URL=pushgateway.url,
        ),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    # The platform ran them and serves their gauges on its /metrics: the command pushes none.
    for name in (
        "shopstream_quality_check_status",
        "shopstream_quality_last_run_timestamp_seconds",
    ):
        assert not pushgateway.samples(name), name
    run_id = json.loads(done.stdout)["run"]["run_id"]
    assert "quality run started (request)" in running.log()
    assert running.query(
        f"SELECT check_name, status FROM monitoring.data_quality_checks WHERE run_id = '{run_id}' "
        "ORDER BY check_name"
    ) == [
        {"check_name": WARNING, "status": "warn"},  # few_app_opens
        {"check_name": PASSING, "status": "pass"},  # no_purchases
        {"check_name": FAILING, "status": "fail"},  # no_search
    ]
    # While events keep arriving: the checks only read.
    response = httpx.post(
        f"{running.url}/v1/events",
        json=event_json("page_view"),
        timeout=30,
    )
    assert response.status_code == 200, response.text


def event_json(event_type: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "anonymous_id": "a-1",
        "session_id": "s-1",
        "event_ts": datetime.now(UTC).isoformat(),
        "device_type": "web_desktop",
    }


def test_metrics_per_check(running: CollectorProcess) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + 60
    # Poll until a run has set the metrics (a finished run counts itself last).
    while True:
        text = httpx.get(f"{running.url}/metrics", timeout=30).text
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        if samples.get(("shopstream_quality_runs_total", (("outcome", "alarm"),)), 0) >= 1:
            break
        assert time.monotonic() < deadline, running.log()
        time.sleep(0.2)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    failing = {"check": FAILING, "table": "raw.events", "kind": "rule"}
    # One-hot: 1 for the latest status, 0 for every other.
    assert value("shopstream_quality_check_status", **failing, status="fail") == 1.0
    for other in ("pass", "warn", "error", "learning"):
        assert value("shopstream_quality_check_status", **failing, status=other) == 0.0
    assert value("shopstream_quality_check_observed", **failing) >= 3.0  # rows break the rule
    warning = {"check": WARNING, "table": "raw.events", "kind": "rule"}
    assert value("shopstream_quality_check_status", **warning, status="warn") == 1.0
    assert value("shopstream_quality_check_observed", **warning) == 2.0
    assert value("shopstream_quality_runs_total", outcome="alarm") >= 1
    # Labels come from the configuration only: these three checks, nothing else.
    checks = {
        dict(labels)["check"]
        for name, labels in samples
        if name.startswith("shopstream_quality_check_")
    }
    assert checks == {FAILING, WARNING, PASSING}


def test_the_quality_route_refuses_without_the_token_before_reading_the_body(
    running: CollectorProcess,
) -> None:
    runtime = read_runtime(running.data_dir)
    assert runtime is not None
    # A stranger announces a body (within the size cap, so only the token can refuse it) and
    # sends none of it: the refusal comes without waiting for the body.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(runtime["socket"])
    sock.sendall(
        f"POST {QUALITY_ROUTE} HTTP/1.1\r\nhost: shopstream\r\n"
        "content-type: application/json\r\nauthorization: Bearer wrong\r\n"
        f"content-length: {100 * 2**10}\r\n\r\n".encode()
    )
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    transport = httpx.HTTPTransport(uds=runtime["socket"])
    with httpx.Client(transport=transport, base_url="http://shopstream", timeout=30) as client:
        assert client.post(QUALITY_ROUTE, json={}).status_code == 401
        token = {"Authorization": f"Bearer {runtime['token']}"}
        bad = client.post(QUALITY_ROUTE, json={"select": [], "purge": True}, headers=token)
        assert bad.status_code == 400 and "purge" in bad.json()["error"]
        naive = client.post(QUALITY_ROUTE, json={"now": "2026-12-01T10:00:00"}, headers=token)
        assert naive.status_code == 400 and "time zone" in naive.json()["error"]
    # The collector's public port has no such route.
    assert httpx.post(f"{running.url}{QUALITY_ROUTE}", json={}, timeout=10).status_code == 404


# -- the end of `shopstream run` ----------------------------------------------------------------

PROJECT = Path(__file__).parents[1] / "support" / "dbt_project"


def test_shopstream_run_ends_with_the_quality_report(tmp_path: Path) -> None:
    from tests.support.collector import free_port

    seed_warehouse(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shopstream",
            "run",
            "--duration",
            "2",
            *("--port", str(free_port())),
        ],
        env=env_for(
            tmp_path,
            SHOPSTREAM_TRANSFORM__PROJECT_DIR=str(PROJECT),
            SHOPSTREAM_QUALITY__SCHEDULE_MINUTES="0",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # The checks' verdict is the report's: a failed check does not fail the run.
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    output = done.stdout
    # Ingest drained -> transform -> quality run, the report last, after the marts.
    assert "events_by_type" in output  # the transform's table
    assert output.index("events_by_type") < output.index("data quality")
    assert output.index("data quality") < output.index("Data quality report")
    assert FAILING in output[output.index("Data quality report") :]
    # What needs a person is listed; the passing checks are counted.
    assert PASSING not in output and "1 pass, 1 warn, 1 fail" in output
    assert "quality run" in done.stderr and "running the quality checks" in done.stderr
    [stored] = rows(
        tmp_path, "SELECT count(DISTINCT run_id) AS n FROM monitoring.data_quality_checks"
    )
    assert stored["n"] == 1
