"""The Beam pipeline as ``python -m shopstream.beam --from pubsub://...`` starts it: reading
the Pub/Sub emulator (ReadFromPubSub with attributes, streaming, BundleBasedDirectRunner) what
the Pub/Sub sink published, into a real DuckDB file.

One run for the module (Beam's start-up is slow): the sink publishes events, a change and a
poison message first (the pipeline's subscriptions exist already: Pub/Sub keeps messages for
them), then the pipeline runs until the warehouse holds everything, and is
cancelled (the DirectRunner cannot run a streaming pipeline for a set time).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shopstream.config import Settings
from shopstream.events.messages import Topics, decode, encode
from tests.support.beam_venv import BEAM_PYTHON, beam_env, landed_rows, skip_without_beam
from tests.support.pubsub_emulator import PubSubEmulator, subscribe
from tests.support.rows import event_row

pytestmark = skip_without_beam

SCENARIOS = Path(__file__).resolve().parents[1] / "support" / "beam_scenarios.py"
PROJECT = "shop-beam"
TOPICS = Topics()
CHANGES = TOPICS.changes("public", "orders")
WINDOW_SECONDS = 2


@dataclass
class Landed:
    events: list[dict[str, Any]]
    tables: dict[str, list[dict[str, Any]]]
    #: Rows per layer when the run was cancelled.
    landed: dict[str, int]
    poison: bytes


def _events(now: datetime) -> list[dict[str, Any]]:
    kinds = [("page_view", "ios"), ("page_view", "ios"), ("page_view", "android")]
    rows = [
        event_row(
            f"p-{n}",
            event_type=kind,
            device_type=device,
            anonymous_id=f"a-{n}",
            session_id=f"s-{n % 2}",
            event_ts=now,
            received_at=now,
            event_date=now.date(),
        )
        for n, (kind, device) in enumerate(kinds)
    ]
    rows.append(
        event_row(
            "p-buy",
            event_type="purchase",
            device_type="web_mobile",
            anonymous_id="a-buy",
            session_id="s-buy",
            event_ts=now,
            received_at=now,
            event_date=now.date(),
            properties='{"order_id":"o-1","revenue":42.5}',
        )
    )
    return rows


def _change(now: datetime) -> dict[str, Any]:
    return {
        "change_id": "00000000016B3748-00000002",
        "op": "c",
        "lsn": 23803721,
        "tx_id": 772,
        "commit_ts": now,
        "commit_date": now.date(),
        "key": '{"id":8}',
        "before": None,
        "after": '{"id":8,"total":"1.00"}',
        "source": '{"schema":"public","table":"orders","txId":772,"lsn":23803721}',
        "ingested_at": now,
    }


@pytest.fixture(scope="module")
def landed(pubsub_emulator: PubSubEmulator, tmp_path_factory: pytest.TempPathFactory) -> Landed:
    from google.cloud import pubsub_v1

    from shopstream.sinks.pubsub import PubSubSink

    work = tmp_path_factory.mktemp("beam-pubsub")
    now = datetime.now(UTC).replace(microsecond=0)
    events, poison = _events(now), b'{"event_id": "half a message'
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
        for topic in (TOPICS.events, CHANGES):
            subscribe(PROJECT, topic, f"{topic}.shopstream-beam")
        sink = PubSubSink(PROJECT, Settings())
        sink.start()
        try:
            sink.submit({"events": events, "cdc_orders": [_change(now)]}).result(timeout=30)
        finally:
            sink.close()
        publisher = pubsub_v1.PublisherClient()
        publisher.publish(
            publisher.topic_path(PROJECT, TOPICS.events), poison, **{"shopstream.table": "events"}
        ).result(timeout=30)
    warehouse, out = work / "w" / "shopstream.duckdb", work / "out.json"
    env = beam_env(
        PUBSUB_EMULATOR_HOST=pubsub_emulator.host,
        SHOPSTREAM_DATA_DIR=str(work / "data"),
        SHOPSTREAM_WAREHOUSE_URL=f"duckdb:///{warehouse}",
        SHOPSTREAM_BEAM__WINDOW_SECONDS=str(WINDOW_SECONDS),
    )
    raw_rows = len(events) + 2  # the change, the poison message's dead letter
    mart_rows = len({(e["event_type"], e["device_type"]) for e in events})
    args = ["--from", f"pubsub://{PROJECT}", "--topic", TOPICS.events, "--topic", CHANGES]
    run = subprocess.run(
        [
            str(BEAM_PYTHON),
            str(SCENARIOS),
            "pubsub",
            str(out),
            str(raw_rows),
            str(mart_rows),
            "--",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if run.returncode:
        sys.stderr.write(run.stderr[-6000:])
    assert run.returncode == 0, f"the Beam Pub/Sub scenario failed: {run.stderr[-2000:]}"
    tables = landed_rows(warehouse)
    report = json.loads(out.read_text())
    print(f"Beam on the Pub/Sub emulator: seconds since start {report['seconds']}")
    return Landed(events, tables, report["landed"], poison)


def test_what_the_sink_published_lands_in_raw(landed: Landed) -> None:
    expected = []
    for message in encode("events", landed.events, TOPICS):
        decoded = decode(message.topic, message.key, message.value, message.headers, TOPICS)
        assert decoded is not None
        expected.append(decoded[1])
    by_id = sorted(landed.tables["raw.events"], key=lambda row: row["event_id"])
    assert by_id == sorted(expected, key=lambda row: row["event_id"])
    # The change's key travelled as the message's ordering key.
    [change] = landed.tables["raw.cdc_orders"]
    assert (change["change_id"], change["key"]) == ("00000000016B3748-00000002", '{"id":8}')


def test_a_poison_message_is_a_dead_letter_with_its_pubsub_message_id(landed: Landed) -> None:
    [dead] = landed.tables["raw.dead_letter"]
    assert dead["reason"].startswith("the value is not JSON")
    assert dead["payload"] == landed.poison.decode()
    context = json.loads(dead["context"])
    assert context["topic"] == TOPICS.events and context["message_id"]
    assert context["pipeline"] == "beam"


def test_the_window_aggregates_count_the_published_events(landed: Landed) -> None:
    latest: dict[tuple, dict[str, Any]] = {}
    for row in landed.tables["mart.realtime_activity"]:
        key = (row["window_start"], row["event_type"], row["device_type"])
        if key not in latest or row["pane_index"] > latest[key]["pane_index"]:
            latest[key] = row
    counted: Counter[tuple] = Counter()
    for event in landed.events:
        at = event["received_at"]
        start = at - timedelta(seconds=at.timestamp() % WINDOW_SECONDS)
        counted[(start, event["event_type"], event["device_type"])] += 1
    assert {key: row["events"] for key, row in latest.items()} == dict(counted)
    purchases = [row for key, row in latest.items() if key[1] == "purchase"]
    assert [str(row["revenue"]) for row in purchases] == ["42.5000"]
