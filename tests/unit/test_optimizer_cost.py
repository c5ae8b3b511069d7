"""The optimizer's cost figure: the estimate's column and partition pruning on a catalog of known
sizes, the dispatch to a warehouse's dry run, and the layouts read from the dbt models.

The real warehouse's sizes and the estimate on generated data are in
tests/integration/test_optimizer_catalog.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shopstream.config import OptimizerSettings, Settings
from shopstream.genai.optimizer.catalog import (
    Catalog,
    Column,
    TableInfo,
    logical_bytes_sql,
    model_layouts,
)
from shopstream.genai.optimizer.cost import DRY_RUN, cost_of, table_scans
from shopstream.genai.optimizer.findings import TIB
from shopstream.genai.optimizer.query import parse_query
from shopstream.transform.workspace import PACKAGED_PROJECT
from shopstream.warehouse.base import QueryError
from shopstream.warehouse.bigquery import CAPABILITIES as BIGQUERY
from shopstream.warehouse.duckdb.database import DuckDBWarehouse
from shopstream.warehouse.duckdb.writer_process import WarehouseProcess

DAYS = {"2026-11-27": 100, "2026-11-28": 200, "2026-11-29": 300, "2026-11-30": 400}
ROWS = sum(DAYS.values())


def shop() -> Catalog:
    """raw.events partitioned by a DATE, raw.dead_letter by a TIMESTAMP's day, a small
    unpartitioned staging table and a view; sizes in round numbers."""
    events = TableInfo(
        "raw.events",
        (
            Column("event_id", "VARCHAR", bytes=10_000),
            Column("event_type", "VARCHAR", bytes=5_000),
            Column("user_id", "VARCHAR", bytes=2_000),
            Column("event_date", "DATE", bytes=8_000),
            Column("properties", "JSON", bytes=50_000),
        ),
        rows=ROWS,
        partition_by="event_date",
        cluster_by=("event_type",),
        unique_key=("event_id",),
        partition_rows=DAYS,
    )
    dead = TableInfo(
        "raw.dead_letter",
        (
            Column("dead_letter_id", "VARCHAR", bytes=4_000),
            Column("received_at", "TIMESTAMPTZ", bytes=800),
        ),
        rows=ROWS,
        partition_by="received_at",
        partition_rows=DAYS,
    )
    orders = TableInfo(
        "staging.stg_orders",
        (Column("order_id", "VARCHAR", bytes=700), Column("user_id", "VARCHAR", bytes=300)),
        rows=50,
    )
    view = TableInfo(
        "monitoring.pipeline_freshness", (Column("raw_table", "VARCHAR"),), is_view=True
    )
    return Catalog({t.name: t for t in (events, dead, orders, view)})


def estimate(sql: str, dialect: Any = "duckdb") -> int:
    return cost_of(sql, dialect, shop()).bytes


def share(day_filter: str) -> float:
    """The share of raw.events' rows a filter keeps (checked against the bytes counted)."""
    sql = f"select event_id from raw.events where {day_filter}"
    (scan,) = table_scans(parse_query(sql, "duckdb").tree, "duckdb", shop())
    read = sum(c.bytes or 0 for c in scan.table.columns if c.name in scan.columns)
    assert estimate(sql) == round(read * scan.share)
    return scan.share


def test_only_the_columns_read_are_counted() -> None:
    assert estimate("select event_id from raw.events") == 10_000
    assert estimate("select event_id, user_id from raw.events") == 12_000
    assert estimate("select * from raw.events") == 75_000
    assert estimate("select count(*) from raw.events") == 0  # BigQuery bills no column here


def test_columns_are_pruned_through_ctes_and_subqueries_as_bigquery_does() -> None:
    assert estimate("with e as (select * from raw.events) select event_type from e") == 5_000
    assert estimate("select t.user_id from (select * from raw.events) as t") == 2_000


def test_a_cte_read_twice_is_scanned_twice() -> None:
    sql = (
        "with e as (select event_id, user_id from raw.events) "
        "select a.event_id from e as a join e as b on a.user_id = b.user_id"
    )
    cost = cost_of(sql, "duckdb", shop())
    assert cost.bytes == 2 * 12_000
    assert "raw.events 2 of 5 columns, 4 of 4 partitions, read 2 times" in cost.method


def test_scalar_subqueries_and_unions_are_counted() -> None:
    sql = (
        "select event_id, (select count(user_id) from staging.stg_orders) as n from raw.events "
        "union all select order_id, 1 from staging.stg_orders"
    )
    assert estimate(sql) == 10_000 + 300 + 700


@pytest.mark.parametrize(
    ("day_filter", "kept"),
    [
        ("event_date = '2026-11-30'", 400),
        ("event_date = DATE '2026-11-29'", 300),
        ("'2026-11-29' <= event_date", 700),
        ("event_date > '2026-11-28'", 700),
        ("event_date < '2026-11-28'", 100),
        ("event_date <= '2026-11-28'", 300),
        ("event_date between '2026-11-28' and '2026-11-29'", 500),
        ("event_date in ('2026-11-27', '2026-11-30')", 500),
        ("(event_date = '2026-11-27' or event_date = '2026-11-30')", 500),
        (
            "event_date >= '2026-11-28' and event_type = 'purchase' and event_date < '2026-11-30'",
            500,
        ),
        ("event_date = CAST('2026-11-28' AS DATE)", 200),
    ],
)
def test_partition_filters_prune_by_the_rows_of_the_days_they_keep(
    day_filter: str, kept: int
) -> None:
    assert share(day_filter) == pytest.approx(kept / ROWS, abs=1e-3)


@pytest.mark.parametrize(
    "day_filter",
    [
        "cast(event_date as varchar) = '2026-11-30'",  # a cast on the column
        "date_trunc('month', event_date) = '2026-11-01'",  # a function on it
        "event_date = '2026-11-30' or event_type = 'purchase'",  # a branch without it
        "event_date = (select max(event_date) from raw.events)",  # not a constant
    ],
)
def test_filters_bigquery_cannot_prune_by_keep_every_partition(day_filter: str) -> None:
    sql = f"select event_id from raw.events where {day_filter}"
    scans = table_scans(parse_query(sql, "duckdb").tree, "duckdb", shop())
    assert scans
    assert all(scan.share == 1.0 and scan.partitions_kept == 4 for scan in scans)
    assert "1 of 4 partitions" not in cost_of(sql, "duckdb", shop()).method


def test_a_timestamp_partition_keeps_each_day_an_instant_falls_in() -> None:
    def kept(day_filter: str) -> float:
        sql = f"select dead_letter_id from raw.dead_letter where {day_filter}"
        return estimate(sql) / 4_800

    assert kept("received_at >= TIMESTAMP '2026-11-29 12:00:00'") == pytest.approx(700 / ROWS)
    assert kept("received_at < '2026-11-29 00:00:00'") == pytest.approx(300 / ROWS)
    assert kept("received_at < '2026-11-29 00:00:01'") == pytest.approx(600 / ROWS)
    assert kept("received_at = '2026-11-28 08:30:00+00:00'") == pytest.approx(200 / ROWS)


def test_bigquery_dialect_and_its_project_prefix() -> None:
    sql = "SELECT event_id FROM `shop-prod.raw.events` WHERE event_date = DATE '2026-11-30'"
    cost = cost_of(sql, "bigquery", shop())
    assert cost.bytes == round(18_000 * 400 / ROWS)
    assert cost.method == (
        "estimate from column sizes: raw.events 2 of 5 columns, 1 of 4 partitions"
    )


def test_dollars_are_bytes_at_the_configured_price_per_tib() -> None:
    settings = Settings(optimizer=OptimizerSettings(price_per_tib=5.0))
    cost = cost_of("select * from raw.events", "duckdb", shop(), settings=settings)
    assert cost.dollars == pytest.approx(75_000 / TIB * 5.0)
    assert cost_of("select * from raw.events", "duckdb", shop()).dollars == pytest.approx(
        75_000 / TIB * 6.25
    )


def test_what_cannot_be_estimated_is_named() -> None:
    with pytest.raises(ValueError, match=r"raw\.orders is not in the warehouse's catalog"):
        estimate("select * from raw.orders")
    with pytest.raises(ValueError, match=r"p\.raw\.events_\* is a wildcard table"):
        estimate("SELECT event_id FROM `p.raw.events_*` WHERE _TABLE_SUFFIX = '1'", "bigquery")
    with pytest.raises(
        ValueError,
        match=r"pipeline_freshness is a view whose query",
    ):
        estimate("select raw_table from monitoring.pipeline_freshness")
    unsized = Catalog({"raw.events": TableInfo("raw.events", (Column("event_id", "VARCHAR"),))})
    with pytest.raises(ValueError, match=r"no sizes for raw\.events: load it from the warehouse"):
        cost_of("select event_id from raw.events", "duckdb", unsized)


class DryRunWarehouse:
    """Stands in for BigQuery itself (real GCP cannot be reached from here; bqemulator's dry
    run answers 0 bytes): a warehouse with the dry-run capability that records what it was
    asked."""

    capabilities = BIGQUERY
    sql_dialect = "bigquery"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def dry_run_bytes(self, sql: str, parameters: list[Any] | None = None) -> int:
        self.asked.append(sql)
        return 3 * 1024**4


def test_a_warehouse_with_a_dry_run_is_asked_for_the_bytes_in_its_own_dialect() -> None:
    warehouse = DryRunWarehouse()
    cost = cost_of(
        "select event_id from raw.events where event_date = '2026-11-30' limit 10",
        "duckdb",
        shop(),
        warehouse,  # type: ignore[arg-type]  # only what cost_of uses of a Warehouse
    )
    assert cost.method == DRY_RUN
    assert cost.bytes == 3 * 1024**4
    assert cost.dollars == pytest.approx(3 * 6.25)
    assert warehouse.asked == [
        "SELECT event_id FROM raw.events WHERE event_date = '2026-11-30' LIMIT 10"
    ]


@pytest.mark.parametrize("shape", [DuckDBWarehouse, WarehouseProcess])
def test_duckdb_has_no_dry_run_and_says_to_ask_the_capability(
    tmp_path: Path, shape: type[DuckDBWarehouse | WarehouseProcess]
) -> None:
    """In this process and in its writer process alike."""
    warehouse = shape(tmp_path / "w.duckdb")
    try:
        assert not warehouse.capabilities.dry_run_cost
        with pytest.raises(QueryError, match=r"no dry run: ask capabilities\.dry_run_cost"):
            warehouse.dry_run_bytes("select 1")
    finally:
        warehouse.close()


def test_logical_bytes_follow_bigquerys_sizes() -> None:
    assert logical_bytes_sql(Column("n", "BIGINT")) == 'count("n") * 8'
    assert logical_bytes_sql(Column("ok", "BOOLEAN")) == 'count("ok") * 1'
    assert logical_bytes_sql(Column("at", "TIMESTAMP WITH TIME ZONE")) == 'count("at") * 8'
    assert logical_bytes_sql(Column("big", "DECIMAL(38,10)")) == 'count("big") * 32'
    assert logical_bytes_sql(Column("p", "JSON")) == 'sum(strlen(CAST("p" AS VARCHAR)))'
    assert logical_bytes_sql(Column("b", "BLOB")) == 'sum(2 + octet_length("b"))'


def test_model_layouts_are_read_from_the_config_blocks_for_bigquery() -> None:
    layouts = {f"{layer}.{m}": x for layer, m, x in model_layouts(PACKAGED_PROJECT / "models")}
    sessions = layouts["mart.sessions"]  # its pre_hook string holds "}}" of its own
    assert sessions.partition_by == "session_date"
    assert sessions.cluster_by == ("device_type", "visitor_id")
    assert sessions.unique_key == ("session_id",)
    assert layouts["staging.stg_event_items"].unique_key == ("event_id", "line_no")
    # No key in the config: the grain its YAML tests as unique.
    assert layouts["mart.daily_funnel"].unique_key == ("session_date", "device_type")
    assert layouts["mart.customer_rfm"].unique_key == ("user_id",)
    assert layouts["mart.daily_funnel"].partition_by is None


def test_a_model_config_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    models = tmp_path / "models" / "marts"
    models.mkdir(parents=True)
    (models / "broken.sql").write_text("{{ config(partition_by={'field': ) }}\nselect 1\n")
    with pytest.raises(ValueError, match=r"broken\.sql: cannot read the model's config block"):
        model_layouts(tmp_path / "models")


@pytest.mark.parametrize(
    ("sql", "pruned"),
    [
        # a table's own ON condition filters it on the null-padded side of an outer join only
        (
            "select e.event_id from staging.stg_orders o left join raw.events e "
            "on e.user_id = o.user_id and e.event_date = '2026-11-30'",
            True,
        ),
        (
            "select e.event_id from raw.events e left join staging.stg_orders o "
            "on o.user_id = e.user_id and e.event_date = '2026-11-30'",
            False,
        ),
        (
            "select e.event_id from staging.stg_orders o right join raw.events e "
            "on e.user_id = o.user_id and e.event_date = '2026-11-30'",
            False,
        ),
        (
            "select e.event_id from raw.events e right join staging.stg_orders o "
            "on o.user_id = e.user_id and e.event_date = '2026-11-30'",
            True,
        ),
        (
            "select e.event_id from staging.stg_orders o full join raw.events e "
            "on e.user_id = o.user_id and e.event_date = '2026-11-30'",
            False,
        ),
        (
            "select e.event_id from staging.stg_orders o join raw.events e "
            "on e.user_id = o.user_id and e.event_date = '2026-11-30'",
            True,
        ),
    ],
)
def test_on_conditions_prune_only_the_side_they_filter(sql: str, pruned: bool) -> None:
    events = [
        s
        for s in table_scans(parse_query(sql, "duckdb").tree, "duckdb", shop())
        if s.table.name == "raw.events"
    ]
    assert events
    assert all((s.partitions_kept == 1) is pruned for s in events), events


def _recent_events() -> Catalog:
    """raw.events with four partitions ending today (UTC): filters relative to the current date
    keep a known number of them."""
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    days = {str(today - dt.timedelta(days=n)): 100 * (n + 1) for n in range(4)}
    events = TableInfo(
        "raw.events",
        (Column("event_id", "VARCHAR", bytes=10_000), Column("event_date", "DATE", bytes=8_000)),
        rows=sum(days.values()),
        partition_by="event_date",
        partition_rows=days,
    )
    return Catalog({"raw.events": events})


@pytest.mark.parametrize(
    ("day_filter", "dialect", "kept"),
    [
        ("event_date >= current_date - interval 1 day", "duckdb", 2),
        ("event_date >= current_date - interval '2 days'", "duckdb", 3),
        ("event_date >= current_date - 1", "duckdb", 2),
        ("event_date = current_date", "duckdb", 1),
        ("event_date >= date_add(current_date, interval -2 day)", "duckdb", 3),
        ("event_date >= DATE_SUB(CURRENT_DATE(), INTERVAL 1 DAY)", "bigquery", 2),
        ("event_date > DATE_SUB(CURRENT_DATE(), INTERVAL 1 WEEK)", "bigquery", 4),
    ],
)
def test_filters_relative_to_the_current_date_prune_as_of_now(
    day_filter: str, dialect: Any, kept: int
) -> None:
    table = "raw.events" if dialect == "duckdb" else "`p.raw.events`"
    sql = f"select event_id from {table} where {day_filter}"
    (scan,) = table_scans(parse_query(sql, dialect).tree, dialect, _recent_events())
    assert (scan.partitions_kept, scan.partitions) == (kept, 4), day_filter


@pytest.mark.parametrize(
    "day_filter",
    [
        "event_date = last_day(date '2026-11-05')",  # a function of a constant, not the constant
        "event_date = upper('2026-11-28')",
    ],
)
def test_only_date_constructors_around_a_literal_count_as_that_literal(day_filter: str) -> None:
    sql = f"select event_id from raw.events where {day_filter}"
    (scan,) = table_scans(parse_query(sql, "duckdb").tree, "duckdb", shop())
    assert scan.partitions_kept == 4, day_filter


def test_a_filter_above_distinct_on_prunes_nothing() -> None:
    sql = (
        "with s as (select distinct on (user_id) user_id, event_date from raw.events "
        "order by user_id, event_id desc) select * from s where event_date = '2026-11-30'"
    )
    (scan,) = table_scans(parse_query(sql, "duckdb").tree, "duckdb", shop())
    assert scan.partitions_kept == 4


@pytest.mark.parametrize("lateral", [", lateral", " cross join lateral"])
def test_a_lateral_subquery_is_one_scan(lateral: str) -> None:
    sql = (
        f"select o.order_id, l.n from staging.stg_orders o{lateral} "
        "(select count(event_id) as n from raw.events e where e.user_id = o.user_id) as l"
    )
    assert estimate(sql) == 700 + 300 + 10_000 + 2_000
