"""Crash test: SIGKILL the collector while traffic flows; every acknowledged event survives.

The collector answers 2xx only after the commit that holds the events, so whatever the
client was told is stored must be in raw.events after the process dies mid-stream.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import psutil

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


# -- the DuckDB writer child dies, the collector lives on -----------------------------------


def _writer_child(collector: CollectorProcess, *, not_pid: int | None = None) -> psutil.Process:
    """The collector's DuckDB writer process (a multiprocessing spawn child), waiting for a
    new one when ``not_pid`` is the one just killed."""
    assert collector.process is not None
    parent = psutil.Process(collector.process.pid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in parent.children():
            with contextlib.suppress(psutil.Error):
                if (
                    "spawn_main" in " ".join(child.cmdline())
                    and child.pid != not_pid
                    and child.status() != psutil.STATUS_ZOMBIE
                ):
                    return child
        time.sleep(0.05)
    raise AssertionError(f"no writer child (other than {not_pid}):\n{collector.log()}")


def _kill(process: psutil.Process) -> None:
    """SIGKILL, then wait until it is dead (a zombie counts: only its parent can reap it)."""
    process.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)
    raise AssertionError(f"{process.pid} survived SIGKILL")


def _zombies(collector: CollectorProcess) -> list[int]:
    assert collector.process is not None
    parent = psutil.Process(collector.process.pid)
    found = []
    for child in parent.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child.pid)
    return found


def test_killed_writer_child_is_restarted_and_nothing_acknowledged_is_lost(
    tmp_path: Path,
) -> None:
    acknowledged: set[str] = set()
    collector = CollectorProcess(tmp_path).start()
    stop = threading.Event()
    in_flight = InFlight()
    senders = [
        threading.Thread(target=_sender, args=(collector.url, acknowledged, stop, in_flight))
        for _ in range(4)
    ]
    for sender in senders:
        sender.start()
    try:
        writer = _writer_child(collector)
        for round_no in range(2):
            before = len(acknowledged)
            deadline = time.monotonic() + 30
            while len(acknowledged) - before < 1_000 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(acknowledged) - before >= 1_000, f"round {round_no}: too little traffic"
            # The senders spend a moment between requests (building the next batch): wait
            # for one to be in flight rather than sampling the count once.
            waited = time.monotonic() + 5
            while in_flight.count == 0 and time.monotonic() < waited:
                time.sleep(0.001)
            hit = in_flight.count
            _kill(writer)
            assert hit > 0, "the kill was meant to land while requests were in flight"
            # The collector restarts its writer and answers 2xx again, under the same load.
            at_kill = len(acknowledged)
            deadline = time.monotonic() + 60
            while len(acknowledged) - at_kill < 1_000 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(acknowledged) - at_kill >= 1_000, (
                f"round {round_no}: no recovery after the writer was killed:\n{collector.log()}"
            )
            writer = _writer_child(collector, not_pid=writer.pid)
            assert not _zombies(collector), "the dead writer was not reaped"
            assert httpx.get(f"{collector.url}/healthz", timeout=5).status_code == 200
    except BaseException:
        collector.kill()
        raise
    finally:
        stop.set()
        for sender in senders:
            sender.join()
    code = collector.stop()
    log = collector.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    missing = acknowledged - _stored_ids(collector.warehouse_path)
    assert not missing, f"{len(missing)} acknowledged events lost"


def test_a_writer_that_keeps_dying_fails_the_liveness_probe(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path, env={"SHOPSTREAM_SINK__WRITER_RESTARTS": "1"}).start()
    try:
        writer = _writer_child(collector)
        _kill(writer)
        # One restart is allowed: the second writer comes up; it dies at once as well.
        writer = _writer_child(collector, not_pid=writer.pid)
        _kill(writer)
        deadline = time.monotonic() + 30
        health = httpx.get(f"{collector.url}/healthz", timeout=5)
        while health.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            health = httpx.get(f"{collector.url}/healthz", timeout=5)
        assert health.status_code == 503, collector.log()
        assert "writer" in health.json()["reason"]
        assert httpx.get(f"{collector.url}/readyz", timeout=5).status_code == 503
        response = httpx.post(
            f"{collector.url}/v1/events",
            json={"event_type": "page_view", "event_ts": datetime.now(UTC).isoformat()},
            timeout=10,
        )
        assert response.status_code == 503, response.text
        assert not _zombies(collector)
    finally:
        code = collector.stop()
    log = collector.log()
    assert "Traceback" not in log, log
    # A clear error, not a traceback: the run could not finish its job.
    assert code == 1, log
    assert "error: the warehouse writer process died" in " ".join(log.split()), log
