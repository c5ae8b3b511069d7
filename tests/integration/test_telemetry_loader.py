"""`shopstream load` telemetry against a real Kafka-protocol broker (noida-db): the metrics
listener's /healthz while loading and once the sink is broken for good, data freshness after
the loader's append, and its ``loader.batch`` spans linked from the group commit."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx

from shopstream.events.messages import Topics, encode
from tests.support import metrics
from tests.support.cdc import wait_for
from tests.support.collector import free_port
from tests.support.kafka_broker import KafkaBroker
from tests.support.loader import LoaderProcess, create_topics, produce
from tests.support.rows import event_row
from tests.support.traces import console_spans


def test_loader_health_freshness_and_batch_spans(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topics = Topics(f"telemetry-{uuid.uuid4().hex[:6]}")
    create_topics(kafka_broker.bootstrap, [topics.events])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    loader = LoaderProcess(
        tmp_path / "loaded",
        kafka_broker.url,
        prefix=topics.prefix,
        SHOPSTREAM_LOADER__METRICS_PORT=str(port),
        SHOPSTREAM_OBSERVABILITY__TRACING="console",
        SHOPSTREAM_SINK__WRITER_RESTARTS="0",
    ).start()
    try:
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
        sent_at = time.time()
        produce(
            kafka_broker.bootstrap,
            encode(
                "events",
                [event_row(f"t-{i}", anonymous_id="a-1", session_id="s-1") for i in range(5)],
                topics,
            ),
        )
        loader.wait_for("SELECT count(*) AS n FROM raw.events", 5)
        newest = metrics.value(
            url, "shopstream_raw_newest_record_timestamp_seconds", table="events"
        )
        assert abs(newest - sent_at) < 60, (newest, sent_at)
        assert metrics.value(url, "shopstream_sink_queue_limit_rows") > 0

        loader.writer().kill()

        def unhealthy() -> bool:
            return httpx.get(f"{url}/healthz", timeout=10).status_code == 503

        wait_for(unhealthy, "/healthz failing once the warehouse writer is gone", timeout=30)
        assert "writer" in httpx.get(f"{url}/healthz", timeout=10).json()["reason"]
    finally:
        loader.stop()
    spans = console_spans(loader.log())
    batches = [s for s in spans if s["name"] == "loader.batch"]
    assert sum(b["attributes"].get("loader.rows", 0) for b in batches) == 5, batches
    assert {b["resource"]["attributes"]["service.name"] for b in batches} == {"shopstream-load"}
    batch_ids = {b["context"]["span_id"] for b in batches}
    linked = {
        link["context"]["span_id"]
        for s in spans
        if s["name"] == "sink.commit"
        for link in s["links"]
    }
    assert batch_ids <= linked, spans
