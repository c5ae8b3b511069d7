"""A real Kafka-protocol broker for tests: noida-db on a free loopback port.

noida-db (PyPI) speaks the Kafka protocol (idempotent producer, transactions, groups, every
codec) and keeps its data and offsets across kill -9 and restart. Its pip console script is a
Python wrapper around a native binary; the binary is started directly, so that ``kill()``
sends SIGKILL to the broker itself, not to the wrapper.

    broker = KafkaBroker(tmp_path / "kafka").start()
    broker.bootstrap          # "127.0.0.1:40123"
    broker.url                # "kafka://127.0.0.1:40123" (the sink's and the loader's URL)
    broker.kill(); broker.start()   # same port, same data directory
    messages = consume_all(broker.bootstrap, "shopstream.events")

Fixtures: ``kafka_broker`` (one per test module, started on first use) and
``kafka_broker_factory`` (dedicated brokers a test may stop, kill and restart); both are
registered in tests/conftest.py. Without noida-db the fixtures skip, saying what to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.collector import free_port

_READY_TIMEOUT_S = 30.0


def broker_binary() -> Path | None:
    """The noida-db binary the installed package ships, or None."""
    try:
        from importlib.resources import files

        path = Path(str(files("noida_db").joinpath("noida-db")))
    except ModuleNotFoundError:
        return None
    if not path.is_file():
        return None
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


class KafkaBroker:
    """One noida-db broker (Kafka only) on ``port`` with its data in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        binary = broker_binary()
        if binary is None:
            raise FileNotFoundError("noida-db is not installed (pip install noida-db)")
        self.binary = binary
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-broker-{self.port}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = _READY_TIMEOUT_S) -> KafkaBroker:
        """Start (again) on the same port and data directory; returns once it answers."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [
                        str(self.binary),
                        "start",
                        "--only",
                        "kafka",
                        "--host",
                        "127.0.0.1",
                        "--kafka-port",
                        str(self.port),
                        "--data-dir",
                        str(self.data_dir),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # a Ctrl-C in the test run is ours to pass on
                )
            if self._wait_ready(deadline):
                return self
            # Right after a kill the port may still be held for a moment: try again.
            if time.monotonic() >= deadline:
                self.kill()
                raise TimeoutError(f"noida-db not ready after {timeout}s:\n{self.log()}")
            time.sleep(0.2)

    def _wait_ready(self, deadline: float) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 1000})
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                admin.list_topics(timeout=1)
                return True
            except Exception:
                time.sleep(0.05)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """A clean stop (SIGTERM): data is saved."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """kill -9: what survives is what the broker had made durable."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass(frozen=True)
class Consumed:
    """One record read back, with what the assertions look at."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


def consume_all(
    bootstrap: str, topic: str, *, timeout: float = 10.0, idle: float = 0.5
) -> list[Consumed]:
    """Every record of ``topic`` (all partitions, from the start, read_committed), by a fresh
    consumer group; returns when each partition is read to its end (high watermark)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            return []
        ends: dict[int, int] = {}
        for partition in info.partitions:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            if high > 0:
                ends[partition] = high
        if not ends:
            return []
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        records: list[Consumed] = []
        positions = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout
        while any(positions[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: read {positions} of {ends} within {timeout}s")
            for message in consumer.consume(500, idle):
                if message.error() is not None:
                    continue  # partition EOF and the like: the watermarks say when we are done
                partition = message.partition()
                positions[partition] = message.offset() + 1
                records.append(
                    Consumed(
                        topic=message.topic(),
                        partition=partition,
                        offset=message.offset(),
                        key=message.key(),
                        value=message.value(),
                        headers={
                            name: value.decode() if value is not None else ""
                            for name, value in (message.headers() or [])
                        },
                    )
                )
        return records
    finally:
        consumer.close()


def _skip_without_broker() -> None:
    if broker_binary() is None:
        pytest.skip("noida-db is not installed: pip install noida-db (in the dev extra)")
    try:
        import confluent_kafka  # noqa: F401
    except ModuleNotFoundError:
        pytest.skip("confluent-kafka is not installed: pip install 'shopstream[kafka]'")


class KafkaBrokerFactory:
    """Dedicated brokers, each in its own temporary directory; all stopped at teardown."""

    def __init__(self) -> None:
        self._brokers: list[KafkaBroker] = []
        self._dirs: list[Path] = []

    def __call__(self, *, start: bool = True) -> KafkaBroker:
        directory = Path(tempfile.mkdtemp(prefix="shopstream-kafka-"))
        self._dirs.append(directory)
        broker = KafkaBroker(directory / "data")
        self._brokers.append(broker)
        if start:
            broker.start()
        return broker

    def close(self) -> None:
        for broker in self._brokers:
            with contextlib.suppress(Exception):
                broker.kill()
        for directory in self._dirs:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def kafka_broker_factory() -> Iterator[KafkaBrokerFactory]:
    """Brokers a test owns (to stop, kill -9 and restart); gone after the test."""
    _skip_without_broker()
    factory = KafkaBrokerFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One broker per test module, shared by its tests (use distinct topic prefixes)."""
    _skip_without_broker()
    factory = KafkaBrokerFactory()
    try:
        yield factory()
    finally:
        factory.close()
