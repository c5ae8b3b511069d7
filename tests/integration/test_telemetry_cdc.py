"""`shopstream cdc` telemetry from a real reader on a real PostgreSQL: the metrics listener's
/healthz (Kubernetes' liveness probe) while the reader runs and once its sink is broken for
good, data freshness of the raw table it writes, and the spans of a captured transaction."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx
import psutil

from tests.support import metrics
from tests.support.cdc import cdc_process, execute_sql, wait_for, wait_streaming, writer_child
from tests.support.collector import free_port, read_log
from tests.support.pg_fixtures import PostgresDatabase
from tests.support.traces import console_spans


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            process.wait()


def test_cdc_health_freshness_and_spans(postgres: PostgresDatabase, tmp_path) -> None:  # type: ignore[no-untyped-def]
    dsn = postgres.dsn
    execute_sql(dsn, "CREATE TABLE items (id bigint PRIMARY KEY, name text)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = cdc_process(
        dsn,
        tmp_path,
        SHOPSTREAM_CDC__METRICS_PORT=str(port),
        SHOPSTREAM_OBSERVABILITY__TRACING="console",
        # No second writer: a writer that dies breaks the sink for good (liveness must fail).
        SHOPSTREAM_SINK__WRITER_RESTARTS="0",
    )
    try:
        wait_streaming(dsn, process)
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
        committed_at = time.time()
        execute_sql(
            dsn,
            "BEGIN; INSERT INTO items VALUES (1, 'a'), (2, 'b'); "
            "UPDATE items SET name = 'c' WHERE id = 1; COMMIT",
        )

        def durable() -> bool:
            name = "shopstream_raw_newest_record_timestamp_seconds"
            return metrics.value(url, name, table="cdc_items") > 0

        wait_for(durable, "the transaction durable in raw.cdc_items", timeout=30)
        newest = metrics.value(
            url, "shopstream_raw_newest_record_timestamp_seconds", table="cdc_items"
        )
        assert abs(newest - committed_at) < 30, (newest, committed_at)
        assert metrics.value(url, "shopstream_sink_queue_limit_rows") > 0

        writer_child(process).kill()

        def unhealthy() -> bool:
            return httpx.get(f"{url}/healthz", timeout=10).status_code == 503

        wait_for(unhealthy, "/healthz failing once the warehouse writer is gone", timeout=30)
        reason = httpx.get(f"{url}/healthz", timeout=10).json()["reason"]
        assert "writer" in reason, reason
    finally:
        _stop(process)
    spans = console_spans(read_log(tmp_path / "cdc.log"))
    transactions = [s for s in spans if s["name"] == "cdc.transaction"]
    assert [t["attributes"]["cdc.changes"] for t in transactions] == [3], transactions
    transaction = transactions[0]
    assert transaction["attributes"]["cdc.xid"] > 0
    assert "/" in transaction["attributes"]["cdc.commit_lsn"]
    assert transaction["resource"]["attributes"]["service.name"] == "shopstream-cdc"
    tx_id = transaction["context"]["span_id"]
    durables = [
        s
        for s in spans
        if s["name"] == "cdc.durable" and tx_id in {ln["context"]["span_id"] for ln in s["links"]}
    ]
    assert len(durables) == 1, spans
    durable_span = durables[0]
    assert durable_span["status"]["status_code"] == "UNSET"
    assert "/" in durable_span["attributes"]["cdc.confirmable_lsn"]
    # The group commit that made the batch durable links to the wait, and appends under it.
    commits = [
        s
        for s in spans
        if s["name"] == "sink.commit"
        and durable_span["context"]["span_id"] in {ln["context"]["span_id"] for ln in s["links"]}
    ]
    assert len(commits) == 1, spans
    appends = [
        s
        for s in spans
        if s["name"] == "warehouse.append" and s["parent_id"] == commits[0]["context"]["span_id"]
    ]
    assert appends and "cdc_items" in appends[0]["attributes"]["warehouse.table"]
