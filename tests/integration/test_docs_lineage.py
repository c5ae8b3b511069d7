"""Lineage of the real dbt project, from the manifest ``shopstream transform`` leaves behind.

The generated shop (tests/support/shop_warehouse.py) is built with ``shopstream transform``; its
manifest's compiled SQL and the warehouse's information_schema columns go through
``trace_lineage``. The expected graph below was written by reading the models (models/ and the
CDC staging models shopstream.transform.cdc_models generates), the column answers by reading
their SQL.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from shopstream.genai.docs.lineage import TracedLineage, trace_lineage
from shopstream.genai.docs.model import ColumnRef
from shopstream.warehouse import open_warehouse
from tests.support.shop_warehouse import ShopWarehouse

CAPTURED = ("order_items", "orders", "payments", "products", "users")

EXPECTED_TABLES: dict[str, tuple[str, ...]] = {
    "mart.cart_abandonment": ("staging.stg_events",),
    "mart.cohort_retention": ("staging.stg_orders",),
    "mart.customer_rfm": ("staging.stg_orders",),
    "mart.daily_funnel": ("mart.sessions",),
    "mart.daily_sales": (
        "staging.stg_order_items",
        "staging.stg_orders",
        "staging.stg_products",
    ),
    "mart.product_performance": ("staging.stg_event_items", "staging.stg_events"),
    "mart.session_id_agreement": ("staging.stg_events",),
    "mart.sessions": ("staging.stg_events", "staging.stg_identities"),
    "mart.tracking_coverage": (
        "staging.stg_events",
        "staging.stg_order_items",
        "staging.stg_orders",
    ),
    "monitoring.pipeline_freshness": (
        *(f"raw.cdc_{table}" for table in CAPTURED),
        "raw.dead_letter",
        "raw.events",
    ),
    "staging.stg_event_items": ("staging.stg_events",),
    "staging.stg_events": ("raw.events",),
    "staging.stg_events_rejected": ("raw.events", "staging.stg_events"),
    "staging.stg_identities": ("staging.stg_events",),
    **{f"staging.stg_{table}": (f"raw.cdc_{table}",) for table in CAPTURED},
    **{f"staging.stg_{table}_history": (f"raw.cdc_{table}",) for table in CAPTURED},
}


def col(table: str, column: str) -> ColumnRef:
    return ColumnRef(table, column)


@pytest.fixture(scope="module")
def manifest(shop_warehouse: ShopWarehouse) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(shop_warehouse.manifest.read_text())
    return loaded


@pytest.fixture(scope="module")
def table_columns(shop_warehouse: ShopWarehouse) -> dict[str, list[str]]:
    """What the docs builder hands lineage: the warehouse's columns per ``layer.table``."""
    warehouse = open_warehouse(shop_warehouse.settings, read_only=True)
    try:
        rows = warehouse.query(
            "select table_schema, table_name, column_name from information_schema.columns"
            " order by table_schema, table_name, ordinal_position"
        ).to_pylist()
    finally:
        warehouse.close()
    columns: dict[str, list[str]] = {}
    for row in rows:
        table = f"{row['table_schema']}.{row['table_name']}".lower()
        columns.setdefault(table, []).append(row["column_name"].lower())
    return columns


@pytest.fixture(scope="module")
def traced(manifest: dict[str, Any], table_columns: dict[str, list[str]]) -> TracedLineage:
    return trace_lineage(manifest, table_columns, "duckdb")


def test_the_table_graph_is_the_projects(traced: TracedLineage) -> None:
    assert traced.warnings == ()
    assert dict(traced.lineage.tables) == EXPECTED_TABLES
    assert traced.lineage.upstream_tables("mart.daily_funnel") == {
        "mart.sessions",
        "staging.stg_events",
        "staging.stg_identities",
        "raw.events",
    }
    assert {"mart.daily_sales", "mart.tracking_coverage"} <= (
        traced.lineage.downstream_tables("raw.cdc_order_items")
    )


def test_every_model_column_is_traced(
    traced: TracedLineage, table_columns: dict[str, list[str]]
) -> None:
    """Each model's traced columns are exactly the columns the warehouse built, and each
    source column named is one the warehouse has."""
    by_table: dict[str, set[str]] = {}
    for column, sources in traced.lineage.columns.items():
        by_table.setdefault(column.table, set()).add(column.column)
        for source in sources:
            assert source.column in table_columns[source.table], source
            # An incremental model reads its own table for its high-water mark: not an origin.
            assert source.table != column.table, (column, source)
    assert by_table == {table: set(table_columns[table]) for table in EXPECTED_TABLES}


def test_net_revenue_goes_back_to_the_order_lines_json(traced: TracedLineage) -> None:
    net_revenue = col("mart.daily_sales", "net_revenue")
    # gross minus cancelled minus refunded line revenue: quantity x unit price, by status.
    assert traced.lineage.columns[net_revenue] == (
        col("staging.stg_order_items", "quantity"),
        col("staging.stg_order_items", "unit_price"),
        col("staging.stg_orders", "status"),
    )
    upstream = traced.lineage.upstream_columns(net_revenue)
    assert col("raw.cdc_order_items", "after") in upstream
    assert col("raw.cdc_orders", "after") in upstream
    # The staging model types the JSON of the change (after, or before for a delete).
    assert traced.lineage.columns[col("staging.stg_order_items", "quantity")] == (
        col("raw.cdc_order_items", "after"),
        col("raw.cdc_order_items", "before"),
    )


def test_columns_checked_by_hand(traced: TracedLineage) -> None:
    columns = traced.lineage.columns
    # sum(case when event_type = 'purchase' then revenue end)
    assert columns[col("mart.sessions", "revenue")] == (
        col("staging.stg_events", "event_type"),
        col("staging.stg_events", "revenue"),
    )
    # revenue is json_extract_string(props, '$.revenue'), props from raw.events.properties.
    assert col("raw.events", "properties") in traced.lineage.upstream_columns(
        col("mart.sessions", "revenue")
    )
    # count(*): computed from no column; the step counts are from the step timestamps.
    assert columns[col("mart.daily_funnel", "sessions")] == ()
    assert columns[col("mart.daily_funnel", "purchase_sessions")] == (
        col("mart.sessions", "purchase_at"),
    )
    assert columns[col("staging.stg_events", "event_type")] == (col("raw.events", "event_type"),)
    # An UNNEST of the purchase's items: the item columns come from the event's properties.
    assert columns[col("staging.stg_event_items", "quantity")] == (
        col("staging.stg_events", "properties"),
    )
    # A literal per branch of a UNION ALL.
    assert columns[col("monitoring.pipeline_freshness", "raw_table")] == ()


def test_bigquery_sql_gives_the_same_lineage(
    manifest: dict[str, Any], table_columns: dict[str, list[str]], traced: TracedLineage
) -> None:
    """The same models as BigQuery SQL (sqlglot's transpilation of the DuckDB build, with a
    project in front of each dataset, as dbt-bigquery writes them) trace the same."""
    bigquery = copy.deepcopy(manifest)
    for node in bigquery["nodes"].values():
        if node.get("compiled_code"):
            tree = sqlglot.parse_one(node["compiled_code"], read="duckdb")
            for table in tree.find_all(exp.Table):
                if table.args.get("catalog"):
                    table.set("catalog", exp.to_identifier("some-project"))
            node["compiled_code"] = tree.sql("bigquery")
    assert trace_lineage(bigquery, table_columns, "bigquery").lineage == traced.lineage


def test_what_cannot_be_traced_is_said(
    manifest: dict[str, Any], table_columns: dict[str, list[str]]
) -> None:
    """A model sqlglot cannot parse or that has no compiled SQL keeps its table edges; a table
    the warehouse has no columns for and a column no table has are named in the warnings."""
    broken = copy.deepcopy(manifest)
    broken["nodes"]["model.shopstream.daily_sales"]["compiled_code"] = "select from where ("
    del broken["nodes"]["model.shopstream.daily_funnel"]["compiled_code"]
    broken["nodes"]["model.shopstream.odd"] = {
        "resource_type": "model",
        "schema": "mart",
        "alias": "odd",
        "depends_on": {"nodes": ["source.shopstream.raw.events"]},
        "compiled_code": 'select e.event_id, mystery from "shopstream"."raw"."events" as e'
        ' cross join "shopstream"."raw"."dead_letter" as d',
    }
    columns = {t: c for t, c in table_columns.items() if t != "staging.stg_identities"}
    traced = trace_lineage(broken, columns, "duckdb")
    assert traced.lineage.tables["mart.daily_sales"] == EXPECTED_TABLES["mart.daily_sales"]
    assert traced.lineage.tables["mart.daily_funnel"] == ("mart.sessions",)
    assert traced.lineage.tables["mart.odd"] == ("raw.dead_letter", "raw.events")
    traced_tables = {column.table for column in traced.lineage.columns}
    assert not traced_tables & {"mart.daily_sales", "mart.daily_funnel"}
    assert traced.lineage.columns[col("mart.odd", "event_id")] == (col("raw.events", "event_id"),)
    assert traced.lineage.columns[col("mart.odd", "mystery")] == ()
    # sqlglot's own wording of the parse error is its business: the sentence starts ours.
    assert traced.warnings[1].startswith(
        "mart.daily_sales: sqlglot cannot parse its compiled SQL: "
    )
    assert len(traced.warnings[1]) > len(
        "mart.daily_sales: sqlglot cannot parse its compiled SQL: "
    )
    assert [w for i, w in enumerate(traced.warnings) if i != 1] == [
        "mart.daily_funnel: no compiled SQL in the manifest (run dbt compile first)",
        "mart.odd: sqlglot could not tie mystery to a table: column lineage through them is"
        " incomplete",
        # Its unqualified user_id could come from stg_identities, whose columns are unknown.
        "mart.sessions: sqlglot could not tie user_id to a table: column lineage through them"
        " is incomplete",
        "mart.sessions: the warehouse has no columns for staging.stg_identities (not built"
        " yet?): its column lineage through them is incomplete",
    ]


def test_an_incremental_model_reading_its_own_table_is_not_its_own_origin() -> None:
    """Compiled incrementally (its table exists), a CDC staging model joins its own table to
    keep unchanged values: those columns come from the change table, not from itself."""
    manifest = {
        "nodes": {
            "model.shop.stg_orders": {
                "resource_type": "model",
                "schema": "staging",
                "alias": "stg_orders",
                "depends_on": {"nodes": ["source.shop.raw.cdc_orders"]},
                "compiled_code": "select t.order_id, coalesce(t.status, d.status) as status,"
                " d._cdc_change_id as _cdc_target_id"
                ' from "db"."raw"."cdc_orders" as t'
                ' left join "db"."staging"."stg_orders" as d on d.order_id = t.order_id',
            }
        },
        "sources": {"source.shop.raw.cdc_orders": {"schema": "raw", "identifier": "cdc_orders"}},
    }
    columns = {
        "raw.cdc_orders": ["order_id", "status"],
        "staging.stg_orders": ["order_id", "status", "_cdc_change_id"],
    }
    traced = trace_lineage(manifest, columns, "duckdb")
    assert traced.lineage.tables == {"staging.stg_orders": ("raw.cdc_orders",)}
    assert traced.lineage.columns == {
        col("staging.stg_orders", "_cdc_target_id"): (),
        col("staging.stg_orders", "order_id"): (col("raw.cdc_orders", "order_id"),),
        col("staging.stg_orders", "status"): (col("raw.cdc_orders", "status"),),
    }
    assert traced.warnings == ()
