"""The headline marts `shopstream run` prints: only those that exist, read through the
warehouse's query path, sales summed per day."""

from __future__ import annotations

from pathlib import Path

import duckdb

from shopstream.transform.headline import headline_marts
from shopstream.warehouse.duckdb.database import DuckDBWarehouse


def test_only_existing_marts_are_shown_sales_summed_per_day(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA mart")
        con.execute(
            "CREATE TABLE mart.daily_sales AS SELECT * FROM (VALUES "
            "(DATE '2026-11-01', 'food', 'dawn', 3, 2, 5, 30.50::DECIMAL(18,2), "
            " 0.00::DECIMAL(18,2), 0.00::DECIMAL(18,2), 30.50::DECIMAL(18,2)), "
            "(DATE '2026-11-01', 'toys', 'parcel', 1, 1, 1, 10.00, 10.00, 0.00, 0.00), "
            "(DATE '2026-11-02', 'food', 'dawn', 2, 2, 4, 20.25, 0.00, 5.00, 15.25)) AS t("
            "order_date, category, delivery_type, orders, customers, items, gross_revenue, "
            "cancelled_revenue, refunded_revenue, net_revenue)"
        )
        con.execute(
            "CREATE TABLE mart.tracking_coverage AS "
            "SELECT DATE '2026-11-01' AS day, 10 AS orders, 9 AS matched"
        )
    warehouse = DuckDBWarehouse(path)
    try:
        shown = headline_marts(warehouse)
    finally:
        warehouse.close()
    assert [title for title, _ in shown] == [
        "sales by day (mart.daily_sales)",
        "tracking coverage (mart.tracking_coverage)",
    ]
    sales = shown[0][1].to_pylist()
    assert [
        (r["order_date"].isoformat(), str(r["gross"]), str(r["net"]), r["items"]) for r in sales
    ] == [
        ("2026-11-02", "20.25", "15.25", 4),
        ("2026-11-01", "40.50", "30.50", 6),
    ]
    assert shown[1][1].to_pylist()[0]["matched"] == 9
