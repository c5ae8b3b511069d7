"""The replication check against a real PostgreSQL and the real CDC reader: a connected reader
passes; a stopped one leaves its slot inactive while WAL piles up, and the check sees lag and
retained WAL grow past its thresholds; a dropped slot fails saying what to do."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from shopstream.quality.checks import CheckContext, replication
from shopstream.quality.engine import run_checks
from shopstream.quality.results import CheckResult
from shopstream.quality.spec import QualityConfig
from tests.support.cdc import ReaderThread
from tests.support.pg_fixtures import PostgresDatabase

SLOT = "quality_slot"
MIB = 1024 * 1024


def check_replication(dsn: str | None, **options: float) -> dict[str, CheckResult]:
    config = QualityConfig.model_validate(
        {"pipeline": [{"kind": "replication", "name": "pipeline.replication", **options}]}
    )

    def no_warehouse(sql: str, params: object = None) -> object:
        raise AssertionError("the replication check must not read the warehouse")

    ctx = CheckContext(
        query=no_warehouse,  # type: ignore[arg-type]
        now=datetime.now(UTC),
        timezone=ZoneInfo("UTC"),
        source_dsn=dsn,
        slot_name=SLOT,
    )
    return {r.check: r for r in run_checks(config, ctx).results}


def write_wal(dsn: str, megabytes: int) -> None:
    """Roughly ``megabytes`` of WAL: rows of a table outside the publication."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ballast (id bigint, pad text)")
        conn.execute(
            "INSERT INTO ballast SELECT i, repeat('x', 1000) FROM generate_series(1, %s) AS i",
            [megabytes * 900],
        )


def test_no_dsn_means_no_result() -> None:
    assert check_replication(None) == {}


def test_lag_and_retained_wal_grow_while_the_reader_is_stopped(
    postgres: PostgresDatabase, tmp_path: Path
) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (order_id text PRIMARY KEY, total numeric)")
    reader = ReaderThread(postgres.dsn, tmp_path / "data", slot_name=SLOT).start()
    try:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO orders VALUES ('O1', 10)")
        reader.wait_until(lambda: reader.count("cdc_orders") >= 1, "the order captured")
        connected = check_replication(postgres.dsn)
    finally:
        reader.stop()
    assert {name: r.status for name, r in connected.items()} == {
        "pipeline.replication.lag_bytes": "pass",
        "pipeline.replication.retained_bytes": "pass",
        "pipeline.replication.lag_seconds": "pass",
    }, [r.message for r in connected.values()]
    assert connected["pipeline.replication.lag_bytes"].details["active"] is True

    thresholds = {
        "warn_lag_bytes": 4 * MIB,
        "fail_lag_bytes": 1024 * MIB,
        "warn_retained_bytes": 4 * MIB,
        "fail_retained_bytes": 1024 * MIB,
    }
    before = check_replication(postgres.dsn, **thresholds)
    write_wal(postgres.dsn, 12)
    after = check_replication(postgres.dsn, **thresholds)
    for part in ("lag_bytes", "retained_bytes"):
        name = f"pipeline.replication.{part}"
        grown = (after[name].observed or 0) - (before[name].observed or 0)
        assert grown > 8 * MIB, (part, before[name].observed, after[name].observed)
        assert before[name].status == "pass"
        assert after[name].status == "warn", after[name].message
    inactive = after["pipeline.replication.lag_seconds"]
    assert inactive.status == "warn"
    assert "inactive" in inactive.message and "start the CDC reader" in inactive.message

    failing = check_replication(postgres.dsn, fail_lag_bytes=8 * MIB, fail_retained_bytes=8 * MIB)
    assert failing["pipeline.replication.lag_bytes"].status == "fail"
    assert failing["pipeline.replication.retained_bytes"].status == "fail"


def test_a_dropped_slot_fails_saying_what_to_do(postgres: PostgresDatabase) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [SLOT])
    assert check_replication(postgres.dsn)["pipeline.replication.lag_bytes"].status == "pass"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", [SLOT])
    results = check_replication(postgres.dsn)
    assert list(results) == ["pipeline.replication"]
    missing = results["pipeline.replication"]
    assert missing.status == "fail" and missing.severity == "critical"
    assert SLOT in missing.message and "start the CDC reader" in missing.message


def test_an_unreachable_database_is_an_error_without_the_password() -> None:
    dsn = "postgresql://shop:s3cret-pw@127.0.0.1:1/shop"
    results = check_replication(dsn)
    [result] = results.values()
    assert result.status == "error"
    assert "127.0.0.1:1/shop" in result.message
    assert "s3cret-pw" not in result.message


@pytest.mark.parametrize("option", ["warn_lag_bytes", "fail_retained_bytes"])
def test_negative_thresholds_are_refused(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        replication.Params.model_validate({option: -1})
