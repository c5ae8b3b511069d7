"""Events the warehouse itself refuses are answered as rejected, not as accepted.

The refusal is DuckDB's own: raw.events carries a CHECK constraint (as an operator might add),
so a row the collector finds valid fails on insert. The sink isolates it, writes it to
raw.dead_letter, and the collector answers it with its index and DuckDB's reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import duckdb
import httpx
import orjson
import pytest

from shopstream.warehouse.duckdb.database import raw_table_ddl
from tests.support.collector import CollectorProcess
from tests.support.rows import tracked_event as event

REFUSED = "refused-by-duckdb"


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path_factory.mktemp("refused"))
    process.data_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(process.warehouse_path))
    con.execute("CREATE SCHEMA raw")
    ddl = raw_table_ddl("events").removesuffix("\n)")
    con.execute(f"{ddl},\n    CHECK (anonymous_id IS DISTINCT FROM '{REFUSED}')\n)")
    con.close()
    process.start()
    yield process
    assert process.stop() == 0, process.log()


def post(collector: CollectorProcess, body: object, path: str = "/v1/events") -> httpx.Response:
    return httpx.post(f"{collector.url}{path}", json=body, timeout=30)


def test_a_refused_event_is_rejected_with_its_reason_and_neighbours_stored(
    collector: CollectorProcess,
) -> None:
    batch = [event(), event(REFUSED), event(event_type="teleport"), event(), event(REFUSED)]
    response = post(collector, batch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1, 2, 4]
    refused = [body["rejected"][0], body["rejected"][2]]
    for rejection, index in zip(refused, (1, 4), strict=True):
        assert "CHECK constraint" in rejection["reason"], rejection
        assert rejection["event_id"] == batch[index]["event_id"]
    ids = "', '".join(str(e["event_id"]) for e in batch)
    stored = collector.query(f"SELECT event_id FROM raw.events WHERE event_id IN ('{ids}')")
    assert sorted(r["event_id"] for r in stored) == sorted(
        [batch[0]["event_id"], batch[3]["event_id"]]
    )
    letters = collector.query(
        "SELECT source, reason, payload FROM raw.dead_letter WHERE source = 'loader'"
    )
    in_dead_letter = {orjson.loads(r["payload"])["event_id"] for r in letters}
    assert {batch[1]["event_id"], batch[4]["event_id"]} <= in_dead_letter
    assert all("CHECK constraint" in r["reason"] for r in letters)


def test_only_refused_events_answer_400_and_count_as_rejected(
    collector: CollectorProcess,
) -> None:
    before = _rejected_load_errors(collector)
    response = post(collector, [event(REFUSED)])
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["accepted"] == 0 and body["error"] == "all_rejected"
    assert "CHECK constraint" in body["rejected"][0]["reason"]
    # The Segment route answers the same way (its SDKs read `success`).
    segment = post(
        collector,
        {"userId": "u1", "anonymousId": REFUSED, "event": "Viewed", "type": "track"},
        "/v1/track",
    )
    assert segment.status_code == 400, segment.text
    assert segment.json()["success"] is False
    assert _rejected_load_errors(collector) == before + 2


def _rejected_load_errors(collector: CollectorProcess) -> float:
    text = httpx.get(f"{collector.url}/metrics", timeout=10).text
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r'^shopstream_collector_events_rejected_total\{[^}]*reason="load_error"[^}]*\} (\S+)$',
            text,
            re.M,
        )
    )
