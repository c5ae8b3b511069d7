"""The headline marts ``shopstream run`` prints at its end, read through the warehouse's own
query path (the same read-only checks as ``shopstream sql``).

Only the marts that exist are shown: a project without the shop's tables builds no
``daily_sales``. Sales are summed per day over categories and delivery types (revenue and
items add up; distinct orders do not, so they are left to the mart itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

#: The newest days shown.
DAYS = 14


@dataclass(frozen=True)
class Headline:
    title: str
    mart: str
    #: Preferred query, then a plain one if the mart's columns are not the expected ones.
    queries: tuple[str, ...]
    #: Rows shown at most (the newest come first).
    rows: int = DAYS


HEADLINES = (
    Headline(
        "sales by day",
        "daily_sales",
        (
            "SELECT order_date, sum(items) AS items, sum(gross_revenue) AS gross, "
            "sum(cancelled_revenue) AS cancelled, sum(refunded_revenue) AS refunded, "
            "sum(net_revenue) AS net "
            "FROM mart.daily_sales GROUP BY order_date ORDER BY order_date DESC",
            "SELECT * FROM mart.daily_sales ORDER BY 1 DESC",
        ),
    ),
    Headline(
        "funnel",
        "daily_funnel",
        (
            # The steps as counts and the overall rate: what fits on a screen.
            "SELECT session_date AS day, device_type AS device, sessions, "
            "product_view_sessions AS product_view, add_to_cart_sessions AS add_to_cart, "
            "begin_checkout_sessions AS checkout, purchase_sessions AS purchase, "
            "round(overall_conversion_rate, 4) AS conversion "
            "FROM mart.daily_funnel ORDER BY 1 DESC, 2",
            "SELECT * FROM mart.daily_funnel ORDER BY 1 DESC, 2",
        ),
        rows=DAYS * 4,  # a row per device type
    ),
    Headline(
        "tracking coverage",
        "tracking_coverage",
        (
            "SELECT coverage_date AS day, orders_in_db, orders_in_events, matched_orders AS "
            "matched, orders_without_event AS without_event, revenue_difference, "
            "round(coverage_rate, 4) AS coverage FROM mart.tracking_coverage ORDER BY 1 DESC",
            "SELECT * FROM mart.tracking_coverage ORDER BY 1 DESC",
        ),
    ),
)


def headline_marts(warehouse: Any) -> list[tuple[str, pa.Table]]:
    """(title, rows) of each headline mart that exists, newest first."""
    from shopstream.warehouse import WarehouseError

    existing = {
        row["table_name"]
        for row in warehouse.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'mart'"
        ).to_pylist()
    }
    shown: list[tuple[str, pa.Table]] = []
    for headline in HEADLINES:
        if headline.mart not in existing:
            continue
        for sql in headline.queries:
            try:
                table = warehouse.query(sql, max_rows=headline.rows)
            except WarehouseError:
                continue
            shown.append(
                (f"{headline.title} (mart.{headline.mart})", table.slice(0, headline.rows))
            )
            break
    return shown


__all__ = ["HEADLINES", "headline_marts"]
