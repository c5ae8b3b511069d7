"""The composition root in-process: the parts a command switches on, their status snapshots,
and what it leaves alone (process-wide tuning belongs to the command that starts the process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from shopstream.config import Settings
from shopstream.platform import CollectorStatus, Parts, Platform, tune_process
from shopstream.runtime import read_runtime


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, sink={"writer_process": False})


def _event(n: int) -> dict[str, object]:
    return {
        "event_type": "page_view",
        "event_id": str(uuid.uuid4()),
        "anonymous_id": f"a-{n}",
        "session_id": "s-1",
        "event_ts": datetime.now(UTC).isoformat(),
        "device_type": "web_desktop",
    }


def test_run_serves_reports_frozen_status_and_leaves_process_tuning_alone(
    tmp_path: Path,
) -> None:
    switch, threshold, frozen = sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()
    platform = Platform(_settings(tmp_path), Parts(host="127.0.0.1", port=0))
    seen: list[CollectorStatus] = []

    async def main() -> None:
        stop = asyncio.Event()
        run = asyncio.create_task(platform.run(stop=stop))
        while read_runtime(tmp_path) is None:
            assert not run.done(), run.result()
            await asyncio.sleep(0.05)
        url = read_runtime(tmp_path)["url"]  # type: ignore[index]
        async with httpx.AsyncClient() as client:
            for n in range(3):
                answer = await client.post(f"{url}/v1/events", json=_event(n))
                assert answer.status_code == 200, answer.text
        status = platform.status()
        assert status.collector is not None
        seen.append(status.collector)
        # Parts that are switched off report nothing.
        assert (status.cdc, status.generator, status.orders) == (None, None, None)
        stop.set()
        summary = await run
        assert (summary.accepted, summary.rejected, summary.failures) == (3, 0, ())
        assert summary.table_counts["raw.events"] == 3

    try:
        asyncio.run(main())
    finally:
        platform.close()
    collector = seen[0]
    assert collector.accepted == 3 and collector.url.startswith("http://127.0.0.1:")
    with pytest.raises(dataclasses.FrozenInstanceError):
        collector.accepted = 0  # type: ignore[misc]
    # Running a platform (tests run many in one process) tunes nothing process-wide.
    assert sys.getswitchinterval() == switch
    assert gc.get_threshold() == threshold
    assert gc.get_freeze_count() == frozen
    assert read_runtime(tmp_path) is None  # removed on the way out


def test_tune_process_sets_gc_and_switch_interval() -> None:
    switch, threshold = sys.getswitchinterval(), gc.get_threshold()
    try:
        tune_process()
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        assert gc.get_threshold() == (20_000, 20, 20)
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(switch)


def test_generated_traffic_needs_the_collector(tmp_path: Path) -> None:
    from shopstream.platform import Traffic

    with pytest.raises(ValueError, match="needs the collector"):
        Platform(
            _settings(tmp_path),
            Parts(collector=False, traffic=Traffic(rate=1.0, bad_fraction=0.0)),
        )


def test_a_busy_port_is_a_clear_error_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "shopstream", "collector", "--port", str(port)],
            env={**os.environ, "SHOPSTREAM_DATA_DIR": str(tmp_path), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr
    assert "Traceback" not in result.stderr
    assert read_runtime(tmp_path) is None
    assert not (tmp_path / "query.sock").exists()
