"""A real Prometheus Pushgateway (Debian's prometheus-pushgateway; `make test` installs it) on a
free loopback port, for the batch runs' outcome metrics."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.collector import free_port
from tests.support.server_process import log_tail, stop_server


@dataclass(frozen=True)
class Pushgateway:
    url: str

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every pushed sample of metric ``name``: sorted labels -> value."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        found: dict[tuple[tuple[str, str], ...], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    found[tuple(sorted(sample.labels.items()))] = sample.value
        return found


def start_pushgateway(tmp_path: Path) -> Iterator[Pushgateway]:
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway is not installed (make system-tools installs it)")
    port = free_port()
    log = tmp_path / "pushgateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            # Debian's build persists to /var/lib/prometheus by default: every test gateway
            # would start with the pushes of earlier runs. Memory only.
            [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Pushgateway did not start:\n{log_tail(log)}")
            time.sleep(0.1)
        yield Pushgateway(url)
    finally:
        stop_server(process)


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Pushgateway]:
    yield from start_pushgateway(tmp_path)
