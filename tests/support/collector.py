"""A real collector process for tests: `python -m shopstream collector` on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from shopstream.runtime import query_running, read_runtime, transform_running
from shopstream.transform.runner import TransformRequest
from shopstream.warehouse.duckdb.query_endpoint import MAX_LIMIT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_log(path: Path) -> str:
    """A test process's log so far ("" before it wrote one)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def query_rows(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    """``sql`` answered by the process holding ``data_dir``'s warehouse, over its query
    socket, as dicts (every row: a longer answer fails the test)."""
    answer = query_running(data_dir, sql, limit=MAX_LIMIT)
    assert not answer.truncated, f"{sql!r} has more than {MAX_LIMIT} rows"
    return [dict(zip(answer.columns, row, strict=True)) for row in answer.rows]


class CollectorProcess:
    """Starts the platform's collector as a separate process, as a user would."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"collector-{self.port}.log"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "shopstream.duckdb"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
        env.update({"SHOPSTREAM_DATA_DIR": str(self.data_dir), **self.extra_env})
        return env

    def start(self, timeout: float = 30.0) -> CollectorProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # In the data directory: a developer's ./shopstream.yaml must not change the run.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shopstream", "collector", "--port", str(self.port)],
            env=self.env(),
            cwd=self.data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"collector exited at start:\n{self.log()}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            # runtime.json (the query endpoint's address) is written just after the port opens.
            runtime = read_runtime(self.data_dir)
            if ready and runtime is not None and runtime.get("pid") == self.process.pid:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"collector not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return read_log(self.log_path)

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Ask the running process (it owns the DuckDB file) through its query endpoint."""
        return query_rows(self.data_dir, sql)

    def stage_events(self) -> None:
        """Build staging.stg_events (and what it needs) in the running process, as
        `shopstream transform --select stg_events` would."""
        result = transform_running(self.data_dir, TransformRequest(select=("+stg_events",)))
        assert result.success, result.failures()

    def stop(self, timeout: float = 60.0) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None
