"""A SIGKILL of the platform in the middle of a transform: DuckDB's transactional DDL leaves
every model either as it was or as it was rebuilt (never half-built), raw keeps every row it
acknowledged, and the next run completes."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

from shopstream.config import Settings
from shopstream.runtime import transform_running
from shopstream.transform.runner import Progress, TransformRequest
from shopstream.transform.runs import transform_warehouse
from shopstream.warehouse.duckdb.database import DuckDBWarehouse
from tests.support.collector import CollectorProcess
from tests.support.rows import events_table

PROJECT = Path(__file__).parents[1] / "support" / "dbt_project"


def env(**extra: str) -> dict[str, str]:
    return {
        "SHOPSTREAM_TRANSFORM__PROJECT_DIR": str(PROJECT),
        "SHOPSTREAM_TRANSFORM__SCHEDULE_MINUTES": "0",
        **extra,
    }


def read(path: Path, sql: str) -> list[dict[str, Any]]:
    warehouse = DuckDBWarehouse(path, read_only=True)
    try:
        return warehouse.query(sql).to_pylist()
    finally:
        warehouse.close()


def total(path: Path, table: str) -> int:
    [row] = read(path, f"SELECT coalesce(sum(events), 0)::BIGINT AS n FROM {table}")
    return int(row["n"])


def test_a_kill_during_a_build_leaves_a_state_the_next_run_completes(tmp_path: Path) -> None:
    path = tmp_path / "shopstream.duckdb"
    # Version 1 of every model, built with nothing running (in this process).
    warehouse = DuckDBWarehouse(path)
    warehouse.ensure_layers()
    warehouse.append({"events": events_table("a", "b", "c", "d", event_type="app_open")})
    warehouse.close()
    settings = Settings(data_dir=tmp_path, transform={"project_dir": PROJECT})
    first = transform_warehouse(settings, TransformRequest())
    assert first.success, first.failures()
    assert total(path, "mart.slow_copy") == 4

    # A platform whose slow_copy takes far longer than the test waits for it.
    platform = CollectorProcess(tmp_path, env=env(RUNNER_TEST_SLOW_ROWS="40000"))
    platform.start()
    assert platform.process is not None
    writers = psutil.Process(platform.process.pid).children(recursive=True)
    assert writers, "no writer process"
    for _ in range(3):
        event = {
            "event_type": "app_open",
            "event_id": str(uuid.uuid4()),
            "anonymous_id": "a",
            "event_ts": "2026-11-27T10:00:00Z",
            "device_type": "web_mobile",
        }
        assert httpx.post(f"{platform.url}/v1/events", json=event, timeout=30).status_code == 200
    slow_started = threading.Event()
    outcome: list[BaseException] = []

    def on_progress(step: Progress) -> None:
        if step.node == "slow_copy" and step.kind == "started":
            slow_started.set()

    def ask() -> None:
        try:
            transform_running(tmp_path, TransformRequest(), on_progress)
        except BaseException as exc:  # the platform dies under it
            outcome.append(exc)

    asking = threading.Thread(target=ask)
    asking.start()
    assert slow_started.wait(120), platform.log()
    time.sleep(1.0)  # inside slow_copy's transaction: its table is being replaced
    platform.kill()
    asking.join(60)
    assert outcome, "the transform finished before the kill: make slow_copy slower"
    # The writer process follows its platform at once (it does not wait for dbt).
    _, alive = psutil.wait_procs(writers, timeout=20)
    assert not alive, f"writer processes left behind: {alive}"

    # Before any new run: models are whole, old or new; raw has every acknowledged row.
    assert read(path, "SELECT count(*)::BIGINT AS n FROM raw.events") == [{"n": 7}]
    assert total(path, "mart.events_by_type") == 7  # built before the kill, committed
    assert total(path, "mart.slow_copy") == 4  # its rebuild was in flight: the old one stands
    leftovers = read(
        path,
        "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '%__dbt_%' "
        "UNION ALL SELECT view_name FROM duckdb_views() WHERE view_name LIKE '%__dbt_%'",
    )
    assert leftovers == []

    # Restarted (without the slowness), the next transform completes.
    platform = CollectorProcess(tmp_path, env=env())
    platform.start()
    try:
        again = transform_running(tmp_path, TransformRequest())
        assert again.success, again.failures()
        assert platform.query("SELECT count(*) AS n FROM raw.events") == [{"n": 7}]
        [row] = platform.query("SELECT sum(events)::BIGINT AS n FROM mart.slow_copy")
        assert row["n"] == 7
    finally:
        assert platform.stop() == 0, platform.log()
