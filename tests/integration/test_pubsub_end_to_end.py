"""End to end through Pub/Sub: collector → Pub/Sub (the emulator) → `shopstream load` →
DuckDB gives the same raw rows as collector → DuckDB directly, for the same requests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx

from shopstream.config import Settings
from shopstream.sinks import open_sink
from tests.support.collector import CollectorProcess, free_port
from tests.support.loader import loader_process, wait_until
from tests.support.metrics import value
from tests.support.pubsub_emulator import PubSubEmulator, pull_once
from tests.support.rows import event_row

PROJECT = "shop-e2e"
#: Columns that differ between two collectors by nature: when each received the request.
EVENT_COLUMNS = (
    "event_id, event_type, event_name, event_ts, event_date, user_id, anonymous_id, "
    "session_id, device_type, page_url, referrer, utm_source, utm_medium, utm_campaign, ip, "
    "user_agent, source, properties, payload"
)


def requests() -> list[list[dict[str, Any]]]:
    """A shop's traffic: sessions of several event types, and some events that are refused
    (they become dead letters)."""
    now = datetime.now(UTC)
    batches = []
    for n in range(12):
        session = f"s-{n % 4}"
        batch: list[dict[str, Any]] = [
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "product_view",
                "event_ts": now.isoformat(),
                "anonymous_id": f"anon-{n % 4}",
                "session_id": session,
                "device_type": "web_mobile",
                "page_url": f"https://shop.example/p/{n}",
                "utm_source": "newsletter",
                "properties": {"product_id": f"P{n}", "price": f"{n}.99"},
            },
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "search",
                "event_ts": now.isoformat(),
                "user_id": f"u-{n}",
                "session_id": session,
                "properties": {"query": "wool socks ü", "results_count": n},
            },
        ]
        if n % 3 == 0:
            batch.append({"event_id": str(uuid.uuid4()), "event_type": "teleport"})
        batches.append(batch)
    return batches


def post_all(collector: CollectorProcess, batches: list[list[dict[str, Any]]]) -> None:
    for batch in batches:
        response = httpx.post(f"{collector.url}/v1/events", json=batch, timeout=30)
        assert response.status_code == 200, response.text


def load(data_dir: Path, env: dict[str, str]) -> str:
    """`shopstream load --from pubsub://...` until nothing arrives for 3 s; its output."""
    data_dir.mkdir(parents=True, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    environment.update({"SHOPSTREAM_DATA_DIR": str(data_dir), **env})
    command = [sys.executable, "-m", "shopstream", "load", "--from", f"pubsub://{PROJECT}"]
    done = subprocess.run(
        [*command, "--idle-exit", "3"],
        env=environment,
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return sorted(connection.execute(sql).fetchall(), key=repr)


def test_collector_through_pubsub_and_the_loader_gives_the_same_raw_rows_as_direct(
    pubsub_emulator: PubSubEmulator, pubsub_host: str, tmp_path: Path
) -> None:
    transport = {
        "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        "SHOPSTREAM_TRANSPORT__TOPIC_PREFIX": f"e2e{uuid.uuid4().hex[:6]}",
        "SHOPSTREAM_LOADER__BATCH_WAIT_MS": "50",
    }
    direct = CollectorProcess(tmp_path / "direct").start()
    published = CollectorProcess(
        tmp_path / "published", env={**transport, "SHOPSTREAM_SINK_URL": f"pubsub://{PROJECT}"}
    ).start()
    try:
        traffic = requests()
        post_all(direct, traffic)
        post_all(published, traffic)
    finally:
        assert published.stop() == 0, published.log()
        assert direct.stop() == 0, direct.log()
    # The publishing collector never opened a warehouse: the loader's is the only copy.
    assert not published.warehouse_path.exists()

    loaded_dir = tmp_path / "loaded"
    load(loaded_dir, transport)
    loaded, expected = loaded_dir / "shopstream.duckdb", direct.warehouse_path

    sql = f"SELECT {EVENT_COLUMNS} FROM raw.events"
    want = rows(expected, sql)
    assert len(want) == 24
    assert rows(loaded, sql) == want
    letters = "SELECT source, reason, payload FROM raw.dead_letter"
    want_letters = rows(expected, letters)
    assert len(want_letters) == 4
    assert rows(loaded, letters) == want_letters

    # Every message was acknowledged once loaded: the loader's subscriptions hold nothing.
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    prefix = transport["SHOPSTREAM_TRANSPORT__TOPIC_PREFIX"]
    for topic in (f"{prefix}.events", f"{prefix}.dead_letter"):
        path = subscriber.subscription_path(PROJECT, f"{topic}.shopstream-loader")
        assert pull_once(subscriber, path, 100, 2.0) == [], topic
    subscriber.close()


def test_a_loader_killed_while_its_warehouse_is_frozen_loses_nothing(
    pubsub_host: str, tmp_path: Path
) -> None:
    """Messages are acknowledged only once their rows are durable: a loader killed -9 while
    its batches could not be written leaves them to be delivered again (after the 10 s ack
    deadline), and the next loader loads them."""
    prefix = f"kill{uuid.uuid4().hex[:6]}"
    settings = Settings(
        data_dir=tmp_path,
        sink_url=f"pubsub://{PROJECT}",
        transport={"topic_prefix": prefix},  # type: ignore[arg-type]
        # The subscriptions get it when created (by this sink): the loader's deadline.
        pubsub={"ack_deadline_seconds": 10},  # type: ignore[arg-type]
    )
    sink = open_sink(settings, None)
    sink.start()  # creates the topics with the loader's subscriptions

    def publish(first: int, count: int) -> None:
        rows = [
            event_row(f"k-{n:05d}", anonymous_id=f"a-{n % 7}", session_id=f"s-{n % 7}")
            for n in range(first, first + count)
        ]
        sink.submit({"events": rows}).result(30)

    port = free_port()
    env = {
        "PUBSUB_EMULATOR_HOST": pubsub_host,
        "SHOPSTREAM_PUBSUB__ACK_DEADLINE_SECONDS": "10",
        "SHOPSTREAM_LOADER__BATCH_MESSAGES": "50",
        "SHOPSTREAM_LOADER__METRICS_PORT": str(port),
        "SHOPSTREAM_COLLECTOR__HOST": "127.0.0.1",
    }
    read = f"http://127.0.0.1:{port}", "shopstream_loader_read_messages_total"
    try:
        publish(0, 200)
        with loader_process(
            tmp_path / "loaded", f"pubsub://{PROJECT}", prefix=prefix, **env
        ) as loader:
            count = "SELECT count(DISTINCT event_id) AS n FROM raw.events"
            loader.wait_for(count, 200)
            writer = loader.writer()
            writer.send_signal(signal.SIGSTOP)  # nothing becomes durable from here on
            publish(200, 100)
            # The loader has read them and handed them over (not durable): an ack before the
            # rows are durable would have lost them to the kill below.
            wait_until(lambda: value(*read) >= 300)
            time.sleep(0.5)
            loader.kill()  # and the frozen writer with it
            loader.start()
            loader.wait_for(count, 300, timeout=90)
            assert (
                loader.count("SELECT count(*) AS n FROM raw.events WHERE event_id LIKE 'k-%'")
                >= 300
            )
    finally:
        sink.close()
