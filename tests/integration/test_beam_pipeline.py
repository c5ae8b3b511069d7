"""The Beam pipeline on Beam's BundleBasedDirectRunner, fed by a TestStream, writing into a real
DuckDB file; asserted here on what landed.

Beam cannot be imported in the test venv (it needs pyarrow<26), so one scenario process runs
in ``.venv-beam`` (``make beam-venv``; ``make test`` builds it) over a stream built here from
the wire format (:func:`shopstream.events.messages.encode`), and every test reads the same
warehouse afterwards (Beam's start-up costs seconds: one run serves them all). What the
pipeline should have written is computed here independently: rows by ``decode`` itself,
reasons by ``decode``'s refusals, aggregates by counting the input.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from shopstream.events.messages import Message, PoisonMessage, Topics, decode, encode
from shopstream.events.raw import RAW_CDC
from shopstream.warehouse.duckdb.database import raw_table_ddl
from tests.support.beam_venv import BEAM_PYTHON, beam_env, landed_rows, skip_without_beam
from tests.support.rows import event_row

pytestmark = skip_without_beam

SCENARIOS = Path(__file__).resolve().parents[1] / "support" / "beam_scenarios.py"
TOPICS = Topics()
T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)  # window 0: [T0, T0 + 60 s)
WINDOW = timedelta(seconds=60)
LATENESS = timedelta(seconds=120)


@dataclass
class Scenario:
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: Every message fed, in order.
    messages: list[Message] = field(default_factory=list)
    #: Events counted by the on-time firing of their window, and by the window's last firing.
    on_time: list[dict[str, Any]] = field(default_factory=list)
    final: list[dict[str, Any]] = field(default_factory=list)
    #: In raw, in no aggregate: received after its window's allowed lateness.
    too_late: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, messages: list[Message], at: datetime) -> None:
        self.messages += messages
        self.steps.append(
            {
                "messages": [
                    {
                        "topic": m.topic,
                        "key": _b64(m.key),
                        "value": _b64(m.value),
                        "headers": m.headers,
                        "message_id": f"m-{len(self.messages) - len(messages) + i}",
                        "timestamp": at.timestamp(),
                    }
                    for i, m in enumerate(messages)
                ]
            }
        )

    def watermark(self, to: datetime) -> None:
        self.steps.append({"watermark": to.timestamp()})


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _event(n: int, event_type: str, device: str | None, at: datetime, revenue: str = "") -> dict:
    properties = {
        "purchase": f'{{"order_id":"o-{n}","revenue":{revenue}}}',
        "product_view": '{"product_id":"p-1"}',
        "add_to_cart": '{"product_id":"p-1","quantity":2}',
    }.get(event_type, "{}")
    return event_row(
        f"e-{n}",
        event_type=event_type,
        device_type=device,
        anonymous_id=f"a-{n % 3}",
        session_id=f"s-{n % 3}",
        event_ts=at,
        received_at=at,
        event_date=at.date(),
        properties=properties,
    )


def _events(rows: list[dict[str, Any]]) -> list[Message]:
    return encode("events", rows, TOPICS)


#: A change decode accepts and the test's raw.cdc_orders refuses (a CHECK made here).
REFUSED_CHANGE = "00000000016B3748-0000000F"


def _change(change_id: str = "00000000016B3748-00000001") -> Message:
    row = {
        "change_id": change_id,
        "op": "c",
        "lsn": 23803720,
        "tx_id": 771,
        "commit_ts": T0,
        "commit_date": T0.date(),
        "key": '{"id":7}',
        "before": None,
        "after": '{"id":7,"total":"9.90"}',
        "source": '{"schema":"public","table":"orders","txId":771,"lsn":23803720}',
        "ingested_at": T0,
    }
    import pyarrow as pa

    [message] = encode("cdc_orders", pa.Table.from_pylist([row], RAW_CDC), TOPICS)
    return message


def _poison(change: Message) -> list[Message]:
    """Messages decode refuses (each for its own reason), and a tombstone (nothing to load)."""
    purchase = _events([_event(90, "purchase", "ios", T0, "1")])[0]
    no_revenue = purchase.value.replace(b',"revenue":1', b"")  # type: ignore[union-attr]
    return [
        Message(TOPICS.events, b"s-1", b"{not json", {"shopstream.table": "events"}),
        Message("elsewhere.events", b"k", b"{}", {}),
        Message(TOPICS.events, purchase.key, no_revenue, dict(purchase.headers)),
        Message(
            change.topic,
            change.key,
            change.value,
            {k: v for k, v in change.headers.items() if k != "change_id"},
        ),
        Message(change.topic, change.key, None, dict(change.headers)),  # a tombstone
    ]


def build_scenario() -> Scenario:
    scenario = Scenario()
    second = timedelta(seconds=1)
    window_0 = [
        _event(1, "page_view", "ios", T0 + 1 * second),
        _event(2, "page_view", "ios", T0 + 2 * second),
        _event(3, "page_view", "web_desktop", T0 + 3 * second),
        _event(4, "purchase", "ios", T0 + 4 * second, "0.1"),
        _event(5, "purchase", "ios", T0 + 5 * second, "0.1"),
        _event(6, "purchase", "ios", T0 + 6 * second, "0.1"),
        _event(7, "purchase", "android", T0 + 7 * second, "19.99"),
        _event(8, "add_to_cart", None, T0 + 8 * second),
        _event(9, "product_view", "web_mobile", T0 + 59 * second),
    ]
    window_1 = [
        _event(10, "page_view", "ios", T0 + WINDOW),
        _event(11, "purchase", "web_mobile", T0 + WINDOW + 30 * second, "123456789.1234"),
    ]
    change = _change()
    scenario.feed(_events(window_0[:5]), T0 + 5 * second)
    scenario.feed([change, _change(REFUSED_CHANGE), *_poison(change)], T0 + 6 * second)
    scenario.feed(_events(window_0[5:] + window_1), T0 + WINDOW + 30 * second)
    # Window 0 closes: its on-time firing.
    scenario.watermark(T0 + WINDOW)
    late = _event(12, "purchase", "ios", T0 + 30 * second, "5.5")
    scenario.feed(_events([late]), T0 + 30 * second)
    # Past window 0's allowed lateness: what comes for it now is only loaded.
    scenario.watermark(T0 + WINDOW + LATENESS + WINDOW)
    too_late = _event(13, "page_view", "ios", T0 + 45 * second)
    scenario.feed(_events([too_late]), T0 + 45 * second)
    scenario.on_time = window_0 + window_1
    scenario.final = [*window_0, late, *window_1]
    scenario.too_late = [too_late]
    return scenario


@dataclass
class Landed:
    scenario: Scenario
    tables: dict[str, list[dict[str, Any]]]
    out: dict[str, Any]
    seconds: float


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Landed:
    import time

    work = tmp_path_factory.mktemp("beam")
    scenario = build_scenario()
    spec, out = work / "spec.json", work / "out.json"
    spec.write_text(json.dumps({"steps": scenario.steps}))
    warehouse = work / "w" / "shopstream.duckdb"
    _refusing_changes(warehouse)
    env = beam_env(
        SHOPSTREAM_DATA_DIR=str(work / "data"),
        SHOPSTREAM_WAREHOUSE_URL=f"duckdb:///{warehouse}",
        SHOPSTREAM_BEAM__ALLOWED_LATENESS_SECONDS=str(int(LATENESS.total_seconds())),
        SHOPSTREAM_BEAM__WINDOW_SECONDS=str(int(WINDOW.total_seconds())),
        # Small batches: a bundle is appended in several.
        SHOPSTREAM_BEAM__BATCH_ROWS="4",
    )
    started = time.monotonic()
    run = subprocess.run(
        [str(BEAM_PYTHON), str(SCENARIOS), "teststream", str(spec), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.monotonic() - started
    if run.returncode:
        sys.stderr.write(run.stderr[-6000:])
    assert run.returncode == 0, f"the Beam scenario failed: {run.stderr[-2000:]}"
    tables = landed_rows(warehouse)
    return Landed(scenario, tables, json.loads(out.read_text()), seconds)


def _refusing_changes(warehouse: Path) -> None:
    """raw.cdc_orders as the pipeline makes it, plus a CHECK that refuses one change: a row
    the warehouse refuses although decode accepted it (as BigQuery may, on a schema error)."""
    warehouse.parent.mkdir(mode=0o700)
    con = duckdb.connect(str(warehouse))
    try:
        con.execute("CREATE SCHEMA raw")
        ddl = raw_table_ddl("cdc_orders").removesuffix("\n)")
        con.execute(f"{ddl},\n    CHECK (change_id <> '{REFUSED_CHANGE}')\n)")
    finally:
        con.close()


def _decoded(messages: list[Message]) -> tuple[dict[str, list[dict]], list[tuple[Message, str]]]:
    rows: dict[str, list[dict]] = defaultdict(list)
    refused = []
    for m in messages:
        try:
            decoded = decode(m.topic, m.key, m.value, m.headers, TOPICS)
        except PoisonMessage as exc:
            refused.append((m, exc.reason))
            continue
        if decoded is not None:
            rows[decoded[0]].append(decoded[1])
    return rows, refused


def test_good_rows_land_as_decode_gives_them(landed: Landed) -> None:
    expected, _ = _decoded(landed.scenario.messages)
    by_id = sorted(landed.tables["raw.events"], key=lambda row: row["event_id"])
    assert by_id == sorted(expected["events"], key=lambda row: row["event_id"])
    # Every event, the late and the too late ones too: raw holds whatever arrived.
    assert len(by_id) == len(landed.scenario.final) + len(landed.scenario.too_late)
    [change] = landed.tables["raw.cdc_orders"]  # the other one was refused: a dead letter
    [wanted] = [row for row in expected["cdc_orders"] if row["change_id"] != REFUSED_CHANGE]
    assert {k: v for k, v in change.items() if k != "ingested_at"} == {
        k: v for k, v in wanted.items() if k != "ingested_at"
    }


def test_poison_messages_reach_the_dead_letters_with_their_reasons(landed: Landed) -> None:
    _, refused = _decoded(landed.scenario.messages)
    assert len(refused) == 4  # the tombstone is nothing to load, not poison
    dead = [r for r in landed.tables["raw.dead_letter"] if "table" not in json.loads(r["context"])]
    found = sorted((row["reason"], row["payload"]) for row in dead)
    assert found == sorted((reason, m.value.decode()) for m, reason in refused if m.value)
    for row in dead:
        assert row["source"] == "loader"
        context = json.loads(row["context"])
        assert context["pipeline"] == "beam" and context["message_id"].startswith("m-")
    assert {json.loads(row["context"])["topic"] for row in dead} == {m.topic for m, _ in refused}


def test_a_row_the_warehouse_refuses_is_a_dead_letter_and_the_rest_lands(landed: Landed) -> None:
    """The batch it was in failed; appended one by one, the other rows of the batch landed
    (the good change, events, the poison messages' dead letters) and this one did not."""
    refused = [r for r in landed.tables["raw.dead_letter"] if "table" in json.loads(r["context"])]
    assert len(refused) == 1
    assert json.loads(refused[0]["context"]) == {"table": "raw.cdc_orders", "pipeline": "beam"}
    assert refused[0]["reason"].startswith("the warehouse refused the row: append to raw failed")
    assert "CHECK constraint" in refused[0]["reason"]
    assert json.loads(refused[0]["payload"])["change_id"] == REFUSED_CHANGE
    assert {r["change_id"] for r in landed.tables["raw.cdc_orders"]} == {
        "00000000016B3748-00000001"
    }


def _counts(events: list[dict[str, Any]]) -> dict[tuple, tuple[int, Decimal]]:
    """Events and revenue per (window start, event type, device type), counted here."""
    counts: Counter[tuple] = Counter()
    revenue: dict[tuple, Decimal] = defaultdict(Decimal)
    for row in events:
        at = row["received_at"]
        start = at - timedelta(seconds=at.timestamp() % WINDOW.total_seconds())
        key = (start, row["event_type"], row["device_type"])
        counts[key] += 1
        if row["event_type"] == "purchase":
            revenue[key] += Decimal(json.loads(row["properties"], parse_float=str)["revenue"])
    return {key: (counts[key], revenue[key]) for key in counts}


def _panes(landed: Landed, pick: str) -> dict[tuple, tuple[int, Decimal]]:
    chosen: dict[tuple, dict[str, Any]] = {}
    for row in landed.tables["mart.realtime_activity"]:
        key = (row["window_start"], row["event_type"], row["device_type"])
        if pick == "on_time" and row["timing"] != "ON_TIME":
            continue
        if key not in chosen or row["pane_index"] > chosen[key]["pane_index"]:
            chosen[key] = row
    return {key: (row["events"], row["revenue"]) for key, row in chosen.items()}


def test_window_aggregates_equal_the_counts_of_the_input(landed: Landed) -> None:
    rows = landed.tables["mart.realtime_activity"]
    assert all(row["window_end"] - row["window_start"] == WINDOW for row in rows)
    assert _panes(landed, "on_time") == _counts(landed.scenario.on_time)
    assert _panes(landed, "final") == _counts(landed.scenario.final)
    # Exact decimals: three purchases of 0.1 are 0.3, not 0.30000000000000004.
    ios = _panes(landed, "on_time")[(T0, "purchase", "ios")]
    assert ios == (3, Decimal("0.3")) and str(ios[1]) == "0.3000"


def test_late_events_update_their_window_until_its_lateness_ends(landed: Landed) -> None:
    late = [
        (r["event_type"], r["device_type"], r["pane_index"], r["events"], r["revenue"])
        for r in landed.tables["mart.realtime_activity"]
        if r["timing"] == "LATE"
    ]
    # One late firing, for window 0's ios purchases (the late one), accumulating: it holds
    # the window's totals (3 on time + 1 late), as the second pane of that key.
    assert late == [("purchase", "ios", 1, 4, Decimal("5.8"))]
    # The too-late page view is in raw but counted nowhere: window 0's ios page views are
    # still the two on-time ones, in one firing.
    [too_late] = landed.scenario.too_late
    assert too_late["event_id"] in {row["event_id"] for row in landed.tables["raw.events"]}
    page_views = [
        (r["pane_index"], r["events"])
        for r in landed.tables["mart.realtime_activity"]
        if (r["window_start"], r["event_type"], r["device_type"]) == (T0, "page_view", "ios")
    ]
    assert page_views == [(0, 2)]


def test_dataflow_options_are_what_beam_parses(landed: Landed) -> None:
    assert landed.out["runner"] == "BundleBasedDirectRunner"
    assert landed.out["dataflow_options"] == {
        "runner": "DataflowRunner",
        "streaming": True,
        "project": "shop-prod",
        "region": "europe-west1",
        "temp_location": "gs://shop-temp/beam",
        "job_name": "j1",
        "enable_streaming_engine": True,
        "max_num_workers": 7,
        "autoscaling_algorithm": "THROUGHPUT_BASED",
        "sdk_container_image": "europe-docker.pkg.dev/shop/beam/shopstream:1",
    }
