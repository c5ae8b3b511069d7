"""The production shape lands the same raw rows as the embedded one.

collector → Kafka → `shopstream load` → DuckDB against collector → DuckDB for the same
requests, and CDC → Kafka → loader against CDC → DuckDB for the same transactions: every
column compared, except those each path stamps itself (``received_at`` when a collector
received a request, a change's ``ingested_at``, a dead letter's id and time, a schema
record's ``recorded_at``). The collector publishing to Kafka runs in the loader's data
directory: it never opens the warehouse, so the loader holds DuckDB's file beside it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from shopstream.config import Settings, TransportSettings
from shopstream.events.messages import Topics
from shopstream.platform import Parts, Platform
from shopstream.sinks import open_sink
from tests.support.cdc import ReaderThread, execute_sql
from tests.support.collector import CollectorProcess
from tests.support.kafka_broker import KafkaBroker
from tests.support.loader import LoaderProcess

NOW = datetime.now(UTC)
EVENT_COLUMNS = (
    "event_id, event_type, event_name, event_ts, event_date, user_id, anonymous_id, "
    "session_id, device_type, page_url, referrer, utm_source, utm_medium, utm_campaign, ip, "
    "user_agent, source, properties::VARCHAR AS properties, payload::VARCHAR AS payload"
)
LETTER_COLUMNS = "source, reason, payload, context::VARCHAR AS context"
CHANGE_COLUMNS = (
    "change_id, op, lsn, tx_id, commit_ts, commit_date, key::VARCHAR AS key, "
    "before::VARCHAR AS before, after::VARCHAR AS after, source::VARCHAR AS source"
)
SCHEMA_COLUMNS = (
    "raw_table, source_schema, source_table, version, fingerprint, columns::VARCHAR AS columns, "
    "primary_key::VARCHAR AS primary_key, replica_identity, first_lsn"
)


def _fresh() -> Topics:
    return Topics(f"same-{uuid.uuid4().hex[:6]}")


# -- collector -------------------------------------------------------------------------------


def _requests() -> list[tuple[str, Any]]:
    """Native events (with and without ids, nested properties, a rejected one) and a Segment
    batch (without sentAt: the client's timestamps stand, so both collectors agree)."""
    at = (NOW - timedelta(minutes=2)).isoformat()
    native = [
        {
            "event_type": "page_view",
            "event_id": str(uuid.uuid4()),
            "anonymous_id": "anon-1",
            "session_id": "s-1",
            "event_ts": at,
            "page_url": "https://shop.example/p/1?q=ü",
            "utm_source": "news",
            "properties": {"title": "Boots — 42", "nested": {"a": [1, 2.5, None, True]}},
        },
        {
            "event_type": "add_to_cart",
            "user_id": "u-7",
            "event_ts": at,
            "properties": {"product_id": "P9", "quantity": 2, "price": 19.9},
        },
        {"event_type": "teleport", "anonymous_id": "anon-1", "event_ts": at},  # rejected
    ]
    segment = {
        "batch": [
            {
                "type": "track",
                "event": "Product Added",
                "userId": "42",
                "messageId": f"m-{uuid.uuid4()}",
                "timestamp": at,
                "properties": {"sku": "P9", "quantity": 3},
                "context": {"page": {"url": "https://s/"}},
            },
            {
                "type": "page",
                "anonymousId": "anon-2",
                "messageId": f"m-{uuid.uuid4()}",
                "timestamp": at,
                "properties": {"url": "https://s/cart"},
            },
            {"type": "track", "event": "Gift Wrapped", "anonymousId": "a", "timestamp": at},
        ]
    }
    return [("/v1/events", native), ("/v1/batch", segment)]


def test_collector_to_kafka_to_the_loader_lands_the_same_raw_rows_as_collector_to_duckdb(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    topics = _fresh()
    direct = CollectorProcess(tmp_path / "direct").start()
    shared = tmp_path / "production"
    via_kafka = CollectorProcess(
        shared,
        env={
            "SHOPSTREAM_SINK_URL": kafka_broker.url,
            "SHOPSTREAM_TRANSPORT__TOPIC_PREFIX": topics.prefix,
        },
    ).start()
    # Beside the collector, on the same data directory: the collector has not opened the
    # warehouse, so the loader can hold the file.
    loader = LoaderProcess(shared, kafka_broker.url, prefix=topics.prefix)
    try:
        loader.start()
        for path, body in _requests():
            for collector in (direct, via_kafka):
                response = httpx.post(
                    f"{collector.url}{path}", json=body, headers={"user-agent": "t/1"}, timeout=30
                )
                assert response.status_code == 200, response.text
        expected = direct.query(f"SELECT {EVENT_COLUMNS} FROM raw.events ORDER BY event_id")
        letters = direct.query(f"SELECT {LETTER_COLUMNS} FROM raw.dead_letter ORDER BY reason")
        assert len(expected) == 5 and len(letters) == 1
        assert {row["source"] for row in expected} == {"native", "segment"}
        loader.wait_for("SELECT count(*) AS n FROM raw.events", len(expected))
        loader.wait_for("SELECT count(*) AS n FROM raw.dead_letter", len(letters))
        loaded = loader.query(f"SELECT {EVENT_COLUMNS} FROM raw.events ORDER BY event_id")
        loaded_letters = loader.query(
            f"SELECT {LETTER_COLUMNS} FROM raw.dead_letter ORDER BY reason"
        )
        assert direct.stop() == 0 and via_kafka.stop() == 0
        assert loader.stop() == 0, loader.log()
    finally:
        for process in (direct, via_kafka):
            process.kill()
        loader.kill()
    assert loaded == expected
    assert loaded_letters == letters


# -- CDC -------------------------------------------------------------------------------------

SHOP = [
    """CREATE TABLE orders (
        id int PRIMARY KEY, total numeric(12, 2), note text, tags jsonb, placed timestamptz
    )""",
    "CREATE TABLE order_lines (order_id int, sku text, qty int, PRIMARY KEY (order_id, sku))",
]
TRANSACTIONS = [
    [
        "INSERT INTO orders VALUES (1, 9.90, 'first', '{\"gift\": true}', now()),"
        " (2, 120.00, 'ünïcode \"quoted\"', NULL, now())",
        "INSERT INTO order_lines VALUES (1, 'P1', 1), (1, 'P2', 3), (2, 'P9', 1)",
    ],
    ["UPDATE orders SET total = 11.00, note = NULL WHERE id = 1"],
    [
        "DELETE FROM order_lines WHERE order_id = 1 AND sku = 'P2'",
        "DELETE FROM orders WHERE id = 2",
    ],
    ["TRUNCATE order_lines"],
    ["INSERT INTO orders VALUES (3, 0.01, 'after the truncate', '[]', now())"],
]


def test_cdc_to_kafka_to_the_loader_lands_the_same_raw_rows_as_cdc_to_duckdb(
    kafka_broker: KafkaBroker, postgres: Any, tmp_path: Path
) -> None:
    topics = _fresh()
    execute_sql(postgres.dsn, *SHOP)
    settings = Settings(
        data_dir=tmp_path / "unused",
        sink_url=kafka_broker.url,
        transport=TransportSettings(topic_prefix=topics.prefix),
    )
    common = {"snapshot_mode": "never", "batch_max_ms": 50}
    # Both slots exist before the transactions: both readers see the same changes, with the
    # same commit LSNs, so the same change ids.
    direct = ReaderThread(
        postgres.dsn, tmp_path / "direct", slot_name="direct", publication_name="direct", **common
    ).start()
    via_kafka = ReaderThread(
        postgres.dsn,
        tmp_path / "reader",
        sink=open_sink(settings, None),
        slot_name="via_kafka",
        publication_name="via_kafka",
        **common,
    ).start()
    try:
        for transaction in TRANSACTIONS:
            execute_sql(postgres.dsn, "BEGIN", *transaction, "COMMIT")
        direct.wait_until(lambda: direct.count("cdc_orders") >= 5, "the direct changes")
        final = direct.reader.stats.snapshot().confirmed_lsn
        via_kafka.wait_until(
            lambda: (via_kafka.reader.stats.snapshot().confirmed_lsn or 0) >= (final or 0),
            "the changes acknowledged by the broker",
        )
        expected = {
            table: direct.query(f"SELECT {CHANGE_COLUMNS} FROM raw.{table} ORDER BY change_id")
            for table in ("cdc_orders", "cdc_order_lines")
        }
        schemas = direct.query(
            f"SELECT {SCHEMA_COLUMNS} FROM raw.source_schemas ORDER BY raw_table, version"
        )
    finally:
        direct.stop()
        via_kafka.stop()
    assert sorted({row["op"] for rows in expected.values() for row in rows}) == ["c", "d", "t", "u"]
    assert len(schemas) == 2
    loader = LoaderProcess(
        tmp_path / "loaded", kafka_broker.url, prefix=topics.prefix, args=["--idle-exit", "2"]
    ).start()
    try:
        assert loader.wait(120) == 0, loader.log()
    finally:
        loader.kill()
    for table, rows in expected.items():
        loaded = loader.read(f"SELECT {CHANGE_COLUMNS} FROM raw.{table} ORDER BY change_id")
        assert loaded == rows, table
    assert (
        loader.read(f"SELECT {SCHEMA_COLUMNS} FROM raw.source_schemas ORDER BY raw_table, version")
        == schemas
    )
    # The deletes' tombstones were read and loaded nothing: no dead letters either.
    assert loader.read("SELECT count(*) AS n FROM raw.dead_letter") == [{"n": 0}]


# -- composition -----------------------------------------------------------------------------


def test_a_process_publishing_to_a_broker_never_opens_the_warehouse(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, sink_url=kafka_broker.url)
    collector = Platform(settings, Parts(collector=True, port=0))
    try:
        assert collector.warehouse is None and collector.queries is None
    finally:
        collector.close()
    assert not (tmp_path / "shopstream.duckdb").exists()
    # Scheduled transforms or a loader need it, whatever the sink.
    assert Platform.needs_warehouse(settings, Parts(schedule_transforms=True))
    assert Platform.needs_warehouse(settings, Parts(loader_url=kafka_broker.url))
    assert Platform.needs_warehouse(Settings(data_dir=tmp_path), Parts())
