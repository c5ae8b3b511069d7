"""The query path is read-only for real: nothing a query says may change the warehouse, write a
file, read a file, or change DuckDB's configuration.

Each statement runs against the three ways a query reaches DuckDB: the writer process (what a
running platform answers with), DuckDB in the platform's own process
(``sink.writer_process=false``), and the file opened read-only (``shopstream sql`` with nothing
running). After every refusal the warehouse, its settings and the file system are checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.raw import RAW_DEAD_LETTER
from shopstream.warehouse.base import QueryError, Warehouse
from shopstream.warehouse.duckdb.database import DuckDBWarehouse
from shopstream.warehouse.duckdb.writer_process import WarehouseProcess
from tests.support.rows import events_table

# An export whose schema.sql wrecks the warehouse: what `IMPORT DATABASE` used to run.
HOSTILE_SCHEMA = """
DELETE FROM raw.events;
DROP VIEW staging.stg_events;
CREATE TABLE raw.planted (a INTEGER);
"""

#: Statements the query path must refuse, each with what it used to do.
REFUSED = {
    "pragma import": "PRAGMA import_database('{dir}/export')",
    "import database": "IMPORT DATABASE '{dir}/export'",
    "copy table to": "COPY raw.events TO '{dir}/copied.csv'",
    "copy query to": "COPY (SELECT * FROM raw.events) TO '{dir}/copied.parquet' (FORMAT parquet)",
    "copy from": "COPY raw.events FROM '{dir}/export/load.sql'",
    "export database": "EXPORT DATABASE '{dir}/exported'",
    "attach file": "ATTACH '{dir}/other.duckdb' AS other",
    "attach memory": "ATTACH ':memory:' AS scratch",
    "detach": "DETACH other",
    "use": "USE memory",
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "read_blob": "SELECT * FROM read_blob('/etc/hostname')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "file as table": "SELECT * FROM '/etc/passwd'",
    "read_parquet of the warehouse's own dir": "SELECT * FROM read_parquet('{dir}/*.parquet')",
    "two statements": "SELECT 1; SELECT 2",
    "select then delete": "SELECT 1; DELETE FROM raw.events",
    "set": "SET threads = 1",
    "set memory": "SET memory_limit = '1TB'",
    "reset": "RESET TimeZone",
    "set external access": "SET enable_external_access = true",
    "set variable": "SET VARIABLE x = 1",
    "call": "CALL pragma_version()",
    "checkpoint": "CHECKPOINT",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "create table": "CREATE TABLE raw.planted AS SELECT 1 AS a",
    "create view": "CREATE VIEW mart.planted AS SELECT 1 AS a",
    "create sequence": "CREATE SEQUENCE raw.planted_seq",
    "create macro": "CREATE MACRO planted(a) AS a + 1",
    "create secret": "CREATE SECRET planted (TYPE s3, KEY_ID 'k', SECRET 's')",
    "insert": "INSERT INTO raw.events SELECT * FROM raw.events",
    "update": "UPDATE raw.events SET user_id = 'x'",
    "delete": "DELETE FROM raw.events",
    "truncate": "TRUNCATE raw.events",
    "drop view": "DROP VIEW staging.stg_events",
    "alter": "ALTER TABLE raw.events ADD COLUMN planted INTEGER",
    "vacuum": "VACUUM",
    "begin": "BEGIN TRANSACTION",
    "commit": "COMMIT",
    "prepare": "PREPARE planted AS DELETE FROM raw.events",
    "pivot (runs several statements)": "PIVOT raw.events ON event_type",
    "nextval": "SELECT nextval('raw.ids')",
    "delete in a CTE": "WITH gone AS (DELETE FROM raw.events RETURNING event_id) "
    "SELECT count(*) FROM gone",
    "insert in a CTE": "WITH added AS (INSERT INTO mart.notes VALUES ('planted') RETURNING *) "
    "SELECT * FROM added",
    "explain analyze create": "EXPLAIN ANALYZE CREATE TABLE raw.planted AS SELECT 1 AS a",
    "explain analyze delete": "EXPLAIN ANALYZE DELETE FROM raw.events",
    "explain with options": "EXPLAIN (ANALYZE, FORMAT json) DELETE FROM raw.events",
    "query() of a delete": "SELECT * FROM query('DELETE FROM raw.events')",
    "enable logging": "SELECT * FROM enable_logging()",
    "checkpoint()": "SELECT * FROM checkpoint()",
    "force_checkpoint()": "FROM force_checkpoint()",
    "checkpoint() quoted in a subquery": 'SELECT 1 WHERE EXISTS (SELECT * FROM "checkpoint"())',
    "truncate the logs": "SELECT * FROM truncate_duckdb_logs()",
    "serialized sql": "SELECT * FROM json_execute_serialized_sql("
    "json_serialize_sql('SELECT * FROM checkpoint()'))",
    "secrets": "SELECT * FROM duckdb_secrets()",
    "empty": "   ",
    "only a comment": "-- nothing",
}

#: Reads that must keep working, and the rows they must give (None: any rows).
ALLOWED: dict[str, tuple[str, Any]] = {
    "select": ("SELECT count(*) AS n FROM raw.events", [{"n": 2}]),
    "with": (
        "WITH e AS (SELECT event_id FROM raw.events) SELECT min(event_id) AS m FROM e",
        [{"m": "a"}],
    ),
    "from first": (
        "FROM raw.events SELECT event_id WHERE event_id IN ('a', 'b') ORDER BY 1",
        [{"event_id": "a"}, {"event_id": "b"}],
    ),
    "values": ("VALUES (1)", None),
    "staging view": ("SELECT count(*) AS n FROM staging.stg_events", [{"n": 2}]),
    "explain": ("EXPLAIN SELECT * FROM raw.events", None),
    "explain analyze select": ("EXPLAIN ANALYZE SELECT count(*) FROM raw.events", None),
    "describe": ("DESCRIBE raw.events", None),
    "show tables": ("SHOW ALL TABLES", None),
    "summarize": ("SUMMARIZE raw.events", None),
    "catalogue": ("SELECT count(*) > 0 AS ok FROM duckdb_tables()", [{"ok": True}]),
    "currval": ("SELECT currval('raw.ids') AS v", [{"v": 1}]),
}


@dataclass
class Opened:
    warehouse: Warehouse
    dir: Path
    writable: bool


def _prepare(path: Path) -> None:
    """A warehouse with two events, a staging view, a sequence and a table of notes."""
    warehouse = DuckDBWarehouse(path)
    warehouse.ensure_layers()
    warehouse.append({"events": events_table("a", "b")})
    warehouse.close()
    con = duckdb.connect(str(path))
    # What a transform leaves: a staging view over raw.
    con.execute("CREATE VIEW staging.stg_events AS SELECT DISTINCT event_id FROM raw.events")
    con.execute("CREATE SEQUENCE raw.ids")
    con.execute("SELECT nextval('raw.ids')")
    con.execute("CREATE TABLE mart.notes (note VARCHAR)")
    con.close()
    export = path.parent / "export"
    export.mkdir()
    (export / "schema.sql").write_text(HOSTILE_SCHEMA)
    (export / "load.sql").write_text("")


@pytest.fixture(scope="module", params=["writer process", "in process", "read-only file"])
def opened(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Opened]:
    base = tmp_path_factory.mktemp(str(request.param).replace(" ", "-"))
    path = base / "shopstream.duckdb"
    _prepare(path)
    warehouse: Warehouse
    if request.param == "writer process":
        warehouse = WarehouseProcess(path)
    elif request.param == "in process":
        warehouse = DuckDBWarehouse(path)
    else:
        warehouse = DuckDBWarehouse(path, read_only=True)
    yield Opened(warehouse, base, writable=request.param != "read-only file")
    warehouse.close()


def _state(opened: Opened) -> dict[str, Any]:
    """Everything a hostile query could change that we can see."""
    warehouse = opened.warehouse
    return {
        "counts": warehouse.table_counts(),
        "objects": warehouse.query(
            "SELECT database_name, schema_name, table_name AS name FROM duckdb_tables() "
            "UNION ALL SELECT database_name, schema_name, view_name FROM duckdb_views() "
            "WHERE NOT internal UNION ALL SELECT database_name, schema_name, sequence_name "
            "FROM duckdb_sequences() "
            "UNION ALL SELECT database_name, '', '' FROM duckdb_databases() "
            "ORDER BY ALL"
        ).to_pylist(),
        "ids": warehouse.query("SELECT currval('raw.ids') AS v").to_pylist(),
        "settings": warehouse.query(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('threads', 'memory_limit', 'TimeZone', 'enable_external_access', "
            "'lock_configuration', 'enable_logging') ORDER BY 1"
        ).to_pylist(),
        "files": sorted(str(p.relative_to(opened.dir)) for p in opened.dir.rglob("*")),
    }


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_query_cannot_write_read_files_or_reconfigure(opened: Opened, name: str) -> None:
    sql = REFUSED[name].format(dir=opened.dir)
    before = _state(opened)
    with pytest.raises(QueryError) as refused:
        opened.warehouse.query(sql)
    assert str(refused.value).strip(), "a refusal says why"
    after = _state(opened)
    assert after == before
    assert not os.path.exists("/tmp/planted")  # nothing planted outside either
    if opened.writable:
        # No transaction was left open and nothing is locked: the pipeline still writes.
        opened.warehouse.append({"events": events_table(f"after-{name}")})
        counts = opened.warehouse.table_counts()
        assert counts["raw.events"] == before["counts"]["raw.events"] + 1
        opened.warehouse.query("SELECT 1")


def test_refusals_name_what_is_wrong(opened: Opened) -> None:
    with pytest.raises(QueryError, match="COPY"):
        opened.warehouse.query(f"COPY raw.events TO '{opened.dir}/x.csv'")
    with pytest.raises(QueryError, match="one statement"):
        opened.warehouse.query("SELECT 1; SELECT 2")
    with pytest.raises(QueryError, match=r"read_csv\(\) is not allowed here: it reads files"):
        opened.warehouse.query("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(QueryError, match="EXPLAIN"):
        opened.warehouse.query("EXPLAIN ANALYZE DELETE FROM raw.events")
    with pytest.raises(QueryError, match="syntax error"):
        opened.warehouse.query("SELEKT 1")


@pytest.mark.parametrize("name", list(ALLOWED))
def test_reads_still_work(opened: Opened, name: str) -> None:
    sql, expected = ALLOWED[name]
    before = _state(opened)
    rows = opened.warehouse.query(sql).to_pylist()
    if expected is not None:
        if name in ("select", "staging view"):
            # Other tests in this module append events: count what is there now.
            expected = [{"n": before["counts"]["raw.events"]}]
        assert rows[: len(expected)] == expected
    else:
        assert rows
    assert _state(opened) == before


def test_parameters_are_bound_not_spliced(opened: Opened) -> None:
    rows = opened.warehouse.query(
        "SELECT count(*) AS n FROM raw.events WHERE event_id = ?", ["a' OR '1'='1"]
    ).to_pylist()
    assert rows == [{"n": 0}]


def test_appends_work_with_the_file_system_closed(tmp_path: Path) -> None:
    """The writer needs no file access beyond its own file: appends of one and of several
    tables in one commit (Arrow batches are registered: replacement scans count as external
    access), new raw tables and checkpoints all work with external access disabled."""
    warehouse = WarehouseProcess(tmp_path / "w.duckdb")
    try:
        warehouse.ensure_layers()
        warehouse.ensure_raw_table("cdc_orders")
        warehouse.append({"events": events_table("x", "y")})
        letters = pa.Table.from_pylist(
            [dead_letter_row("collector", "test", "{broken")], schema=RAW_DEAD_LETTER
        )
        warehouse.append({"events": events_table("z"), "dead_letter": letters})
        warehouse.checkpoint()
        counts = warehouse.table_counts()
        assert (counts["raw.events"], counts["raw.dead_letter"], counts["raw.cdc_orders"]) == (
            3,
            1,
            0,
        )
        with pytest.raises(QueryError):
            warehouse.query(f"COPY raw.events TO '{tmp_path}/out.csv'")
        assert not (tmp_path / "out.csv").exists()
        settings = warehouse.query(
            "SELECT name, value FROM duckdb_settings() "
            "WHERE name IN ('enable_external_access', 'lock_configuration') ORDER BY 1"
        ).to_pylist()
        assert settings == [
            {"name": "enable_external_access", "value": "false"},
            {"name": "lock_configuration", "value": "true"},
        ]
    finally:
        warehouse.close()
