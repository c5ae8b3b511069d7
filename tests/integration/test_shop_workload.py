"""The shop workload against a real PostgreSQL: what it says it committed is what is there."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shopstream.generators.products import build_catalogue
from shopstream.generators.shop import (
    ORDER_STATUSES,
    SHOP_TABLES,
    SeededRows,
    ShopTruth,
    WorkloadStats,
    run_order_workload,
    setup_shop_schema,
)


def scalar(conn: psycopg.Connection[Any], sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def table_counters(
    conn: psycopg.Connection[Any], expected: dict[str, tuple[int, int, int]]
) -> dict[str, tuple[int, int, int]]:
    """Rows inserted, updated, deleted per shop table, as PostgreSQL's statistics count them.

    A backend reports its counts when it exits, which the workload's connection has done;
    poll briefly (until ``expected`` shows up) in case the report is still on its way.
    """
    sql = """SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables
             WHERE schemaname = 'public'"""
    counters: dict[str, tuple[int, int, int]] = {}
    for _ in range(50):
        conn.execute("SELECT pg_stat_clear_snapshot()")
        counters = {name: (ins, upd, dele) for name, ins, upd, dele in conn.execute(sql)}
        if counters == expected:
            break
        time.sleep(0.1)
    return counters


def run(dsn: str, **options: Any) -> ShopTruth:
    return asyncio.run(run_order_workload(dsn, **options))


def test_setup_is_idempotent_and_seeds_the_catalogue(postgres: Any) -> None:
    catalogue = build_catalogue(1)
    assert setup_shop_schema(postgres.dsn) == SeededRows(
        users=len(catalogue.users), products=len(catalogue.products)
    )
    assert setup_shop_schema(postgres.dsn) == SeededRows(users=0, products=0)
    with psycopg.connect(postgres.dsn) as conn:
        # CDC keys every row by its primary key: every table has one.
        keyless = conn.execute(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind = 'r' AND NOT EXISTS (
                   SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p')"""
        ).fetchall()
        assert keyless == []
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert tables == set(SHOP_TABLES)
        row = conn.execute(
            "SELECT name, category, storage_type, price, stock FROM products WHERE product_id = %s",
            (catalogue.products[0].product_id,),
        ).fetchone()
        p = catalogue.products[0]
        assert row == (p.name, p.category, p.storage_type, p.price, p.stock)
        assert scalar(conn, "SELECT sum(stock) FROM products") == sum(
            p.stock for p in catalogue.products
        )


def test_truth_matches_the_database(postgres: Any, tmp_path: Path) -> None:
    setup_shop_schema(postgres.dsn)
    catalogue = build_catalogue(1)
    seeded_stock = sum(p.stock for p in catalogue.products)
    progress: list[WorkloadStats] = []
    truth_path = tmp_path / "shop_truth.json"
    truth = run(
        postgres.dsn, tps=400, duration=4, truth_path=truth_path, on_progress=progress.append
    )

    assert ShopTruth.read_json(truth_path) == truth
    assert 0 < truth.transactions <= 1_600
    assert progress and progress[-1].transactions == truth.transactions
    # The lifecycle was exercised: delivered, cancelled, refunded, members came and went.
    for status in ("PENDING", "DELIVERED", "CANCELLED", "REFUNDED"):
        assert truth.orders_by_status[status] > 0, status
    assert truth.changes["users"]["insert"] > 0 and truth.changes["users"]["delete"] > 0
    assert truth.price_changes > 0 and truth.grade_upgrades > 0

    with psycopg.connect(postgres.dsn) as conn:
        by_status = {
            status: (count, total)
            for status, count, total in conn.execute(
                "SELECT status, count(*), sum(total_amount) FROM orders GROUP BY status"
            )
        }
        assert {s: c for s, (c, _) in by_status.items()} == +truth.orders_by_status
        for status in ORDER_STATUSES:
            expected = truth.revenue_by_status.get(status, Decimal(0))
            assert by_status.get(status, (0, Decimal(0)))[1] == expected
        assert (
            scalar(
                conn,
                """SELECT sum(total_amount) FROM orders
                   WHERE status NOT IN ('CANCELLED', 'REFUNDED')""",
            )
            == truth.revenue
        )
        daily: dict[str, Decimal] = dict(
            conn.execute(
                """SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), sum(total_amount)
                   FROM orders WHERE status NOT IN ('CANCELLED', 'REFUNDED') GROUP BY 1"""
            ).fetchall()
        )
        assert daily == truth.revenue_by_date

        # Row counts follow from the inserts and deletes the truth reports.
        changes = truth.changes
        assert scalar(conn, "SELECT count(*) FROM orders") == changes["orders"]["insert"]
        assert scalar(conn, "SELECT count(*) FROM order_items") == changes["order_items"]["insert"]
        assert scalar(conn, "SELECT count(*) FROM payments") == changes["payments"]["insert"]
        assert scalar(conn, "SELECT count(*) FROM users") == (
            len(catalogue.users) + changes["users"]["insert"] - changes["users"]["delete"]
        )
        assert scalar(conn, "SELECT count(*) FROM products") == len(catalogue.products)
        assert changes["products"]["insert"] == changes["products"]["delete"] == 0
        # Every order move is one update; pay, cancel and refund also settle payments.
        assert scalar(conn, "SELECT count(*) FROM payments WHERE status = 'FAILED'") == (
            truth.payments_failed
        )
        assert scalar(conn, "SELECT sum(stock) FROM products") == (
            seeded_stock + truth.units_restocked + truth.units_returned - truth.units_ordered
        )
        assert scalar(conn, "SELECT sum(quantity) FROM order_items") == truth.units_ordered

        # An order's total is its lines; its delivery type is the storage type of its goods.
        assert (
            conn.execute(
                """SELECT o.order_id FROM orders o JOIN order_items i USING (order_id)
                   JOIN products p USING (product_id)
                   GROUP BY o.order_id, o.total_amount, o.delivery_type
                   HAVING o.total_amount <> sum(i.quantity * i.unit_price)
                       OR bool_or(p.storage_type <> o.delivery_type)"""
            ).fetchall()
            == []
        )
        # Line numbers run 1..n without gaps.
        assert (
            conn.execute(
                """SELECT order_id FROM order_items GROUP BY order_id
                   HAVING min(line_no) <> 1 OR max(line_no) <> count(*)"""
            ).fetchall()
            == []
        )
        # Payments agree with their order: one settled payment once paid, for the total,
        # cancelled with the order or refunded with it; declined attempts stay FAILED.
        payments: dict[str, list[tuple[str, Decimal, bool, bool]]] = {}
        for order_id, status, amount, paid_at, refunded_at in conn.execute(
            "SELECT order_id, status, amount, paid_at, refunded_at FROM payments"
        ):
            payments.setdefault(order_id, []).append(
                (status, amount, paid_at is not None, refunded_at is not None)
            )
        settled_as = {
            "PENDING": [],
            "PAID": ["PAID"],
            "PREPARING": ["PAID"],
            "SHIPPING": ["PAID"],
            "DELIVERED": ["PAID"],
            "REFUNDED": ["REFUNDED"],
        }
        for order_id, status, total in conn.execute(
            "SELECT order_id, status, total_amount FROM orders"
        ):
            mine = payments.get(order_id, [])
            assert all(amount == total for _, amount, _, _ in mine)
            settled = [p for p in mine if p[0] != "FAILED"]
            kinds = [p[0] for p in settled]
            if status == "CANCELLED":
                assert kinds in ([], ["CANCELLED"])  # cancelled before or after paying
            else:
                assert kinds == settled_as[status], (order_id, status, kinds)
            for kind, _, paid, refunded in settled:
                assert paid and refunded == (kind != "PAID")
            assert all(not paid and not refunded for k, _, paid, refunded in mine if k == "FAILED")
        # PostgreSQL's own row counters agree with the change counts CDC will be held to.
        assert truth.rolled_back == 0  # aborted rows would count there, but not here
        seeded = {"users": len(catalogue.users), "products": len(catalogue.products)}
        counted = {
            table: (
                seeded.get(table, 0) + changes[table]["insert"],
                changes[table]["update"],
                changes[table]["delete"],
            )
            for table in SHOP_TABLES
        }
        assert table_counters(conn, counted) == counted

        # Every order and line points at catalogue users and products.
        catalogue_products = {p.product_id for p in catalogue.products}
        ordered = {r[0] for r in conn.execute("SELECT DISTINCT product_id FROM order_items")}
        assert ordered <= catalogue_products
        assert scalar(conn, "SELECT count(*) FROM orders WHERE user_id NOT LIKE 'U%'") == 0


def test_a_second_run_continues_where_the_first_stopped(postgres: Any) -> None:
    setup_shop_schema(postgres.dsn)
    seeded_stock = sum(p.stock for p in build_catalogue(1).products)
    first = run(postgres.dsn, tps=300, duration=1.5)
    second = run(postgres.dsn, tps=300, duration=1.5)
    with psycopg.connect(postgres.dsn) as conn:
        assert scalar(conn, "SELECT count(*) FROM orders") == sum(
            t.changes["orders"]["insert"] for t in (first, second)
        )
        assert scalar(conn, "SELECT sum(stock) FROM products") == seeded_stock + sum(
            t.units_restocked + t.units_returned - t.units_ordered for t in (first, second)
        )
        # New members of the second run got fresh numbers, not the first run's.
        assert scalar(conn, "SELECT count(DISTINCT user_id) = count(*) FROM users")
        total = sum(t.revenue for t in (first, second))
        assert (
            scalar(
                conn,
                """SELECT sum(total_amount) FROM orders
                   WHERE status NOT IN ('CANCELLED', 'REFUNDED')""",
            )
            == total
        )


def test_stop_ends_the_workload(postgres: Any) -> None:
    setup_shop_schema(postgres.dsn)

    async def main() -> ShopTruth:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        return await run_order_workload(postgres.dsn, tps=100, duration=float("inf"), stop=stop)

    truth = asyncio.run(main())
    assert 0 < truth.transactions <= 100


def test_the_workload_needs_the_schema(postgres: Any) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable):
        run(postgres.dsn, tps=10, duration=0.1)
