"""The loader for tests: `python -m shopstream load --from URL` as its own process, and what
tests put on (and read back from) the transport around it.

    loader = LoaderProcess(tmp_path / "warehouse", broker.url, prefix="t1").start()
    loader.wait_for("SELECT count(*) AS n FROM raw.events", 100)
    loader.kill()                      # kill -9, the process and its warehouse writer
    rows = loader.start().query("SELECT ...")
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from shopstream.events.messages import Message
from shopstream.runtime import read_runtime
from shopstream.warehouse.duckdb.database import DuckDBWarehouse
from tests.support.collector import query_rows, read_log


class LoaderProcess:
    """One `shopstream load` process on ``data_dir`` (its warehouse), loading ``url``."""

    def __init__(
        self, data_dir: Path, url: str, *, prefix: str, args: Sequence[str] = (), **env: str
    ) -> None:
        self.data_dir = data_dir
        self.url = url
        self.args = list(args)
        self.env = {
            "SHOPSTREAM_DATA_DIR": str(data_dir),
            "SHOPSTREAM_TRANSPORT__TOPIC_PREFIX": prefix,
            # A group per prefix: a killed member of a shared group would hold up the next.
            "SHOPSTREAM_LOADER__GROUP": f"loaders-{prefix}",
            "SHOPSTREAM_LOADER__TOPIC_REFRESH_MS": "500",
            "SHOPSTREAM_LOADER__SESSION_TIMEOUT_MS": "6000",
            "SHOPSTREAM_LOADER__BATCH_WAIT_MS": "50",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "loader.log"

    def start(self, timeout: float = 60.0) -> LoaderProcess:
        """Start and wait until it answers queries on its socket (it holds the warehouse)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
        environment.update(self.env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shopstream", "load", "--from", self.url, *self.args],
                env=environment,
                cwd=self.data_dir,  # a developer's ./shopstream.yaml must not change the run
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the loader exited at start:\n{self.log()}")
            runtime = read_runtime(self.data_dir)
            if runtime and runtime.get("pid") == self.process.pid and "socket" in runtime:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"the loader did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return read_log(self.log_path)

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Ask the running loader (it owns the DuckDB file) through its query socket."""
        return query_rows(self.data_dir, sql)

    def count(self, sql: str) -> int:
        try:
            return int(self.query(sql)[0]["n"])
        except RuntimeError:  # the table is created with its first row
            return 0

    def wait_for(self, sql: str, at_least: int, timeout: float = 60.0) -> int:
        """Wait until ``sql`` (one row, column n) counts ``at_least``."""
        deadline = time.monotonic() + timeout
        n = 0
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log()
            n = self.count(sql)
            if n >= at_least:
                return n
            time.sleep(0.1)
        raise AssertionError(f"{sql!r}: {n} of {at_least} after {timeout}s:\n{self.log()}")

    def writer(self) -> psutil.Process:
        """The DuckDB writer process this loader started (a multiprocessing spawn child)."""
        assert self.process is not None
        for child in psutil.Process(self.process.pid).children():
            if "spawn_main" in " ".join(child.cmdline()):
                return child
        raise AssertionError("the loader has no warehouse writer process")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as an operator stops it: batches in flight are committed first."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.process = None
        return code

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for it to exit on its own (--idle-exit, --duration)."""
        assert self.process is not None
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> None:
        """kill -9 the loader and its warehouse writer: whatever was not committed is gone."""
        if self.process is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(self.process.pid).children(recursive=True)
            self.process.send_signal(signal.SIGKILL)
            for child in children:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def read(self, sql: str) -> list[dict[str, Any]]:
        """Query the warehouse file directly (the loader stopped)."""
        assert self.process is None, "stop the loader first"
        warehouse = DuckDBWarehouse(self.data_dir / "shopstream.duckdb", read_only=True)
        try:
            return list(warehouse.query(sql).to_pylist())
        finally:
            warehouse.close()


@contextlib.contextmanager
def loader_process(
    data_dir: Path, url: str, *, prefix: str, args: Sequence[str] = (), **env: str
) -> Iterator[LoaderProcess]:
    """A started loader, killed at the end whatever happened (never left running)."""
    loader = LoaderProcess(data_dir, url, prefix=prefix, args=args, **env).start()
    try:
        yield loader
    finally:
        loader.kill()


def create_topics(bootstrap: str, names: Sequence[str], partitions: int = 3) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    for future in futures.values():
        future.result(20)


def produce(bootstrap: str, messages: Sequence[Message]) -> None:
    """Put ``messages`` on the broker (idempotent, acks=all) and wait for every ack."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failures: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for message in messages:
        producer.produce(
            message.topic,
            value=message.value,
            key=message.key,
            headers=list(message.headers.items()),
            on_delivery=delivered,
        )
        producer.poll(0)
    assert producer.flush(30) == 0, "messages not acknowledged"
    assert not failures, failures


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (-1001: none yet)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The high watermark per partition of ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.topics[topic].partitions
        }
    finally:
        consumer.close()


def wait_until(predicate: Any, timeout: float = 60.0) -> None:
    """Until ``predicate()`` holds (an observable condition, never a guessed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)
