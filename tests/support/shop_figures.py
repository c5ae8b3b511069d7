"""The shop database's own figures, straight from PostgreSQL, in a form comparable with what
the warehouse's staging and marts hold (exact: decimals normalised, never rounded)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg

#: mart.daily_sales's columns in the order :func:`daily_sales` gives them.
DAILY_SALES_COLUMNS = (
    "order_date, category, delivery_type, orders, customers, items, gross_revenue, "
    "cancelled_orders, cancelled_revenue, refunded_orders, refunded_revenue, net_revenue, aov"
)


def normalise(value: Any) -> Any:
    """One comparable form for a value from PostgreSQL (psycopg) or DuckDB; exact, never rounded."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, Decimal):
        return value.normalize() if value == value else "NaN"
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def pg_rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        conn.execute("SET intervalstyle = iso_8601")
        return [tuple(normalise(v) for v in row) for row in conn.execute(sql).fetchall()]


def daily_sales(dsn: str, timezone: str) -> list[tuple[Any, ...]]:
    """daily_sales as the shop database says it, by business day in ``timezone``: rows of
    :data:`DAILY_SALES_COLUMNS`, ordered by day, category and delivery type."""
    sql = f"""
    WITH lines AS (
        SELECT (o.created_at AT TIME ZONE '{timezone}')::date AS order_date, p.category,
               o.delivery_type, o.order_id, o.user_id, o.status, i.quantity,
               i.quantity * i.unit_price AS revenue
        FROM orders o JOIN order_items i USING (order_id) JOIN products p USING (product_id))
    SELECT order_date, category, delivery_type, count(DISTINCT order_id),
           count(DISTINCT user_id), sum(quantity), sum(revenue),
           count(DISTINCT order_id) FILTER (WHERE status = 'CANCELLED'),
           coalesce(sum(revenue) FILTER (WHERE status = 'CANCELLED'), 0),
           count(DISTINCT order_id) FILTER (WHERE status = 'REFUNDED'),
           coalesce(sum(revenue) FILTER (WHERE status = 'REFUNDED'), 0)
    FROM lines GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
    expected = []
    for row in pg_rows(dsn, sql):
        *counts, cancelled, cancelled_revenue, refunded, refunded_revenue = row
        gross = counts[-1]
        net = gross - cancelled_revenue - refunded_revenue
        kept = counts[3] - cancelled - refunded
        aov = (net / kept).quantize(Decimal("0.01"), ROUND_HALF_UP) if kept else None
        expected.append(
            (*counts, cancelled, cancelled_revenue, refunded, refunded_revenue,
             normalise(net), normalise(aov))
        )  # fmt: skip
    return expected


def customer_rfm(dsn: str, timezone: str) -> list[tuple[Any, ...]]:
    """Per customer with orders kept (not cancelled or refunded), by user_id: (user_id,
    frequency, monetary, last order's business day) — mart.customer_rfm's raw figures."""
    return pg_rows(
        dsn,
        f"""SELECT user_id, count(*), sum(total_amount),
                   max((created_at AT TIME ZONE '{timezone}')::date)
            FROM orders WHERE status NOT IN ('CANCELLED', 'REFUNDED')
            GROUP BY user_id ORDER BY user_id""",
    )
