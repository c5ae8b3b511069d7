"""Long soak (opt-in: `make test-slow`): memory stays flat under sustained load.

The collector process takes generated traffic for SOAK_SECONDS (default 600); its RSS after
warm-up and at the end must not differ by more than the allowance.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import psutil
import pytest

from shopstream.generators.clickstream import send_events
from tests.support.collector import CollectorProcess

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
RATE = 3_000  # events/s, in batches of 100


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 300)
def test_collector_memory_is_flat_under_sustained_load(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path).start()
    assert collector.process is not None
    process = psutil.Process(collector.process.pid)
    samples: list[tuple[float, int]] = []

    async def soak() -> int:
        stop = asyncio.Event()

        async def sample() -> None:
            started = time.monotonic()
            while not stop.is_set():
                samples.append((time.monotonic() - started, process.memory_info().rss))
                await asyncio.sleep(1)

        sampler = asyncio.create_task(sample())
        truth = await send_events(collector.url, rate=RATE, duration=SOAK_SECONDS, batch_size=100)
        stop.set()
        await sampler
        return truth.accepted

    try:
        accepted = asyncio.run(soak())
    finally:
        collector.stop()
    assert accepted > SOAK_SECONDS * RATE * 0.8  # the load really was sustained
    # DuckDB holds written data until a checkpoint (sink.checkpoint_wal_mb), so RSS is a saw
    # tooth: compare the peaks of the second and the last quarter of the run.
    warm = [rss for t, rss in samples if SOAK_SECONDS * 0.25 <= t < SOAK_SECONDS * 0.5]
    late = [rss for t, rss in samples if t >= SOAK_SECONDS * 0.75]
    growth = max(late) - max(warm)
    curve = ", ".join(f"{t:.0f}s {rss / 2**20:.0f}MB" for t, rss in samples[::10])
    assert growth < 50 * 1024 * 1024, f"RSS grew {growth / 2**20:.1f} MB: {curve}"
