"""Transforms where the platform runs: a real collector process owning the DuckDB file through
its writer process, the test dbt project (tests/support/dbt_project), and `shopstream transform`
as a user runs it, against the running platform and with nothing running."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from shopstream.runtime import read_runtime, transform_running
from shopstream.transform.runner import Progress, TransformRequest
from shopstream.warehouse.duckdb.database import DuckDBWarehouse
from shopstream.warehouse.duckdb.query_endpoint import TRANSFORM_ROUTE
from tests.support.collector import CollectorProcess
from tests.support.rows import events_table

PROJECT = Path(__file__).parents[1] / "support" / "dbt_project"


def platform_env(**extra: str) -> dict[str, str]:
    return {
        "SHOPSTREAM_TRANSFORM__PROJECT_DIR": str(PROJECT),
        "SHOPSTREAM_TRANSFORM__SCHEDULE_MINUTES": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    # slow_copy burns ~1 s of CPU: long enough to send events while dbt builds.
    process = CollectorProcess(
        tmp_path_factory.mktemp("transform"), env=platform_env(RUNNER_TEST_SLOW_ROWS="9000")
    )
    process.start()
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log(), process.log()


def event(event_type: str = "page_view") -> dict[str, Any]:
    return {
        "event_type": event_type,
        "event_id": str(uuid.uuid4()),
        "anonymous_id": "a-1",
        "session_id": "s-1",
        "event_ts": "2026-11-27T10:00:00Z",
        "device_type": "web_desktop",
    }


def cli(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("SHOPSTREAM_", "RUNNER_TEST_"))
    }
    environment.update({"SHOPSTREAM_DATA_DIR": str(data_dir), **platform_env(), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "shopstream", "transform", *args],
        env=environment,
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )


def scalar(process: CollectorProcess, sql: str) -> Any:
    [row] = process.query(sql)
    return next(iter(row.values()))


def test_shopstream_transform_asks_the_running_platform(running: CollectorProcess) -> None:
    for kind in ("page_view", "page_view", "app_open"):
        assert (
            httpx.post(f"{running.url}/v1/events", json=event(kind), timeout=30).status_code == 200
        )
    raw = scalar(running, "SELECT count(*) FROM raw.events")
    done = cli(running.data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "events_by_type" in done.stdout and "slow_copy" in done.stdout
    # The test project's four models, and the pipeline_freshness every project gets.
    assert "5 of 5 models built; tests: 8 passed, 0 failed" in done.stderr
    assert scalar(running, "SELECT events FROM mart.event_total") == raw
    assert "transform (request) done" in running.log()
    salt = (running.data_dir / "email_salt").read_text().strip()
    assert salt not in done.stdout + done.stderr and salt not in running.log()


def test_ingest_keeps_committing_while_the_writer_process_builds(running: CollectorProcess) -> None:
    """dbt runs in the writer process (the platform's own process never opens the file: a
    second opener would fail on DuckDB's lock), in a thread beside the appends."""
    sent: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                began = time.monotonic()
                status = client.post(f"{running.url}/v1/events", json=event()).status_code
                sent.append((began, time.monotonic(), status))
                time.sleep(0.01)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        time.sleep(0.3)
        steps: list[tuple[float, Progress]] = []
        result = transform_running(
            running.data_dir, TransformRequest(), lambda p: steps.append((time.monotonic(), p))
        )
        ended = time.monotonic()
        time.sleep(0.2)
    finally:
        stop.set()
        sender.join()
    assert result.success, result.failures()
    slow = [at for at, p in steps if p.node == "slow_copy" and p.kind == "started"]
    assert slow, steps
    during = [s for s in sent if slow[0] <= s[1] <= ended]
    assert all(status == 200 for _, _, status in sent)
    assert len(during) >= 5, f"only {len(during)} events committed during the build"
    # The rows that arrived meanwhile are all in raw, and the next transform sees every one.
    raw = scalar(running, "SELECT count(*) FROM raw.events")
    assert raw >= len(sent)
    again = transform_running(running.data_dir, TransformRequest(select=("stg_test_events+",)))
    assert again.success, again.failures()
    assert scalar(running, "SELECT events FROM mart.event_total") == raw


def test_a_writer_dying_mid_build_fails_the_transform_not_the_platform(
    running: CollectorProcess,
) -> None:
    assert running.process is not None
    # The writer, not multiprocessing's resource tracker.
    [writer] = [
        child
        for child in psutil.Process(running.process.pid).children()
        if "spawn_main" in " ".join(child.cmdline())
    ]
    killed = threading.Event()

    def kill_in_slow_copy(step: Progress) -> None:
        if step.node == "slow_copy" and step.kind == "started" and not killed.is_set():
            time.sleep(0.3)
            writer.kill()
            killed.set()

    result = transform_running(running.data_dir, TransformRequest(), kill_in_slow_copy)
    assert killed.is_set()
    assert not result.success and result.error is not None
    assert "writer process" in result.error, result.error
    # Ingest comes back with the restarted writer, and so do transforms.
    deadline = time.monotonic() + 60
    while httpx.post(f"{running.url}/v1/events", json=event(), timeout=30).status_code != 200:
        assert time.monotonic() < deadline, running.log()
        time.sleep(0.2)
    again = transform_running(running.data_dir, TransformRequest())
    assert again.success, again.failures()
    assert scalar(running, "SELECT events FROM mart.event_total") == scalar(
        running, "SELECT count(*) FROM raw.events"
    )
    assert "transform (request) failed" in running.log()


def test_the_transform_route_wants_the_token_and_a_valid_body(running: CollectorProcess) -> None:
    runtime = read_runtime(running.data_dir)
    assert runtime is not None
    transport = httpx.HTTPTransport(uds=runtime["socket"])
    with httpx.Client(transport=transport, base_url="http://shopstream", timeout=30) as client:
        refused = client.post(TRANSFORM_ROUTE, json={})
        assert refused.status_code == 401
        bad = client.post(
            TRANSFORM_ROUTE,
            json={"full_refresh": True, "drop_everything": True},
            headers={"Authorization": f"Bearer {runtime['token']}"},
        )
        assert bad.status_code == 400 and "drop_everything" in bad.json()["error"]
    # The collector's public port has no such route.
    assert httpx.post(f"{running.url}{TRANSFORM_ROUTE}", json={}, timeout=10).status_code == 404


def test_with_nothing_running_the_command_runs_it_itself(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "shopstream.duckdb")
    warehouse.ensure_layers()
    warehouse.append({"events": events_table("a", "b", "c", event_type="search")})
    warehouse.close()
    done = cli(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # dbt ran in this command's process: none of its console output came through.
    assert "Running with dbt" not in done.stdout + done.stderr
    assert (tmp_path / "email_salt").read_text().strip() not in done.stdout + done.stderr
    warehouse = DuckDBWarehouse(tmp_path / "shopstream.duckdb", read_only=True)
    try:
        assert warehouse.query("SELECT * FROM mart.events_by_type").to_pylist() == [
            {"event_type": "search", "events": 3}
        ]
    finally:
        warehouse.close()
    broken = cli(tmp_path, "--select", "slow_copy+", env={"RUNNER_TEST_BREAK_MODEL": "yes"})
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "model slow_copy:" in broken.stderr and "no_such_table_on_purpose" in broken.stderr
    assert "0 of 1 models built" in broken.stderr


def test_the_running_platform_transforms_on_its_schedule(tmp_path: Path) -> None:
    """Without a writer process (sink.writer_process=false) the platform's own process holds
    the file, and the transform runs in a thread of it."""
    process = CollectorProcess(
        tmp_path,
        env=platform_env(
            SHOPSTREAM_TRANSFORM__SCHEDULE_MINUTES="0.02", SHOPSTREAM_SINK__WRITER_PROCESS="false"
        ),
    )
    process.start()
    try:
        assert (
            httpx.post(f"{process.url}/v1/events", json=event("app_open"), timeout=30).status_code
            == 200
        )
        deadline = time.monotonic() + 120
        while "transform (schedule) done" not in process.log():
            assert time.monotonic() < deadline, process.log()
            assert "transform (schedule) failed" not in process.log(), process.log()
            time.sleep(0.2)
        assert process.query("SELECT * FROM mart.events_by_type") == [
            {"event_type": "app_open", "events": 1}
        ]
    finally:
        assert process.stop() == 0, process.log()
    # The closing status shows the last transform.
    assert "transform last" in process.log() and " ok: 5/5 models built" in process.log()
