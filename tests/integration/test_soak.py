"""Long soak (opt-in: `make test-slow`): memory stays flat under sustained load.

The collector takes generated traffic for SOAK_SECONDS (default 600) at 3k events/s. What is
measured is the whole process tree: the HTTP process and the DuckDB writer process beside it
(where the data lives). SOAK_SECONDS=150 gives a shorter run.

What "flat" can mean here. DuckDB keeps the blocks it wrote cached, up to its memory limit,
and holds appended data in memory until a checkpoint (sink.checkpoint_wal_mb): the writer's
RSS is a saw tooth whose floor rises with the file until the cache is full. Unbounded, that is
"about as fast as the file grows" (the finding this test was written for). With
sink.memory_limit_mb the cache stops at the limit, so the test runs with a limit the run's data
outgrows early (SOAK_MEMORY_LIMIT_MB, default 64) and asserts

- a bound: the tree never exceeds its size after start-up plus the limit plus an allowance
  for what is not DuckDB's buffer pool (Python, Arrow buffers in flight, HTTP);
- flatness once the limit is reached: the floor (lowest sample) of the last quarter of the
  run is not above the floor of the second quarter by more than the tolerance. Floors, not
  peaks, because a checkpoint's peak depends on where in the saw tooth a window ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import psutil
import pytest

from shopstream.generators.clickstream import send_events
from tests.support.collector import CollectorProcess

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
MEMORY_LIMIT_MB = int(os.environ.get("SOAK_MEMORY_LIMIT_MB", "64"))
RATE = 3_000  # events/s, in batches of 100
MB = 2**20
ALLOWANCE = 160 * MB  # beyond the limit: Python heaps of both processes, Arrow/IPC, HTTP
TOLERANCE = 32 * MB


def tree_rss(process: psutil.Process) -> tuple[int, int]:
    """RSS of the process and of all its descendants (the writer process)."""
    own = process.memory_info().rss
    children = 0
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            children += child.memory_info().rss
    return own, children


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 300)
def test_memory_of_the_process_tree_is_flat_under_sustained_load(tmp_path: Path) -> None:
    collector = CollectorProcess(
        tmp_path, env={"SHOPSTREAM_SINK__MEMORY_LIMIT_MB": str(MEMORY_LIMIT_MB)}
    ).start()
    assert collector.process is not None
    process = psutil.Process(collector.process.pid)
    samples: list[tuple[float, int, int]] = []  # seconds, HTTP process, writer process

    async def soak() -> int:
        stop = asyncio.Event()

        async def sample() -> None:
            started = time.monotonic()
            while not stop.is_set():
                samples.append((time.monotonic() - started, *tree_rss(process)))
                await asyncio.sleep(1)

        sampler = asyncio.create_task(sample())
        truth = await send_events(collector.url, rate=RATE, duration=SOAK_SECONDS, batch_size=100)
        stop.set()
        await sampler
        return truth.accepted

    try:
        accepted = asyncio.run(soak())
    finally:
        assert collector.stop() == 0, collector.log()
    assert accepted > SOAK_SECONDS * RATE * 0.8  # the load really was sustained

    def floor(start: float, end: float) -> int:
        return min(own + child for t, own, child in samples if start <= t < end)

    start_up = floor(0, SOAK_SECONDS * 0.1)
    peak = max(own + child for _, own, child in samples)
    second = floor(SOAK_SECONDS * 0.25, SOAK_SECONDS * 0.5)
    last = floor(SOAK_SECONDS * 0.75, SOAK_SECONDS + 60)
    curve = ", ".join(
        f"{t:.0f}s {own / MB:.0f}+{child / MB:.0f}MB" for t, own, child in samples[::10]
    )
    report = (
        f"tree RSS (HTTP+writer): start-up {start_up / MB:.0f} MB, peak {peak / MB:.0f} MB, "
        f"floor 2nd quarter {second / MB:.0f} MB, floor last quarter {last / MB:.0f} MB, "
        f"memory limit {MEMORY_LIMIT_MB} MB, accepted {accepted:,}; curve: {curve}"
    )
    print(report)
    assert peak <= start_up + MEMORY_LIMIT_MB * MB + ALLOWANCE, report
    assert last - second <= TOLERANCE, report
