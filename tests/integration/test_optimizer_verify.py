"""The verifier on the generated shop (a real DuckDB warehouse, opened read-only): a rewrite
passes only when it parses, keeps the schema and returns the same rows; each refusal says why."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from shopstream.config import OptimizerSettings
from shopstream.genai.optimizer.verify import verify
from shopstream.warehouse.base import Warehouse
from tests.support.shop_catalog import shop_catalog

SALES = """select category, sum(net_revenue) as revenue from mart.daily_sales
group by category"""


def check(shop_reader: Warehouse, original: str, rewrite: str, **options: object):  # type: ignore[no-untyped-def]
    dialect = options.pop("dialect", "duckdb")
    return verify(
        original,
        rewrite,
        dialect=dialect,  # type: ignore[arg-type]
        warehouse=shop_reader,
        catalog=shop_catalog(),
        settings=OptimizerSettings(**options),
    )


def test_an_equal_rewrite_passes_on_the_full_data(shop_reader: Warehouse) -> None:
    rewrite = """with s as (select category, net_revenue from mart.daily_sales)
    select category, sum(net_revenue) as revenue from s group by category"""
    result = check(shop_reader, SALES, rewrite)
    assert result.passed, result
    assert (result.parses, result.same_schema, result.same_results) == (True, True, True)
    # 108 rows of daily_sales read, one row per category out (counted independently).
    categories = shop_reader.query("select count(distinct category) as n from mart.daily_sales")
    out = categories.to_pylist()[0]["n"]
    assert result.compared_on == f"full data (108 rows in 1 table, {out} rows out)"


def test_different_rows_are_rejected_with_the_counts_and_an_example(shop_reader: Warehouse) -> None:
    wrong = """select category, sum(net_revenue) as revenue from mart.daily_sales
    where order_date > '2026-11-27' group by category"""
    result = check(shop_reader, SALES, wrong)
    assert not result.passed and result.same_schema and result.same_results is False
    assert result.reason is not None
    assert result.reason.startswith("results differ: the original returns")
    assert "of the original's are not in the rewrite's" in result.reason
    assert "e.g. only the original returns (category=" in result.reason


def test_a_changed_schema_is_rejected_naming_the_columns(shop_reader: Warehouse) -> None:
    renamed = "select category, sum(net_revenue) as net from mart.daily_sales group by category"
    result = check(shop_reader, SALES, renamed)
    assert not result.passed and result.same_schema is False
    assert result.reason == "schema differs: the rewrite lacks revenue; the rewrite adds net"
    retyped = """select category, cast(sum(net_revenue) as double) as revenue
    from mart.daily_sales group by category"""
    result = check(shop_reader, SALES, retyped)
    assert result.reason is not None and result.reason.startswith("schema differs: revenue is")
    assert "double" in result.reason


def test_a_rewrite_that_does_not_parse_or_fails_is_rejected(shop_reader: Warehouse) -> None:
    result = check(shop_reader, SALES, "select category, sum( from mart.daily_sales")
    assert not result.passed and not result.parses
    assert result.reason is not None and result.reason.startswith("does not parse: ")
    result = check(shop_reader, SALES, "select category, 1 as revenue from mart.no_such_table")
    assert result.parses and not result.passed
    assert result.reason is not None and result.reason.startswith("the rewrite fails: ")
    assert "no_such_table" in result.reason


def test_the_order_counts_when_the_order_by_determines_it(shop_reader: Warehouse) -> None:
    ordered = SALES + " order by category"
    result = check(shop_reader, ordered, SALES + " order by category desc")
    assert not result.passed
    assert result.reason is not None and "the same rows in another order" in result.reason
    result = check(shop_reader, ordered, "select * from (" + SALES + ") order by 1")
    assert result.passed, result
    assert result.compared_on.endswith("; order compared on all 9 rows")


def test_large_tables_are_compared_on_a_stated_sample(shop_reader: Warehouse) -> None:
    original = "select event_type, count(*) as n from raw.events group by event_type"
    rewrite = """with e as (select event_type from raw.events)
    select event_type, count(*) as n from e group by event_type"""
    result = check(shop_reader, original, rewrite, verify_full_rows=1_000, verify_sample_percent=10)
    assert result.passed, result
    assert result.compared_on.startswith("a 10% sample of raw.events (hash of event_id)")
    # The sample is real: a rewrite that is wrong on every row is still caught on it.
    wrong = "select event_type, count(*) + 1 as n from raw.events group by event_type"
    result = check(shop_reader, original, wrong, verify_full_rows=1_000)
    assert not result.passed and result.same_results is False


def test_a_bigquery_query_is_verified_on_the_embedded_warehouse(shop_reader: Warehouse) -> None:
    original = (
        "SELECT category, SUM(net_revenue) AS revenue FROM `shop-prod.mart.daily_sales` "
        "GROUP BY category"
    )
    rewrite = """WITH s AS (SELECT category, net_revenue FROM `shop-prod.mart.daily_sales`)
    SELECT category, SUM(net_revenue) AS revenue FROM s GROUP BY category"""
    result = check(shop_reader, original, rewrite, dialect="bigquery")
    assert result.passed, result


# -- what the data alone cannot prove ----------------------------------------------------------


def test_a_reversed_order_is_rejected_even_when_the_keys_tie(shop_reader: Warehouse) -> None:
    # Several categories a day: order_date alone ties, yet desc is another order.
    original = "select order_date, category from mart.daily_sales order by order_date"
    result = check(shop_reader, original, original + " desc")
    assert not result.passed and result.same_results is False, result
    assert result.reason is not None and "another order" in result.reason
    # Rows that tie may come in any order: another tie-break is the same order.
    result = check(shop_reader, original, original + ", category desc")
    assert result.passed, result


def test_a_reversed_order_is_rejected_when_the_keys_are_not_output_columns(
    shop_reader: Warehouse,
) -> None:
    original = "select category, delivery_type from mart.daily_sales order by order_date"
    result = check(shop_reader, original, original + " desc")
    assert not result.passed, result
    assert result.reason is not None and "another order" in result.reason
    same = "select category, delivery_type from mart.daily_sales order by order_date, category"
    result = check(shop_reader, original, same)
    assert result.passed, result


def test_a_rewrite_that_drops_the_order_by_is_rejected(shop_reader: Warehouse) -> None:
    # The rows come out sorted anyway (a VALUES list keeps its order): luck, not proof.
    original = "select x from (values (1), (2), (3)) as t(x) order by x"
    result = check(shop_reader, original, "select x from (values (1), (2), (3)) as t(x)")
    assert not result.passed, result
    assert result.reason is not None and "has no ORDER BY" in result.reason


def test_a_limit_without_order_by_cannot_be_proven(shop_reader: Warehouse) -> None:
    original = "select category from mart.daily_sales limit 3"
    lucky = """select category from mart.daily_sales where delivery_type is not null
    and order_date <= (select max(order_date) from mart.daily_sales) limit 3"""
    result = check(shop_reader, original, lucky)
    assert not result.passed and result.same_results is None, result
    assert result.reason is not None and result.reason.startswith("not proven: ")
    assert "LIMIT without ORDER BY" in result.reason
    # In a subquery too.
    inner = "select * from (select category from mart.daily_sales limit 3) as s"
    result = check(shop_reader, inner, inner.replace("select *", "select category"))
    assert not result.passed and result.reason is not None
    assert "LIMIT without ORDER BY" in result.reason


def test_an_empty_result_proves_nothing(shop_reader: Warehouse) -> None:
    original = "select category from mart.daily_sales where order_date > '2030-01-01'"
    result = check(shop_reader, original, original.replace("2030", "2031"))
    assert not result.passed, result
    assert result.reason == "not proven: the query returns no rows on this data"
    # A sample too small to keep any row is at least one bucket of the hash.
    result = check(
        shop_reader,
        "select event_id from raw.events",
        "select event_id from raw.events where event_type = 'no such type'",
        verify_full_rows=1_000,
        verify_sample_percent=0.001,
    )
    assert not result.passed, result


def test_the_clock_and_random_numbers_are_not_proven_by_one_run(shop_reader: Warehouse) -> None:
    original = """select category from mart.daily_sales
    where order_date > current_date - interval 30 day"""
    fixed = "select category from mart.daily_sales where order_date > date '2026-11-01'"
    result = check(shop_reader, original, fixed)
    assert not result.passed, result
    assert result.reason is not None and result.reason.startswith("not proven: ")
    assert "CURRENT_DATE" in result.reason and "today's clock" in result.reason
    result = check(
        shop_reader,
        "select category, random() < 2 as r from mart.daily_sales",
        "select category, true as r from mart.daily_sales",
    )
    assert not result.passed and result.reason is not None and "RANDOM()" in result.reason
    # The same calls on both sides: compared, and said to hold on today's clock.
    rewrite = f"with s as ({original}) select category from s"
    result = check(shop_reader, original, rewrite)
    assert result.passed, result
    assert "today's clock" in result.compared_on


def test_floats_are_compared_to_twelve_significant_digits(shop_reader: Warehouse) -> None:
    original = "select sum(cast(aov as double)) as s from mart.daily_sales"
    regrouped = """select sum(x) as s from (select category, sum(cast(aov as double)) as x
    from mart.daily_sales group by category)"""
    result = check(shop_reader, original, regrouped)
    assert result.passed, result
    assert "12 significant digits" in result.compared_on
    wrong = "select sum(cast(aov as double)) + 0.01 as s from mart.daily_sales"
    assert not check(shop_reader, original, wrong).passed


def test_schema_qualified_columns_read_the_sample(shop_reader: Warehouse) -> None:
    original = "select raw.events.event_type, count(*) as n from raw.events group by 1"
    rewrite = "select event_type, count(*) as n from raw.events group by 1"
    result = check(shop_reader, original, rewrite, verify_full_rows=1_000)
    assert result.passed, result
    assert result.compared_on.startswith("a 10% sample of raw.events")


def test_only_the_largest_table_is_sampled(shop_reader: Warehouse) -> None:
    # Sampling both sides of a join independently loses the pairs: only the largest is.
    original = """select i.order_id, count(*) as n from staging.stg_order_items i
    left join staging.stg_orders o on o.order_id = i.order_id group by 1"""
    rewrite = original.replace("left join", "join")
    result = check(shop_reader, original, rewrite, verify_full_rows=500)
    assert result.passed, result
    assert result.compared_on.startswith(
        "a 10% sample of staging.stg_order_items (hash of order_id, line_no), the largest "
        "table; full data of the others"
    )
    # Two different tables of the same rows are not the same query on a sample either.
    result = check(
        shop_reader,
        "select count(*) as n from raw.events",
        "select count(*) as n from staging.stg_events",
        verify_full_rows=1_000,
    )
    assert not result.passed, result


def test_bigquery_sql_is_said_to_be_compared_as_duckdb_sql(shop_reader: Warehouse) -> None:
    result = check(
        shop_reader,
        "SELECT category FROM `shop-prod.mart.daily_sales` GROUP BY category",
        "SELECT DISTINCT category FROM `shop-prod.mart.daily_sales`",
        dialect="bigquery",
    )
    assert result.passed, result
    assert "(as DuckDB SQL)" in result.compared_on


def test_a_comparison_that_runs_too_long_is_stopped_and_rejected(shop_reader: Warehouse) -> None:
    exploding = """select count(*) // 144000000 as n from raw.events a, raw.events b, raw.events c
    where a.event_type = c.event_type"""
    started = time.monotonic()
    result = check(
        shop_reader, "select count(*) as n from raw.events", exploding, verify_timeout_seconds=1
    )
    assert time.monotonic() - started < 30
    assert not result.passed, result
    assert result.reason == "the comparison took longer than 1 s: not verified"


class _DryRunning:
    """The shop's DuckDB warehouse, claiming BigQuery's dry run (no BigQuery here, and
    bqemulator's dry run always says 0 bytes): it says every query scans 20 GiB."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._warehouse = warehouse
        self.capabilities = dataclasses.replace(warehouse.capabilities, dry_run_cost=True)
        self.dry_runs: list[str] = []
        self.queries: list[str] = []

    def dry_run_bytes(self, sql: str, parameters: object = None) -> int:
        self.dry_runs.append(sql)
        return 20 * 1024**3

    def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self.queries.append(sql)
        return self._warehouse.query(sql, *args, **kwargs)


def test_a_comparison_over_the_byte_budget_is_not_run(shop_reader: Warehouse) -> None:
    warehouse = _DryRunning(shop_reader)
    rewrite = """with s as (select category, net_revenue from mart.daily_sales)
    select category, sum(net_revenue) as revenue from s group by category"""
    result = check(warehouse, SALES, rewrite)  # type: ignore[arg-type]
    assert not result.passed and result.same_results is None
    assert result.reason == (
        "not verified: comparing the results would scan 20.0 GiB, over "
        "optimizer.verify_max_bytes (10.0 GiB)"
    )
    assert len(warehouse.dry_runs) == 1 and "EXCEPT ALL" in warehouse.dry_runs[0]
    result = check(warehouse, SALES, rewrite, verify_max_bytes=30 * 1024**3)  # type: ignore[arg-type]
    assert result.passed, result


def test_over_the_byte_budget_nothing_but_the_schemas_is_read(shop_reader: Warehouse) -> None:
    """BigQuery bills a LIMIT query's whole scan: over the budget, no query that reads rows may
    run (the check for ties where a LIMIT cuts reads rows)."""
    warehouse = _DryRunning(shop_reader)
    original = (
        "select order_date, category from mart.daily_sales order by order_date, category limit 3"
    )
    rewrite = f"with s as ({original}) select * from s order by order_date, category"
    result = check(warehouse, original, rewrite)  # type: ignore[arg-type]
    assert not result.passed and "optimizer.verify_max_bytes" in (result.reason or "")
    reading = [sql for sql in warehouse.queries if "LIMIT 0" not in sql.upper()]
    assert reading == [], reading


def test_a_limit_cutting_through_tied_rows_cannot_be_proven(shop_reader: Warehouse) -> None:
    # Each day has many rows: the third and fourth tie on order_date, so which of them a LIMIT
    # keeps is the warehouse's choice.
    original = "select order_date, category from mart.daily_sales order by order_date limit 3"
    rewrite = """with s as (select order_date, category from mart.daily_sales)
    select * from s order by order_date limit 3"""
    result = check(shop_reader, original, rewrite)
    assert not result.passed, result
    assert result.reason == (
        "not proven: rows tie on the ORDER BY keys where the LIMIT cuts (rows 3 and 4), so "
        "which of them it keeps is the warehouse's choice; order by unique keys"
    )
    # Unique keys (the mart's grain): provable.
    keyed = """select order_date, category, delivery_type from mart.daily_sales
    order by 1, 2, 3 limit 3"""
    rewrite = """with s as (select order_date, category, delivery_type from mart.daily_sales)
    select * from s order by order_date, category, delivery_type limit 3"""
    result = check(shop_reader, keyed, rewrite)
    assert result.passed, result


def test_an_aggregate_of_rows_in_no_order_cannot_be_proven(shop_reader: Warehouse) -> None:
    original = """select order_date, string_agg(category, ',') as categories
    from mart.daily_sales group by order_date"""
    rewrite = f"with s as ({original}) select * from s"
    result = check(shop_reader, original, rewrite)
    assert not result.passed, result
    # (sqlglot writes DuckDB's string_agg as its other name, LISTAGG.)
    assert result.reason is not None and result.reason.startswith(
        "not proven: the original's LISTAGG(category, ',') depends on the order rows arrive in"
    )
    ordered = original.replace("','", "',' order by category, delivery_type")
    result = check(shop_reader, ordered, f"with s as ({ordered}) select * from s")
    assert result.passed, result
