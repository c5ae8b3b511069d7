"""Crash test: SIGKILL the collector while traffic flows; every acknowledged event survives.

The collector answers 2xx only after the commit that holds the events, so whatever the
client was told is stored must be in raw.events after the process dies mid-stream.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx

from tests.support.collector import CollectorProcess


class InFlight:
    """Requests sent and not yet answered, across the sender threads."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def change(self, by: int) -> None:
        with self.lock:
            self.count += by


def _sender(url: str, acknowledged: set[str], stop: threading.Event, in_flight: InFlight) -> None:
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            batch = [
                {
                    "event_id": str(uuid.uuid4()),
                    "event_type": "product_view",
                    "event_ts": datetime.now(UTC).isoformat(),
                    "anonymous_id": "crash-test",
                    "properties": {"product_id": "P000001"},
                }
                for _ in range(25)
            ]
            in_flight.change(+1)
            try:
                response = client.post(f"{url}/v1/events", json=batch)
            except httpx.HTTPError:
                time.sleep(0.05)  # the server is gone; keep trying until told to stop
                continue
            finally:
                in_flight.change(-1)
            if response.status_code == 200:
                acknowledged.update(e["event_id"] for e in batch)


def _stored_ids(path: Path) -> set[str]:
    # The warehouse writer process exits when it sees the collector gone: a moment later.
    deadline = time.monotonic() + 15
    while True:
        try:
            con = duckdb.connect(str(path), read_only=True)
            break
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        return {row[0] for row in con.execute("SELECT event_id FROM raw.events").fetchall()}
    finally:
        con.close()


def test_sigkill_mid_stream_loses_no_acknowledged_event(tmp_path: Path) -> None:
    acknowledged: set[str] = set()
    for round_no in range(3):
        collector = CollectorProcess(tmp_path)
        collector.start()
        stop = threading.Event()
        in_flight = InFlight()
        before = len(acknowledged)
        senders = [
            threading.Thread(target=_sender, args=(collector.url, acknowledged, stop, in_flight))
            for _ in range(4)
        ]
        for sender in senders:
            sender.start()
        # Kill only once traffic is really flowing.
        deadline = time.monotonic() + 30
        while len(acknowledged) - before < 2_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        hit = in_flight.count  # requests the kill catches unanswered
        collector.kill()
        time.sleep(0.3)  # senders see the dead server
        stop.set()
        for sender in senders:
            sender.join()
        assert len(acknowledged) - before >= 2_000, f"round {round_no}: too little traffic"
        assert hit > 0, "the kill was meant to land while requests were in flight"

        stored = _stored_ids(collector.warehouse_path)
        missing = acknowledged - stored
        assert not missing, f"round {round_no}: {len(missing)} acknowledged events lost"
