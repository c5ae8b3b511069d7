"""``append_monitoring``: the quality agent's tables in the monitoring layer, made from their
rows' Arrow schema, on a real DuckDB file, in this process and through the writer process."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from shopstream.quality.results import CHECKS_JSON_COLUMNS, CHECKS_TABLE, CheckResult
from shopstream.quality.results import results_table as check_rows
from shopstream.warehouse import Warehouse, WarehouseError
from shopstream.warehouse.duckdb import open_duckdb

CHECKED_AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def result(check: str, status: str = "fail") -> CheckResult:
    return CheckResult(
        check=check,
        kind="rule",
        table="raw.events",
        column=None,
        status=status,  # type: ignore[arg-type]
        observed=3.0,
        expected=0.0,
        threshold="fail above 0 offending rows",
        severity="high",
        message="3 rows break the rule",
        evidence=[{"event_id": "e-1", "ip": "10.0.0.1"}],
        details={"offending_rows": 3},
        window_start=None,
        window_end=CHECKED_AT,
        unit="rows",
    )


@pytest.fixture(params=[False, True], ids=["in-process", "writer-process"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    opened = open_duckdb(tmp_path / "w" / "shopstream.duckdb", own_process=request.param)
    opened.ensure_layers()
    yield opened
    opened.close()


def test_check_rows_land_with_their_columns_and_json(warehouse: Warehouse, tmp_path: Path) -> None:
    rows = check_rows([result("a"), result("b", "pass")], "run-1", CHECKED_AT)
    warehouse.append_monitoring(CHECKS_TABLE, rows, json_columns=CHECKS_JSON_COLUMNS)
    warehouse.append_monitoring(
        CHECKS_TABLE, check_rows([result("a")], "run-2", CHECKED_AT), json_columns=("evidence",)
    )
    columns = warehouse.query(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'monitoring' AND table_name = ? ORDER BY ordinal_position",
        [CHECKS_TABLE],
    ).to_pylist()
    assert [c["column_name"] for c in columns] == rows.schema.names
    types = {c["column_name"]: c["data_type"] for c in columns}
    assert types["evidence"] == "JSON" and types["details"] == "JSON"
    assert types["checked_at"] == "TIMESTAMP WITH TIME ZONE" and types["observed"] == "DOUBLE"
    found = warehouse.query(
        "SELECT run_id, check_name, status, evidence->>'$[0].event_id' AS first, "
        "CAST(details->>'offending_rows' AS INT) AS offending "
        "FROM monitoring.data_quality_checks ORDER BY run_id, check_name"
    ).to_pylist()
    assert found == [
        {"run_id": "run-1", "check_name": "a", "status": "fail", "first": "e-1", "offending": 3},
        {"run_id": "run-1", "check_name": "b", "status": "pass", "first": "e-1", "offending": 3},
        {"run_id": "run-2", "check_name": "a", "status": "fail", "first": "e-1", "offending": 3},
    ]
    # Appended by name: a batch whose columns come in another order lands in the right ones.
    shuffled = check_rows([result("c")], "run-3", CHECKED_AT)
    shuffled = shuffled.select(list(reversed(shuffled.schema.names)))
    warehouse.append_monitoring(CHECKS_TABLE, shuffled, json_columns=CHECKS_JSON_COLUMNS)
    assert warehouse.query(
        "SELECT check_name, severity FROM monitoring.data_quality_checks WHERE run_id = 'run-3'"
    ).to_pylist() == [{"check_name": "c", "severity": "high"}]


def test_files_stay_private(warehouse: Warehouse, tmp_path: Path) -> None:
    previous = os.umask(0o022)  # a usual umask: the warehouse must not depend on the caller's
    try:
        warehouse.append_monitoring(
            CHECKS_TABLE, check_rows([result("a")], "run-1", CHECKED_AT), json_columns=()
        )
    finally:
        os.umask(previous)
    path = tmp_path / "w" / "shopstream.duckdb"
    for file in (path, path.with_name(path.name + ".wal")):
        if file.exists():
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def test_a_bad_name_or_type_is_refused_and_nothing_lands(warehouse: Warehouse) -> None:
    with pytest.raises(WarehouseError, match="not a plain name"):
        warehouse.append_monitoring("checks; DROP TABLE raw.events", pa.table({"a": [1]}))
    with pytest.raises(WarehouseError, match="no warehouse type"):
        warehouse.append_monitoring("odd", pa.table({"a": pa.array([[1]])}))
    # A row that breaks the table (NULL into NOT NULL) rolls the whole batch back.
    warehouse.append_monitoring(
        CHECKS_TABLE, check_rows([result("a")], "run-1", CHECKED_AT), json_columns=()
    )
    bad = check_rows([result("b"), result("c")], "run-2", CHECKED_AT).to_pylist()
    bad[1]["status"] = None
    loose = pa.schema([f.with_nullable(True) for f in check_rows([], "x", CHECKED_AT).schema])
    with pytest.raises(WarehouseError, match=r"monitoring\.data_quality_checks"):
        warehouse.append_monitoring(CHECKS_TABLE, pa.Table.from_pylist(bad, schema=loose))
    assert warehouse.query(
        "SELECT count(*) AS n FROM monitoring.data_quality_checks"
    ).to_pylist() == [{"n": 1}]


def test_the_rows_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "shopstream.duckdb"
    opened = open_duckdb(path, own_process=True)
    opened.ensure_layers()
    opened.append_monitoring(
        CHECKS_TABLE, check_rows([result("a")], "run-1", CHECKED_AT), json_columns=()
    )
    opened.close()
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT run_id FROM monitoring.data_quality_checks").fetchall() == [
            ("run-1",)
        ]
    finally:
        con.close()


def test_mart_rows_land_with_exact_decimals(warehouse: Warehouse) -> None:
    """``append_mart`` (the Beam pipeline's real-time aggregates) shares the monitoring
    tables' code: the table is made from the batch, money stays an exact decimal."""
    schema = pa.schema(
        [
            pa.field("window_start", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("event_type", pa.string(), nullable=False),
            pa.field("events", pa.int64(), nullable=False),
            pa.field("revenue", pa.decimal128(38, 4), nullable=False),
        ]
    )
    rows = [
        {
            "window_start": CHECKED_AT,
            "event_type": "purchase",
            "events": 2,
            "revenue": Decimal("0.1000"),
        },
        {
            "window_start": CHECKED_AT,
            "event_type": "page_view",
            "events": 5,
            "revenue": Decimal("0"),
        },
    ]
    warehouse.append_mart("activity", pa.Table.from_pylist(rows, schema=schema))
    warehouse.append_mart("activity", pa.Table.from_pylist(rows[:1], schema=schema))
    types = {
        c["column_name"]: c["data_type"]
        for c in warehouse.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'mart' AND table_name = 'activity'"
        ).to_pylist()
    }
    assert types["revenue"] == "DECIMAL(38,4)" and types["events"] == "BIGINT"
    # 0.1 + 0 + 0.1 is 0.2 exactly, as a Decimal (a float would not be).
    assert warehouse.query(
        "SELECT sum(revenue) AS revenue, sum(events)::BIGINT AS events FROM mart.activity"
    ).to_pylist() == [{"revenue": Decimal("0.2000"), "events": 9}]
    # A row that breaks the table rolls its whole batch back.
    loose = pa.schema([f.with_nullable(True) for f in schema])
    bad = pa.Table.from_pylist([rows[1], {**rows[0], "event_type": None}], schema=loose)
    with pytest.raises(WarehouseError, match=r"mart\.activity"):
        warehouse.append_mart("activity", bad)
    assert warehouse.query("SELECT count(*) AS n FROM mart.activity").to_pylist() == [{"n": 3}]
