"""CDC staging and the shop marts, end to end: PostgreSQL -> the real CDC reader -> a DuckDB file
-> dbt build of the generated models -> every row and value equal to PostgreSQL's.

One build per module (the fixture below); tests that change raw data run last and build again.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from shopstream.generators.shop import SHOP_TABLES, run_order_workload, setup_shop_schema
from shopstream.transform.cdc_models import LATEST_SCHEMAS_SQL, CapturedTable, captured_tables
from tests.support.cdc import ReaderThread
from tests.support.dbt_project import (
    captured_vars,
    duckdb_output,
    make_workspace,
    run_dbt,
    write_profile,
)
from tests.support.pg_fixtures import drop_database
from tests.support.shop_figures import (
    DAILY_SALES_COLUMNS,
    customer_rfm,
    daily_sales,
    normalise,
    pg_rows,
)

TIMEZONE = "Asia/Seoul"  # business days differ from UTC days: the marts must convert
ZOO_DDL = """
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE DOMAIN positive_amount AS numeric(10,2) CHECK (VALUE >= 0);
CREATE TABLE type_zoo (
    id integer NOT NULL,
    part text NOT NULL,
    n_exact numeric(20,6),
    n_free numeric,
    cash money,
    ratio double precision,
    flag boolean,
    tags text[],
    amounts numeric(8,2)[],
    blob bytea,
    doc jsonb,
    day date,
    at_utc timestamptz,
    at_wall timestamp,
    clock time,
    span interval,
    uid uuid,
    small smallint,
    huge bigint,
    feeling mood,
    amount positive_amount,
    big text,
    PRIMARY KEY (id, part)
);
-- Out of line and uncompressed: a long value is TOASTed, so an update that leaves it alone
-- sends the unchanged-TOAST placeholder instead.
ALTER TABLE type_zoo ALTER COLUMN big SET STORAGE EXTERNAL;
-- Named like other models: stg_events is the behaviour events' hand-written model and
-- stg_orders_history the shop's orders' history, so these get other names.
CREATE TABLE events (id integer PRIMARY KEY, name text);
CREATE TABLE orders_history (order_id text PRIMARY KEY, note text);
-- No primary key: staging keeps its history only.
CREATE TABLE notes (body text, n integer);
ALTER TABLE notes REPLICA IDENTITY FULL;
"""
BIG = "lorem ipsum " * 2000  # ~24 kB, far over the TOAST threshold


def zoo_row(id_: int, part: str, **values: Any) -> str:
    defaults: dict[str, Any] = {
        "n_exact": "12345678901234.123456",
        "n_free": "3.14159",
        "cash": "-1234.50",
        "ratio": "0.1",
        "flag": "true",
        "tags": '{a,"b c",NULL}',
        "amounts": "{1.50,2.25}",
        "blob": "\\x00ff10",
        "doc": '{"k": [1, 2], "s": "x"}',
        "day": "2024-02-29",
        "at_utc": "2024-06-01 14:00:00.5+02",
        "at_wall": "2024-06-01 14:00:00.123456",
        "clock": "23:59:59.5",
        "span": "1 year 2 mons -3 days 04:05:06.5",
        "uid": str(uuid.UUID(int=id_)),
        "small": "-32768",
        "huge": "9223372036854775807",
        "feeling": "calm",
        "amount": "10.00",
        "big": BIG,
    }
    defaults.update(values)
    columns = ["id", "part", *defaults]
    literals = [str(id_), f"'{part}'"] + [
        "NULL" if v is None else "'" + str(v).replace("'", "''") + "'" for v in defaults.values()
    ]
    return f"INSERT INTO type_zoo ({', '.join(columns)}) VALUES ({', '.join(literals)})"


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@dataclass
class Built:
    dsn: str
    workspace: Path
    database: Path
    tables: list[CapturedTable]
    names: list[str]
    variables: dict[str, Any]

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.database)) as con:
            return con.execute(sql).fetchall()

    def columns(self, relation: str) -> list[str]:
        with duckdb.connect(str(self.database)) as con:
            return [d[0] for d in con.execute(f"SELECT * FROM {relation} LIMIT 0").description]

    def build(self) -> Any:
        return run_dbt(self.workspace, "build", variables=self.variables)


@pytest.fixture(scope="module")
def built(postgres_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    dbname = f"test_{uuid.uuid4().hex[:12]}"
    dsn = postgres_server.create_database(dbname)
    data = tmp_path_factory.mktemp("cdc_staging")
    try:
        setup_shop_schema(dsn, seed=3)
        execute(
            dsn,
            ZOO_DDL,
            zoo_row(1, "a"),
            zoo_row(1, "b", tags=None, doc="[]"),
            zoo_row(2, "a", big="short"),
            "INSERT INTO events VALUES (1, 'clash')",
            "INSERT INTO orders_history VALUES ('o-1', 'clash')",
            "CREATE TABLE zz_marker (id int PRIMARY KEY)",
        )
        reader = ReaderThread(dsn, data, snapshot_mode="initial").start()
        try:
            asyncio.run(run_order_workload(dsn, tps=400, duration=2.5, seed=3))
            execute(
                dsn,
                # big unchanged: the update carries the TOAST placeholder for it
                "UPDATE type_zoo SET ratio = 2.5 WHERE id = 1 AND part = 'a'",
                "UPDATE type_zoo SET flag = false, tags = '{}' WHERE id = 1 AND part = 'a'",
                "DELETE FROM type_zoo WHERE id = 2",
                "TRUNCATE type_zoo",
                zoo_row(5, "x"),
                zoo_row(5, "y", n_free="2.50000000000", ratio="NaN", cash="0.01"),
                zoo_row(6, "x", big=None, doc=None, amounts="{}", ratio="-Infinity"),
                zoo_row(
                    7, "x", n_free="NaN", day="infinity", at_utc="-infinity", at_wall="infinity"
                ),
                zoo_row(8, "x", n_free="1.0000000001", day="10000-01-01"),
                zoo_row(9, "x"),
                "UPDATE type_zoo SET small = 1 WHERE id = 5 AND part = 'x'",  # placeholder again
                "UPDATE type_zoo SET small = 2 WHERE id = 5 AND part = 'x'",  # and again
                "UPDATE type_zoo SET big = 'replaced' WHERE id = 5 AND part = 'y'",
                "DELETE FROM type_zoo WHERE id = 9",
                # A key change: the reader makes it a delete of (8, x) and a create of (8, z)
                # that carries the placeholder for big, whose value is the old key's.
                "UPDATE type_zoo SET part = 'z' WHERE id = 8 AND part = 'x'",
                "INSERT INTO zz_marker VALUES (1)",
            )
            execute(
                dsn,
                "INSERT INTO notes VALUES ('same', 1), ('same', 1), ('other', NULL)",
                "INSERT INTO zz_marker VALUES (0)",
            )
            reader.wait_until(lambda: reader.count("cdc_zz_marker") == 2, "the marker")
        finally:
            reader.stop()
        with duckdb.connect(str(data / "shopstream.duckdb")) as con:
            # The reader recorded every captured table's schema; at-least-once delivery may
            # repeat a record, which must change nothing.
            con.execute(
                "INSERT INTO raw.source_schemas SELECT * FROM raw.source_schemas "
                "WHERE raw_table IN ('cdc_users', 'cdc_products')"
            )
            cursor = con.execute(LATEST_SCHEMAS_SQL)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            tables = captured_tables(rows)
        workspace = data / "transform"
        models = make_workspace(workspace, tables)
        database = data / "shopstream.duckdb"
        write_profile(workspace, {"duckdb": duckdb_output(database)}, "duckdb")
        variables = {**captured_vars(models), "timezone": TIMEZONE}
        result = Built(dsn, workspace, database, tables, models, variables)
        result.build()
        yield result
    finally:
        drop_database(postgres_server, dbname)


# -- equality with the source -------------------------------------------------------------------


def shop_table(built: Built, table: str) -> tuple[list[Any], list[Any]]:
    """(PostgreSQL's rows, stg_<table>'s rows) of a shop table, in key order."""
    captured = next(t for t in built.tables if t.source_table == table)
    order = ", ".join(captured.primary_key)
    listed = ", ".join(c.name for c in captured.columns)
    expected = pg_rows(built.dsn, f"SELECT {listed} FROM {table} ORDER BY {order}")
    actual = [
        tuple(normalise(v) for v in row)
        for row in built.query(f"SELECT {listed} FROM staging.stg_{table} ORDER BY {order}")
    ]
    return expected, actual


@pytest.mark.parametrize("table", SHOP_TABLES)
def test_shop_table_equals_postgres(built: Built, table: str) -> None:
    expected, actual = shop_table(built, table)
    assert len(expected) > 0
    assert actual == expected
    columns = [c.name for c in next(t for t in built.tables if t.source_table == table).columns]
    assert built.columns(f"staging.stg_{table}") == [
        *columns,
        "_cdc_change_id",
        "_cdc_changed_at",
        "_cdc_untyped_columns",
    ]


def test_shop_types(built: Built) -> None:
    types = dict(
        built.query(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'staging' AND table_name IN ('stg_orders', 'stg_products')"
        )
    )
    assert types["stg_orders.total_amount"] == "DECIMAL(14,2)"
    assert types["stg_products.price"] == "DECIMAL(12,2)"
    assert types["stg_products.stock"] == "BIGINT"
    assert types["stg_orders.created_at"] == "TIMESTAMP WITH TIME ZONE"


ZOO_EXPECTED = """
SELECT id, part, n_exact,
       CASE WHEN n_free = 'NaN' OR n_free <> round(n_free, 9) THEN NULL ELSE n_free END,
       cash::numeric, ratio, flag, tags, amounts, blob, doc,
       CASE WHEN isfinite(day) AND extract(year FROM day) <= 9999 THEN day END,
       CASE WHEN isfinite(at_utc) THEN at_utc END,
       CASE WHEN isfinite(at_wall) THEN at_wall END,
       clock, span::text, uid::text, small, huge, feeling::text, amount, big
FROM type_zoo ORDER BY id, part"""


def zoo_table(built: Built) -> tuple[list[Any], list[Any]]:
    """(PostgreSQL's rows, stg_type_zoo's rows), in key order."""
    expected = pg_rows(built.dsn, ZOO_EXPECTED)
    rows = built.query(
        "SELECT id, part, n_exact, n_free, cash, ratio, flag, tags, amounts, blob, doc, day, "
        "at_utc, at_wall, clock, span, uid, small, huge, feeling, amount, big "
        "FROM staging.stg_type_zoo ORDER BY id, part"
    )
    actual = []
    for row in rows:
        values = list(row)
        # JSON columns come back as JSON text; PostgreSQL's arrays and jsonb as Python values.
        for index in (7, 8, 10):
            values[index] = None if values[index] is None else json.loads(values[index])
        if values[8] is not None:  # numeric[] travels as exact decimal strings
            values[8] = [Decimal(v) for v in values[8]]
        actual.append(tuple(normalise(v) for v in values))
    return expected, actual


def test_every_type_equals_postgres(built: Built) -> None:
    expected, actual = zoo_table(built)
    assert [r[:2] for r in actual] == [(5, "x"), (5, "y"), (6, "x"), (7, "x"), (8, "z")]
    assert actual == expected


def test_values_that_cannot_be_typed_are_named(built: Built) -> None:
    untyped = dict(
        built.query(
            "SELECT id::text || part, _cdc_untyped_columns FROM staging.stg_type_zoo "
            "ORDER BY id, part"
        )
    )
    assert untyped == {
        "5x": None,
        "5y": None,
        "6x": None,
        "7x": "n_free,day,at_utc,at_wall",
        "8z": "n_free,day",
    }


def test_zoo_types(built: Built) -> None:
    types = dict(
        built.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'staging' AND table_name = 'stg_type_zoo'"
        )
    )
    assert {k: types[k] for k in ("n_exact", "n_free", "cash", "amount", "blob", "doc")} == {
        "n_exact": "DECIMAL(20,6)",
        "n_free": "DECIMAL(38,9)",
        "cash": "DECIMAL(38,2)",
        "amount": "DECIMAL(10,2)",
        "blob": "BLOB",
        "doc": "JSON",
    }
    assert (types["at_utc"], types["at_wall"], types["ratio"]) == (
        "TIMESTAMP WITH TIME ZONE",
        "TIMESTAMP",
        "DOUBLE",
    )


def test_history_of_a_key(built: Built) -> None:
    # (1, 'a'): snapshot read, two updates (big unchanged, carried forward), then the truncate.
    history = (
        "SELECT _cdc_op, ratio, flag, big = '{big}', valid_from, valid_to "
        "FROM staging.stg_type_zoo_history WHERE id = 1 AND part = 'a' ORDER BY _cdc_change_id"
    )
    rows = built.query(history.format(big=BIG))
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("r", 0.1, True, True),
        ("u", 2.5, True, True),
        ("u", 2.5, False, True),
    ]
    assert rows[0][5] == rows[1][4] and rows[1][5] == rows[2][4]
    truncated_at = built.query(
        "SELECT valid_to FROM staging.stg_type_zoo_history WHERE id = 1 AND part = 'b'"
    )
    assert rows[2][5] is not None and truncated_at == [(rows[2][5],)]
    # Current versions are open; a deleted key's last version is closed.
    open_keys = built.query(
        "SELECT id, part FROM staging.stg_type_zoo_history WHERE valid_to IS NULL ORDER BY 1, 2"
    )
    assert open_keys == [(5, "x"), (5, "y"), (6, "x"), (7, "x"), (8, "z")]


def test_a_key_change_keeps_the_unchanged_toasted_value(built: Built) -> None:
    # (8, x) became (8, z): a delete and a create whose big was the unchanged-TOAST
    # placeholder; both versions have the old key's value, and nothing is left untyped there.
    history = built.query(
        f"SELECT part, _cdc_op, big = '{BIG}', _cdc_untyped_columns, valid_from, valid_to "
        "FROM staging.stg_type_zoo_history WHERE id = 8 ORDER BY _cdc_change_id"
    )
    assert [r[:4] for r in history] == [
        ("x", "c", True, "n_free,day"),
        ("z", "c", True, "n_free,day"),
    ]
    assert history[0][5] == history[1][4] and history[1][5] is None


def test_tables_named_like_other_models_get_their_own_names(built: Built) -> None:
    names = {t.raw_table: (t.model_name, t.history_model_name) for t in built.tables}
    assert names["cdc_events"] == ("stg_events_cdc", "stg_events_cdc_history")
    assert names["cdc_orders_history"] == (
        "stg_orders_history_cdc",
        "stg_orders_history_cdc_history",
    )
    assert names["cdc_orders"] == ("stg_orders", "stg_orders_history")
    assert built.query("SELECT id, name FROM staging.stg_events_cdc") == [(1, "clash")]
    assert built.query("SELECT order_id, note FROM staging.stg_orders_history_cdc_history") == [
        ("o-1", "clash")
    ]
    # The names they would have had are still the hand-written model's and orders' history.
    assert "total_amount" in built.columns("staging.stg_orders_history")
    assert "name" not in built.columns("staging.stg_events")


def test_a_table_without_primary_key_has_its_history_only(built: Built) -> None:
    assert "stg_notes" not in built.names and "stg_notes_history" in built.names
    rows = built.query(
        "SELECT body, n, _cdc_op FROM staging.stg_notes_history WHERE valid_to IS NULL ORDER BY ALL"
    )
    expected = pg_rows(built.dsn, "SELECT body, n, 'c' FROM notes ORDER BY 1, 2")
    assert rows == expected and len(rows) == 3  # equal rows are not merged


# -- the marts -----------------------------------------------------------------------------------


def test_daily_sales_equals_postgres(built: Built) -> None:
    expected = daily_sales(built.dsn, TIMEZONE)
    actual = [
        tuple(normalise(v) for v in row)
        for row in built.query(
            f"SELECT {DAILY_SALES_COLUMNS} FROM mart.daily_sales ORDER BY 1, 2, 3"
        )
    ]
    assert len(expected) > 3
    assert any(r[7] for r in expected), "the workload cancelled no order: nothing was checked"
    assert actual == expected


def test_customer_rfm_equals_postgres(built: Built) -> None:
    expected = customer_rfm(built.dsn, TIMEZONE)
    actual = [
        tuple(normalise(v) for v in row)
        for row in built.query(
            "SELECT user_id, frequency, monetary, last_order_date FROM mart.customer_rfm "
            "ORDER BY user_id"
        )
    ]
    assert len(expected) > 3 and actual == expected
    scores = built.query(
        "SELECT frequency, frequency_score, monetary, monetary_score, segment "
        "FROM mart.customer_rfm"
    )
    for frequency, f_score, monetary, m_score, segment in scores:
        assert f_score == (5 if frequency >= 10 else 4 if frequency >= 5 else 3
                           if frequency >= 3 else 2 if frequency == 2 else 1)  # fmt: skip
        assert m_score == (5 if monetary >= 1_000_000 else 4 if monetary >= 300_000 else 3
                           if monetary >= 100_000 else 2 if monetary >= 30_000 else 1)  # fmt: skip
        # Every order of this workload is a few seconds old: recency is 5 for all.
        assert segment == ("champions" if f_score >= 4 and m_score >= 4 else "loyal"
                           if f_score >= 4 else "new" if f_score == 1 else "promising")  # fmt: skip


def test_cohort_retention_equals_postgres(built: Built) -> None:
    expected = pg_rows(
        built.dsn,
        f"""WITH o AS (SELECT user_id,
                         date_trunc('month', created_at AT TIME ZONE '{TIMEZONE}')::date AS m
                       FROM orders),
                 f AS (SELECT user_id, min(m) AS c FROM o GROUP BY 1),
                 s AS (SELECT c, count(*) AS n FROM f GROUP BY 1)
            SELECT f.c, (extract(year FROM age(o.m, f.c)) * 12
                         + extract(month FROM age(o.m, f.c)))::int,
                   count(DISTINCT o.user_id), s.n
            FROM o JOIN f USING (user_id) JOIN s ON s.c = f.c GROUP BY f.c, o.m, s.n
            ORDER BY 1, 2""",
    )
    actual = [
        tuple(normalise(v) for v in row)
        for row in built.query(
            "SELECT cohort_month, months_since, customers, cohort_customers "
            "FROM mart.cohort_retention ORDER BY 1, 2"
        )
    ]
    assert expected and actual == expected
    shares = built.query(
        "SELECT customers, cohort_customers, retained_share FROM mart.cohort_retention"
    )
    for customers, size, share in shares:
        assert share == (Decimal(customers) / size).quantize(Decimal("0.0001"), ROUND_HALF_UP)


def test_pipeline_freshness(built: Built) -> None:
    rows = {
        r[0]: r[1:]
        for r in built.query(
            "SELECT raw_table, newest_event_at, newest_ingested_at, lag_minutes, rows_last_hour "
            "FROM monitoring.pipeline_freshness"
        )
    }
    assert set(rows) == {"events", "dead_letter", *(t.raw_table for t in built.tables)}
    orders = built.query("SELECT max(commit_ts), max(ingested_at), count(*) FROM raw.cdc_orders")[0]
    assert rows["cdc_orders"][0] == orders[0] and rows["cdc_orders"][1] == orders[1]
    assert rows["cdc_orders"][2] in (0, 1) and rows["cdc_orders"][3] == orders[2]
    assert rows["events"] == (None, None, None, 0)


# -- exactly once: these change raw data, so they run last ----------------------------------------

STAGED = ["stg_orders", "stg_order_items", "stg_type_zoo", "stg_type_zoo_history"]


def snapshot(built: Built) -> dict[str, list[tuple[Any, ...]]]:
    relations = [f"staging.{name}" for name in STAGED] + ["mart.daily_sales"]
    return {
        relation: [
            tuple(normalise(v) for v in row)
            for row in built.query(f"SELECT * FROM {relation} ORDER BY ALL")
        ]
        for relation in relations
    }


def test_rebuild_without_new_data_changes_nothing(built: Built) -> None:
    before = snapshot(built)
    built.build()
    assert snapshot(built) == before


def test_duplicate_raw_rows_change_nothing(built: Built) -> None:
    before = snapshot(built)
    with duckdb.connect(str(built.database)) as con:
        for table in ("cdc_orders", "cdc_order_items", "cdc_type_zoo"):
            # The reader re-sends after a crash: the same changes, ingested again later.
            con.execute(
                f"INSERT INTO raw.{table} SELECT * REPLACE (now() AS ingested_at) "
                f"FROM raw.{table} USING SAMPLE 50 PERCENT (bernoulli, 7)"
            )
        copies = con.execute(
            "SELECT count(*) - count(DISTINCT change_id) FROM raw.cdc_type_zoo"
        ).fetchone()
    assert copies is not None and copies[0] > 0
    built.build()
    assert snapshot(built) == before


def test_incremental_run_applies_new_changes(built: Built) -> None:
    """New changes merge into the current state; what came before the lookback window is not
    read again (it is moved 10 days back here), so an unchanged TOAST value of a key whose
    last full value is out of the window comes from the row already in staging."""
    data = built.database.parent
    with duckdb.connect(str(built.database)) as con:
        for table in built.tables:
            con.execute(
                f"UPDATE raw.{table.raw_table} SET commit_date = commit_date - INTERVAL 10 DAY"
            )
    reader = ReaderThread(built.dsn, data, snapshot_mode="initial").start()
    try:
        asyncio.run(run_order_workload(built.dsn, tps=200, duration=1.0, seed=4))
        execute(
            built.dsn,
            "UPDATE type_zoo SET small = 3 WHERE id = 5 AND part = 'x'",  # big: placeholder
            "DELETE FROM type_zoo WHERE id = 6",
            # A key change whose old key's values are all before the window: big, unchanged
            # TOAST, comes from the old key's row in stg_type_zoo.
            "UPDATE type_zoo SET part = 'q' WHERE id = 7 AND part = 'x'",
            zoo_row(10, "z"),
            "INSERT INTO zz_marker VALUES (2)",
        )
        reader.wait_until(lambda: reader.count("cdc_zz_marker") == 3, "the second marker")
    finally:
        reader.stop()
    built.build()
    assert is_incremental_run(built, "stg_type_zoo")
    for table in SHOP_TABLES:
        expected, actual = shop_table(built, table)
        assert actual == expected, table
    expected, actual = zoo_table(built)
    assert [r[:2] for r in actual] == [(5, "x"), (5, "y"), (7, "q"), (8, "z"), (10, "z")]
    assert actual == expected
    assert built.query(
        "SELECT _cdc_untyped_columns FROM staging.stg_type_zoo WHERE id = 7 AND part = 'q'"
    ) == [("n_free,day,at_utc,at_wall",)]
    # Only the window was read: the old changes are not in this run's source rows.
    window = built.query(
        "SELECT count(*) FROM raw.cdc_type_zoo WHERE commit_date >= current_date - 3"
    )[0][0]
    assert 0 < window < built.query("SELECT count(*) FROM raw.cdc_type_zoo")[0][0]


def is_incremental_run(built: Built, model: str) -> bool:
    """Whether dbt's last run of ``model`` merged (its run SQL is a MERGE)."""
    run = built.workspace / "target" / "run" / "shopstream" / "models" / "cdc" / f"{model}.sql"
    return "merge into" in run.read_text().lower()


def test_a_value_that_cannot_be_found_is_named_not_nulled(built: Built) -> None:
    """(8, x) -> (8, z) with (8, x)'s create (the only full value of big) lost from raw: no
    value to carry, so both models leave big NULL and name it in _cdc_untyped_columns."""
    with duckdb.connect(str(built.database)) as con:
        con.execute(
            'DELETE FROM raw.cdc_type_zoo WHERE op = \'c\' AND key = \'{"id":8,"part":"x"}\''
        )
    run_dbt(
        built.workspace,
        "run",
        "--full-refresh",
        "--select",
        "stg_type_zoo",
        "stg_type_zoo_history",
        variables=built.variables,
    )
    for model in ("stg_type_zoo", "stg_type_zoo_history"):
        rows = built.query(
            f"SELECT big IS NULL, _cdc_untyped_columns FROM staging.{model} "
            "WHERE id = 8 AND part = 'z'"
        )
        assert rows == [(True, "n_free,day,big")], model
