"""`shopstream run --generate` with a shop database, in-process: the platform's clickstream
places real orders (through the shared shop the order workload moves) before it reports them.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import psycopg

from shopstream.config import Settings
from shopstream.generators.shop import setup_shop_schema
from shopstream.platform import Parts, Platform, Traffic


def test_run_generate_reports_purchases_of_orders_the_shop_placed(
    postgres: Any, tmp_path: Path
) -> None:
    setup_shop_schema(postgres.dsn)
    settings = Settings(
        data_dir=tmp_path,
        sink={"writer_process": False},
        timezone="Asia/Seoul",
        generate={"purchase_event_loss": 0.2},
    )
    parts = Parts(
        host="127.0.0.1",
        port=0,
        cdc_dsn=postgres.dsn,
        # Fast thinkers, so that sessions reach their checkout within the run.
        traffic=Traffic(rate=3_000, bad_fraction=0.0, think_scale=0.005),
        orders_tps=40,
        duration=6,
    )
    platform = Platform(settings, parts)
    try:
        summary = asyncio.run(platform.run(duration=6))
        purchases = [
            orjson.loads(row["properties"])
            for row in platform.warehouse.query(
                "SELECT properties FROM raw.events WHERE event_type = 'purchase'"
            ).to_pylist()
        ]
    finally:
        platform.close()
    assert summary.failures == ()
    clicks, shop = summary.generator, summary.orders
    assert clicks is not None and shop is not None
    with psycopg.connect(postgres.dsn) as conn:
        totals = dict(conn.execute("SELECT order_id, total_amount FROM orders"))
    assert purchases, "no purchase to check"
    for props in purchases:
        assert Decimal(props["revenue"]) == totals[props["order_id"]]
    # The truth's checkouts are the shop's: placed there, and counted on both sides.
    assert set(clicks.session_orders) <= set(totals)
    assert shop.session_orders == len(clicks.session_orders)
    tracking = clicks.tracking.values()
    assert sum(t.matched for t in tracking) == len(purchases) == clicks.purchases
    assert sum(t.orders for t in tracking) - len(purchases) == sum(
        t.lost_on_purpose for t in tracking
    )
    # Checkout orders are in the workload's order book (test_coherent_generator shows them
    # moved; here the run is too short to be sure any got its turn).
    assert sum(shop.orders_by_status.values()) >= shop.session_orders > 0
