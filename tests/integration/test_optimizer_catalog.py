"""The optimizer's catalog loaded from a real generated shop (DuckDB, staging and marts built by
``shopstream transform``) and the cost estimate on it, checked against sizes measured here
independently with plain SQL."""

from __future__ import annotations

import pytest

from shopstream.config import Settings
from shopstream.genai.optimizer.catalog import Catalog, Column, load_catalog
from shopstream.genai.optimizer.cost import cost_of
from shopstream.warehouse import Warehouse, open_warehouse
from tests.support.bigquery_emulator import BigQueryEmulator, bigquery_emulator
from tests.support.shop_catalog import shop_catalog

__all__ = ["bigquery_emulator"]  # the fixture, used by name


@pytest.fixture(scope="module")
def catalog(shop_reader: Warehouse) -> Catalog:
    return load_catalog(shop_reader, "duckdb")


def scalar(shop_reader: Warehouse, sql: str) -> int:
    return int(shop_reader.query(sql).column(0)[0].as_py() or 0)


def test_every_table_of_the_shop_is_there_with_the_columns_the_warehouse_has(
    catalog: Catalog, shop_reader: Warehouse
) -> None:
    # The static catalog the rule tests use describes the same tables and columns.
    # Rows, layouts, keys and nullability too: the rule tests decide on them (NOT IN over a
    # nullable column, partition filters, unique join keys).
    static = shop_catalog()
    assert set(static.tables) <= set(catalog.tables)
    for name, table in static.tables.items():
        loaded = catalog.tables[name]
        assert [(c.name, c.type, c.nullable) for c in loaded.columns] == [
            (c.name, c.type, c.nullable) for c in table.columns
        ], name
        assert (loaded.rows, loaded.partition_by, loaded.cluster_by, loaded.unique_key) == (
            table.rows,
            table.partition_by,
            table.cluster_by,
            table.unique_key,
        ), name
    counts = shop_reader.table_counts()
    for name, table in catalog.tables.items():
        if not table.is_view:
            assert table.rows == counts[name], name
            assert sum(table.partition_rows.values()) in (0, table.rows), name
    assert catalog.tables["monitoring.pipeline_freshness"].is_view
    events = catalog.tables["raw.events"]
    assert not events.column("event_id").nullable  # type: ignore[union-attr]
    assert events.column("user_id").nullable  # type: ignore[union-attr]


def test_layouts_come_from_the_raw_layout_the_model_configs_and_the_capture(
    catalog: Catalog,
) -> None:
    events = catalog.tables["raw.events"]
    assert (events.partition_by, events.cluster_by, events.unique_key) == (
        "event_date",
        ("event_type",),
        ("event_id",),
    )
    items = catalog.tables["raw.cdc_order_items"]
    assert (items.partition_by, items.cluster_by, items.unique_key) == (
        "commit_date",
        ("op", "change_id"),
        ("change_id",),
    )
    sales = catalog.tables["mart.daily_sales"]
    assert sales.partition_by == "order_date"
    assert sales.cluster_by == ("category", "delivery_type")
    assert sales.unique_key == ("order_date", "category", "delivery_type")
    # CDC staging: the key from raw.source_schemas' primary key; history by day of valid_from.
    assert catalog.tables["staging.stg_order_items"].unique_key == ("order_id", "line_no")
    assert catalog.tables["staging.stg_orders"].unique_key == ("order_id",)
    assert catalog.tables["staging.stg_orders_history"].partition_by == "valid_from"


def test_sizes_are_the_bytes_bigquery_bills_measured_per_column(
    catalog: Catalog, shop_reader: Warehouse
) -> None:
    events = catalog.tables["raw.events"]
    sizes = {c.name: c.bytes for c in events.columns}
    assert sizes["event_id"] == scalar(
        shop_reader, "select sum(2 + strlen(event_id)) from raw.events"
    )
    assert sizes["event_date"] == 8 * scalar(
        shop_reader, "select count(event_date) from raw.events"
    )
    assert sizes["properties"] == scalar(
        shop_reader, "select sum(strlen(properties::varchar)) from raw.events"
    )
    assert sizes["user_id"] == scalar(
        shop_reader, "select sum(2 + strlen(user_id)) from raw.events where user_id is not null"
    )
    per_day = shop_reader.query(
        "select cast(event_date as varchar) as day, count(*) as n from raw.events group by 1"
    ).to_pylist()
    assert dict(events.partition_rows) == {r["day"]: r["n"] for r in per_day}
    assert len(events.partition_rows) == 4


def test_only_the_tables_asked_for_are_measured(shop_reader: Warehouse) -> None:
    catalog = load_catalog(shop_reader, "duckdb", measure=["raw.events"])
    assert catalog.tables["raw.events"].bytes
    assert catalog.tables["mart.daily_sales"].bytes is None
    assert catalog.tables["mart.daily_sales"].partition_by == "order_date"
    with pytest.raises(ValueError, match=r"no sizes for mart\.daily_sales"):
        cost_of("select category from mart.daily_sales", "duckdb", catalog, shop_reader)


def test_the_estimate_of_one_column_is_its_octet_lengths(
    catalog: Catalog, shop_reader: Warehouse
) -> None:
    cost = cost_of("select event_id from raw.events", "duckdb", catalog, shop_reader)
    assert cost.bytes == scalar(
        shop_reader, "select sum(2 + octet_length(event_id::blob)) from raw.events"
    )
    assert (
        cost.method == "estimate from column sizes: raw.events 1 of 20 columns, 4 of 4 partitions"
    )


def test_a_partition_filter_cuts_the_bytes_by_the_share_of_rows_it_keeps(
    catalog: Catalog, shop_reader: Warehouse
) -> None:
    day = "2026-11-29"
    kept = scalar(shop_reader, f"select count(*) from raw.events where event_date = '{day}'")
    rows = scalar(shop_reader, "select count(*) from raw.events")
    whole = cost_of("select event_id, event_date from raw.events", "duckdb", catalog, shop_reader)
    filtered = cost_of(
        f"select event_id from raw.events where event_date = '{day}'",
        "duckdb",
        catalog,
        shop_reader,
    )
    assert 0 < kept < rows
    assert filtered.bytes == round(whole.bytes * kept / rows)
    assert "1 of 4 partitions" in filtered.method
    # The same filter behind a function on the column prunes nothing.
    wrapped = cost_of(
        f"select event_id from raw.events where cast(event_date as varchar) = '{day}'",
        "duckdb",
        catalog,
        shop_reader,
    )
    assert wrapped.bytes == whole.bytes


def test_select_star_costs_more_than_the_columns_listed(
    catalog: Catalog, shop_reader: Warehouse
) -> None:
    star = cost_of("select * from mart.sessions", "duckdb", catalog, shop_reader)
    listed = cost_of(
        "select session_id, revenue from mart.sessions", "duckdb", catalog, shop_reader
    )
    assert star.bytes == catalog.tables["mart.sessions"].bytes
    assert 0 < listed.bytes < star.bytes


def test_a_view_costs_what_its_query_scans(catalog: Catalog, shop_reader: Warehouse) -> None:
    view = catalog.tables["monitoring.pipeline_freshness"]
    assert view.definition is not None
    through_view = cost_of(
        "select raw_table, lag_minutes from monitoring.pipeline_freshness",
        "duckdb",
        catalog,
        shop_reader,
    )
    direct = cost_of(view.definition, "duckdb", catalog, shop_reader)
    assert through_view.bytes == direct.bytes > 0
    assert "raw.events 2 of 20 columns" in through_view.method


def test_a_bigquery_query_on_the_same_data_costs_the_same(shop_reader: Warehouse) -> None:
    in_bigquery = load_catalog(shop_reader, "bigquery")
    assert in_bigquery.tables["mart.daily_sales"].column("order_date").type == "DATE"  # type: ignore[union-attr]
    assert {c.type for c in in_bigquery.tables["raw.events"].columns} >= {"STRING", "JSON"}
    duck = cost_of(
        "select order_date, category from mart.daily_sales where order_date >= '2026-11-28'",
        "duckdb",
        load_catalog(shop_reader, "duckdb"),
        shop_reader,
    )
    big = cost_of(
        "SELECT order_date, category FROM `shop-prod.mart.daily_sales` "
        "WHERE order_date >= DATE '2026-11-28'",
        "bigquery",
        in_bigquery,
        shop_reader,
    )
    assert big.bytes == duck.bytes > 0


def test_on_bigquery_the_catalog_is_its_information_schema_and_the_cost_its_dry_run(
    bigquery_emulator: BigQueryEmulator,
) -> None:
    """Against bqemulator: its INFORMATION_SCHEMA gives the tables, columns, partitioning and
    clustering; its dry run always says 0 bytes (an emulator's limit), so this proves the path
    taken and how it is reported, not BigQuery's figure."""
    warehouse = open_warehouse(Settings(warehouse_url=bigquery_emulator.warehouse_url()))
    try:
        warehouse.ensure_layers(("raw",))
        catalog = load_catalog(warehouse, "bigquery")
        events = catalog.tables["raw.events"]
        assert events.column("event_id") == Column("event_id", "STRING", nullable=False)
        assert events.column("properties").type == "STRING"  # type: ignore[union-attr]
        assert events.column("payload").type == "JSON"  # type: ignore[union-attr]
        assert (events.partition_by, events.cluster_by, events.unique_key) == (
            "event_date",
            ("event_type",),
            ("event_id",),
        )
        assert events.rows == 0
        assert {"raw.events", "raw.dead_letter", "raw.source_schemas"} <= set(catalog.tables)
        cost = cost_of(
            "select event_id from raw.events where event_date = '2026-11-29'",
            "duckdb",
            catalog,
            warehouse,
        )
        assert (cost.bytes, cost.dollars, cost.method) == (0, 0.0, "BigQuery dry run")
    finally:
        warehouse.close()
