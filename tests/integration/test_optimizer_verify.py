"""The verifier on the generated shop (a real DuckDB warehouse, opened read-only): a rewrite
passes only when it parses, keeps the schema and returns the same rows; each refusal says why."""

from __future__ import annotations

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
        settings=OptimizerSettings(**options),  # type: ignore[arg-type]
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
    assert "order compared on the first" in result.compared_on


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
