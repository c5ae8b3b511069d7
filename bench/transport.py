"""Transport benchmark: the production shape against the embedded path, measured in one run.

    .venv/bin/python bench/transport.py            # 30 s legs, ~10 min on 2 cores
    .venv/bin/python bench/transport.py --quick    # 10 s legs, ~4 min: a rough check

Every leg drives the real collector (``python -m shopstream collector``) with batches of 100
events from the collector benchmark's client processes (``_load.py``), for a fixed time:

1. **embedded**: collector → DuckDB (``SHOPSTREAM_SINK_URL=warehouse``): the reference;
2. **Kafka** (a noida-db broker, started as the tests start it):
   - collector → Kafka alone (no loader running): what the collector's producer sustains;
   - the loader alone: ``shopstream load --from kafka://...`` on the backlog that leg left;
   - end to end: collector → Kafka → loader → DuckDB, collector and loader in their own
     processes at the same time, as in production; an event counts once it is in the
     loader's ``raw.events``;
   - the limit: a plain confluent-kafka producer (idempotent, acks=all, the sink's
     compression and linger) producing the collector's own messages, same keys, values and
     headers, to a topic with as many partitions, as fast as it can;
3. **Pub/Sub** (Google's emulator, as the tests start it): the same three legs but the limit;
   skipped, saying why, when the emulator is not installed.

Counted honestly: an event counts as delivered end to end only when it is in ``raw.events``
(read through the loader's query socket while it runs, then from the DuckDB file after the
loader stopped, which must hold exactly what the collector acknowledged, each event once).
The end-to-end rate is events acknowledged ÷ seconds from the first request until the last
of them was durable in raw, so a loader that falls behind lowers it. Loader lag is read when
the collector's traffic stops: events acknowledged but not yet in raw, and the loader's own
``shopstream_loader_lag_messages`` (messages on the broker not read yet).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import psutil
from rich.table import Table

from _load import PhaseResult, PhaseSpec, run_phase
from collector import BATCH_SIZE, TEMPLATE_EVENTS, Collector, console, event_templates

# The peers are the tests' own (tests/support/).
sys.path.append(str(Path(__file__).resolve().parent.parent))
from tests.support.collector import free_port
from tests.support.kafka_broker import KafkaBroker, broker_binary
from tests.support.pubsub_emulator import INSTALL_HINT, PubSubEmulator, find_emulator

PUBSUB_PROJECT = "shopstream-bench"
#: Seconds between readings of the loader's raw.events while waiting for it.
POLL_S = 0.25


# -- the loader process ---------------------------------------------------------------------------


class Loader:
    """``python -m shopstream load --from URL`` in its own data directory, as a user runs it."""

    def __init__(self, data_dir: Path, url: str, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.url = url
        self.metrics_port = free_port()
        self.extra_env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "loader.log"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "shopstream.duckdb"

    def start(self, timeout: float = 60.0) -> Loader:
        from shopstream.runtime import read_runtime

        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
        env.update(
            {
                "SHOPSTREAM_DATA_DIR": str(self.data_dir),
                "SHOPSTREAM_LOADER__METRICS_PORT": str(self.metrics_port),
                **self.extra_env,
            }
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shopstream", "load", "--from", self.url],
                env=env,
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the loader exited at start:\n{self.log()}")
            runtime = read_runtime(self.data_dir)
            if runtime is not None and runtime.get("pid") == self.process.pid:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"the loader did not open its query socket in {timeout}s")

    def loaded(self) -> int:
        """Rows in raw.events, through the loader's query socket (committed rows only)."""
        from shopstream.runtime import query_running

        answer = query_running(self.data_dir, "SELECT count(*) FROM raw.events", timeout=30)
        return int(answer.rows[0][0])

    def lag(self) -> float | None:
        """The loader's own reading of messages waiting on the transport (None if unknown)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        for line in text.splitlines():
            if line.startswith("shopstream_loader_lag_messages "):
                return float(line.split()[1])
        return None

    def wait_for(self, rows: int, timeout: float) -> tuple[int, float]:
        """Poll until raw.events holds ``rows``; (rows seen, monotonic time they were seen)."""
        deadline = time.monotonic() + timeout
        seen = self.loaded()
        while seen < rows and time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the loader died:\n{self.log()[-3000:]}")
            time.sleep(POLL_S)
            seen = self.loaded()
        return seen, time.monotonic()

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
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def client_errors(log: str) -> str:
    """librdkafka's error lines in a process's log, counted, with the first (why a leg was
    slow is then on the page, not in a data directory that is gone)."""
    errors = [line for line in log.splitlines() if line.startswith("%3|")]
    return f"; {len(errors):,} librdkafka errors, first: {errors[0][:200]}" if errors else ""


def stored_events(path: Path, prefix: str) -> tuple[int, int, int]:
    """From the DuckDB file, after its process stopped: rows of this leg, distinct event_ids,
    dead letters."""
    with duckdb.connect(str(path), read_only=True) as con:
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM raw.events WHERE event_id LIKE ?",
            [prefix + "%"],
        ).fetchone() or (0, 0)
        dead = con.execute("SELECT count(*) FROM raw.dead_letter").fetchone()
    return int(rows), int(distinct), int(dead[0]) if dead else 0


# -- CPU per process over a window -----------------------------------------------------------------


class CpuWatch:
    """User + system seconds of named processes (with their children) and of the machine."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes
        self.before = self._read()

    def _read(self) -> dict[str, float]:
        readings = {"at": time.monotonic()}
        for name, process in self.processes.items():
            total = 0.0
            with contextlib.suppress(psutil.Error):
                for p in [process, *process.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = p.cpu_times()
                        total += times.user + times.system
            readings[name] = total
        machine = psutil.cpu_times()
        idle = machine.idle + getattr(machine, "iowait", 0.0)
        readings["machine"] = sum(machine) - idle - getattr(machine, "guest", 0.0)
        return readings

    def cores(self) -> dict[str, float]:
        """Cores used by each process since the watch began, and by the whole machine."""
        after = self._read()
        span = after["at"] - self.before["at"]
        return {k: (after[k] - self.before[k]) / span for k in after if k != "at"}


# -- one leg ------------------------------------------------------------------------------------


@dataclass
class Leg:
    name: str
    title: str
    seconds: float = 0.0  # the measured window
    events: int = 0  # events counted for the rate
    accepted_per_s: float | None = None  # what the collector acknowledged in its window
    end_to_end_per_s: float | None = None
    loader_per_s: float | None = None
    acknowledged: int = 0  # events the collector acknowledged over the leg (warm-up included)
    durable: int | None = None  # of them, in raw.events after the loader / collector stopped
    distinct: int | None = None
    dead_letters: int | None = None
    lag_events: int | None = None  # acknowledged, not in raw, when traffic stopped
    lag_messages: float | None = None  # the loader's own lag reading then
    catch_up_s: float | None = None  # from traffic stopped to the last event durable
    caught_up: bool = True
    statuses: dict[int, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def rate(self) -> float | None:
        for value in (self.end_to_end_per_s, self.loader_per_s, self.accepted_per_s):
            if value is not None:
                return value
        return None

    @property
    def durable_ok(self) -> bool:
        return (
            self.durable == self.acknowledged
            and self.distinct == self.durable
            and not self.dead_letters
        )


@dataclass
class Run:
    """What every leg shares: client processes, events, where data goes, options."""

    pool: cf.ProcessPoolExecutor
    templates: tuple[bytes, ...]
    work: Path
    run_id: str
    seconds: float
    warmup: float
    clients: int
    connections: int
    catch_up_timeout: float

    def specs(self, port: int, leg: str) -> list[PhaseSpec]:
        start_at = time.time() + 0.3
        return [
            PhaseSpec(
                name=leg,
                kind="batch",
                host="127.0.0.1",
                port=port,
                connections=max(1, self.connections // self.clients),
                warmup=self.warmup,
                seconds=self.seconds,
                start_at=start_at,
                templates=self.templates,
                batch_size=BATCH_SIZE,
                id_prefix=f"{self.run_id}-{leg}-{k}",
            )
            for k in range(self.clients)
        ]

    def traffic(self, port: int, leg: str) -> tuple[list[cf.Future[PhaseResult]], float]:
        """Start the clients; (their futures, wall time the window opens, as monotonic)."""
        specs = self.specs(port, leg)
        futures = [self.pool.submit(run_phase, spec) for spec in specs]
        opens = time.monotonic() + (specs[0].start_at - time.time()) + self.warmup
        return futures, opens

    def gather(self, futures: list[cf.Future[PhaseResult]]) -> PhaseResult:
        merged = PhaseResult()
        for future in futures:
            merged.merge(future.result(timeout=self.warmup + self.seconds + 180))
        return merged

    def prefix(self, leg: str) -> str:
        return f"{self.run_id}-{leg}-"

    def warm_batch(self, collector: Collector, leg: str) -> int:
        """One batch before the clock starts: topics and subscriptions exist, the loader has
        found them. Its events count toward what must be durable."""
        now = time.time()
        body = (
            b"["
            + b",".join(
                b'{"event_id":"%s%d",' % (f"{self.run_id}-{leg}-w".encode(), i) + t[1:]
                for i, t in enumerate(self.templates[:BATCH_SIZE])
            )
            + b"]"
        )
        response = httpx.post(
            f"{collector.url}/v1/events",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        if response.status_code != 200:
            raise RuntimeError(f"warm-up batch refused: {response.status_code} {response.text}")
        assert time.time() - now < 60
        return int(orjson.loads(response.content)["accepted"])


def start_collector(run: Run, leg: str, env: dict[str, str]) -> Collector:
    collector = Collector(run.work / leg / "collector", env)
    try:
        return collector.start()
    except Exception:
        console.print(collector.log(), markup=False, highlight=False)
        raise


def embedded_leg(run: Run) -> Leg:
    leg = Leg("embedded", "collector → DuckDB (embedded)")
    collector = start_collector(run, leg.name, {"SHOPSTREAM_SINK_URL": "warehouse"})
    try:
        assert collector.ps is not None
        futures, opens = run.traffic(collector.port, leg.name)
        time.sleep(max(0.0, opens - time.monotonic()))
        watch = CpuWatch({"collector": collector.ps})
        time.sleep(run.seconds)
        leg.cpu = watch.cores()
        result = run.gather(futures)
        code = collector.stop()
        if code != 0:
            raise RuntimeError(f"the collector exited with {code}:\n{collector.log()[-3000:]}")
    finally:
        collector.kill()
    fill_client_side(leg, result)
    leg.durable, leg.distinct, leg.dead_letters = stored_events(
        collector.warehouse_path, run.prefix(leg.name)
    )
    return leg


def fill_client_side(leg: Leg, result: PhaseResult) -> None:
    leg.seconds = result.window
    leg.events = result.events_accepted
    leg.accepted_per_s = result.events_accepted / result.window if result.window else 0.0
    leg.acknowledged += result.acknowledged_total
    leg.statuses = dict(result.statuses)
    if result.errors:
        leg.note = f"client errors {result.errors}"
    leg.cpu["clients"] = result.cpu_seconds / result.wall_seconds if result.wall_seconds else 0


@dataclass
class Transport:
    """A broker the legs publish to and load from."""

    name: str  # kafka, pubsub
    url: str
    env: dict[str, str]  # for the collector and the loader
    peer: psutil.Process | None
    source_lag: bool  # whether the loader's source reports a lag (Pub/Sub's cannot tell)


def alone_leg(run: Run, transport: Transport, prefix: str) -> Leg:
    """The collector publishing with no loader running."""
    leg = Leg(f"{transport.name}-alone", f"collector → {transport.name} (no loader running)")
    env = {**transport.env, "SHOPSTREAM_SINK_URL": transport.url}
    env["SHOPSTREAM_TRANSPORT__TOPIC_PREFIX"] = prefix
    collector = start_collector(run, leg.name, env)
    try:
        assert collector.ps is not None
        leg.acknowledged = run.warm_batch(collector, leg.name)
        futures, opens = run.traffic(collector.port, leg.name)
        time.sleep(max(0.0, opens - time.monotonic()))
        watch = CpuWatch(peers(transport, collector=collector.ps))
        time.sleep(run.seconds)
        leg.cpu = watch.cores()
        result = run.gather(futures)
        code = collector.stop()
        if code != 0:
            raise RuntimeError(f"the collector exited with {code}:\n{collector.log()[-3000:]}")
    finally:
        collector.kill()
    fill_client_side(leg, result)
    return leg


def drain_leg(run: Run, transport: Transport, prefix: str, backlog: Leg) -> Leg:
    """The loader alone, on the backlog ``backlog`` left (its events must all land)."""
    leg = Leg(f"{transport.name}-loader", f"{transport.name} → loader → DuckDB (backlog)")
    env = {**transport.env, "SHOPSTREAM_TRANSPORT__TOPIC_PREFIX": prefix}
    loader = Loader(run.work / leg.name / "loader", transport.url, env)
    try:
        began = time.monotonic()
        loader.start()
        # Timed from its first durable batch: starting, joining the group and being handed
        # the partitions is reported apart (a running loader pays it once).
        first, landed = loader.wait_for(1, run.catch_up_timeout)
        leg.note = f"first rows in raw {landed - began:.1f} s after the loader was started"
        leg.note += client_errors(loader.log())
        watch = CpuWatch(peers(transport, loader=loader.ps))
        seen, done = loader.wait_for(backlog.acknowledged, run.catch_up_timeout)
        leg.cpu = watch.cores()
        leg.seconds = done - landed
        leg.events = seen - first
        if seen > first:
            leg.loader_per_s = leg.events / leg.seconds
        else:  # all of it landed in one batch: no rate to tell
            leg.note += "; the whole backlog landed in its first batch (no rate measured)"
        leg.caught_up = seen >= backlog.acknowledged
        code = loader.stop()
        if code != 0:
            raise RuntimeError(f"the loader exited with {code}:\n{loader.log()[-3000:]}")
    finally:
        loader.kill()
    leg.acknowledged = backlog.acknowledged
    leg.durable, leg.distinct, leg.dead_letters = stored_events(
        loader.warehouse_path, run.prefix(backlog.name)
    )
    return leg


def end_to_end_leg(run: Run, transport: Transport, prefix: str) -> Leg:
    """Collector and loader at the same time; an event counts once it is in raw.events."""
    leg = Leg(f"{transport.name}-e2e", f"collector → {transport.name} → loader → DuckDB")
    env = {**transport.env, "SHOPSTREAM_TRANSPORT__TOPIC_PREFIX": prefix}
    collector = start_collector(run, leg.name, {**env, "SHOPSTREAM_SINK_URL": transport.url})
    loader = Loader(run.work / leg.name / "loader", transport.url, env)
    try:
        assert collector.ps is not None
        warm = run.warm_batch(collector, leg.name)
        loader.start()
        loader.wait_for(warm, 60)  # subscribed and loading before the clock starts
        futures, opens = run.traffic(collector.port, leg.name)
        began = opens - run.warmup  # the first request: warm-up events count here
        time.sleep(max(0.0, opens - time.monotonic()))
        watch = CpuWatch(peers(transport, collector=collector.ps, loader=loader.ps))
        time.sleep(run.seconds)
        leg.cpu = watch.cores()
        result = run.gather(futures)
        stopped = time.monotonic()
        in_raw = loader.loaded()
        leg.lag_messages = loader.lag() if transport.source_lag else None
        fill_client_side(leg, result)
        leg.acknowledged = warm + result.acknowledged_total
        leg.lag_events = max(0, leg.acknowledged - in_raw)
        seen, done = loader.wait_for(leg.acknowledged, run.catch_up_timeout)
        leg.caught_up = seen >= leg.acknowledged
        leg.catch_up_s = done - stopped
        counted = min(seen, leg.acknowledged) - warm
        leg.events = counted
        leg.seconds = done - began
        leg.end_to_end_per_s = counted / leg.seconds
        codes = collector.stop(), loader.stop()
        if codes != (0, 0):
            raise RuntimeError(
                f"exit codes (collector, loader) {codes}:\n{collector.log()[-2000:]}\n"
                f"{loader.log()[-2000:]}"
            )
    finally:
        collector.kill()
        loader.kill()
    leg.durable, leg.distinct, leg.dead_letters = stored_events(
        loader.warehouse_path, run.prefix(leg.name)
    )
    return leg


def peers(transport: Transport, **processes: psutil.Process) -> dict[str, psutil.Process]:
    named = dict(processes)
    if transport.peer is not None:
        named[transport.name] = transport.peer
    return named


# -- the broker's own produce rate ------------------------------------------------------------


def sample_messages(
    bootstrap: str, topic: str, count: int
) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """The collector's own records (key, value, headers) read back from ``topic``."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-sample-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            # Small fetches; and room for a bigger answer, since noida-db was seen to answer
            # a fetch with ~100 MB on a large topic (librdkafka's default ceiling is 100 MB).
            "fetch.max.bytes": 4_000_000,
            "max.partition.fetch.bytes": 1_000_000,
            "receive.message.max.bytes": 1_000_000_000,
        }
    )
    records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(records) < count and time.monotonic() < deadline:
            for message in consumer.consume(1000, 1.0):
                value = message.value()
                if message.error() is None and value is not None:
                    headers = [(k, v or b"") for k, v in (message.headers() or [])]
                    records.append((message.key(), value, headers))
    finally:
        consumer.close()
    if not records:
        raise RuntimeError(f"no records to sample on {topic}")
    return records[:count]


def produce_flat_out(
    config: dict[str, Any],
    topic: str,
    records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]],
    seconds: float,
) -> tuple[int, int, float, float]:
    """Produce ``records`` round and round for ``seconds``, then wait for every delivery
    report. Runs in its own process. (delivered, failed, seconds incl. the flush, CPU s)."""
    from confluent_kafka import Producer

    delivered = failed = 0

    def on_delivery(error: Any, _message: Any) -> None:
        nonlocal delivered, failed
        if error is None:
            delivered += 1
        else:
            failed += 1

    producer = Producer(config)
    produce, poll = producer.produce, producer.poll
    count = len(records)
    cpu = time.process_time()
    began = time.perf_counter()
    end = began + seconds
    index = 0
    while time.perf_counter() < end:
        for _ in range(500):
            key, value, headers = records[index % count]
            index += 1
            try:
                produce(topic, value, key, headers=headers, on_delivery=on_delivery)
            except BufferError:  # the local queue is full: let deliveries drain it
                poll(0.005)
        poll(0)
    left = producer.flush(120)
    elapsed = time.perf_counter() - began
    return delivered, failed + left, elapsed, time.process_time() - cpu


def limit_leg(run: Run, broker: KafkaBroker, source_topic: str, partitions: int) -> Leg:
    from confluent_kafka.admin import AdminClient, NewTopic

    from shopstream.config import KafkaSettings

    kafka = KafkaSettings()
    leg = Leg("kafka-limit", f"confluent-kafka producer flat out ({kafka.compression})")
    records = sample_messages(broker.bootstrap, source_topic, 5_000)
    topic = f"{run.run_id}-limit.events"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)
    # The sink's producer settings (sinks/kafka.py), so only the code around it differs.
    config = {
        "bootstrap.servers": broker.bootstrap,
        "client.id": "shopstream-bench-limit",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": kafka.compression,
        "linger.ms": kafka.linger_ms,
        "delivery.timeout.ms": kafka.delivery_timeout_ms,
        "partitioner": "murmur2_random",
    }
    mean = sum(len(v) + len(k or b"") + sum(len(h) + len(x) for h, x in hs) for k, v, hs in records)
    leg.note = f"{len(records):,} of the collector's records, {mean / len(records):,.0f} B each"
    watch = CpuWatch({"kafka": broker_process(broker)})
    future = run.pool.submit(produce_flat_out, config, topic, records, run.seconds)
    delivered, failed, elapsed, cpu = future.result(timeout=run.seconds + 300)
    leg.cpu = watch.cores()
    leg.cpu["producer"] = cpu / elapsed
    leg.seconds = elapsed
    leg.events = delivered
    leg.accepted_per_s = delivered / elapsed
    if failed:
        leg.note += f"; {failed:,} deliveries failed"
    return leg


def broker_process(broker: KafkaBroker) -> psutil.Process:
    assert broker.process is not None
    return psutil.Process(broker.process.pid)


# -- orchestration ------------------------------------------------------------------------------


@contextlib.contextmanager
def kafka_broker(work: Path) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(work / "kafka")
    try:
        yield broker.start()
    finally:
        broker.kill()


@contextlib.contextmanager
def pubsub_emulator(script: Path, work: Path) -> Iterator[PubSubEmulator]:
    emulator = PubSubEmulator(script, work / "pubsub")
    try:
        yield emulator.start()
    finally:
        emulator.stop()


def transport_legs(run: Run, transport: Transport, limit: Callable[[str], Leg] | None) -> list[Leg]:
    legs = []
    with console.status(
        f"{transport.name}: collector alone, {run.warmup:.0f} + {run.seconds:.0f} s"
    ):
        alone = alone_leg(run, transport, f"bench{run.run_id}a")
    show(alone)
    legs.append(alone)
    with console.status(f"{transport.name}: the loader on {alone.acknowledged:,} events"):
        drained = drain_leg(run, transport, f"bench{run.run_id}a", alone)
    show(drained)
    legs.append(drained)
    if limit is not None:
        with console.status(f"{transport.name}: plain producer flat out, {run.seconds:.0f} s"):
            legs.append(limit(f"bench{run.run_id}a.events"))
        show(legs[-1])
    with console.status(f"{transport.name}: end to end, {run.warmup:.0f} + {run.seconds:.0f} s"):
        legs.append(end_to_end_leg(run, transport, f"bench{run.run_id}e"))
    show(legs[-1])
    return legs


def show(leg: Leg) -> None:
    rate = leg.rate
    line = f"{leg.title}: {'?' if rate is None else f'{rate:,.0f}'} events/s"
    if leg.durable is not None:
        line += f"; {leg.durable:,} of {leg.acknowledged:,} acknowledged in raw.events"
    if not leg.caught_up:
        line += " [red](the loader had not caught up when the wait ended)"
    console.print(line)


def per_s(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def ratio(value: float | None, reference: float | None) -> str:
    return "—" if value is None or not reference else f"{value / reference:.2f}"


def legs_table(legs: Sequence[Leg], embedded: float | None) -> Table:
    table = Table(title="events/s, measured in this run")
    for column in ("leg", "events/s", "÷ embedded", "window s", "raw = acknowledged"):
        table.add_column(column, justify="left" if column == "leg" else "right")
    for leg in legs:
        if leg.durable is None:
            durable = "—"
        else:
            durable = "yes" if leg.durable_ok else "[red]NO"
            durable += f" ({leg.durable:,} / {leg.acknowledged:,})"
        table.add_row(
            leg.title,
            per_s(leg.rate),
            ratio(leg.rate, embedded) if leg.name != "embedded" else "1.00",
            f"{leg.seconds:.1f}",
            durable,
        )
    return table


def cpu_table(legs: Sequence[Leg]) -> Table:
    names = sorted({k for leg in legs for k in leg.cpu if k != "machine"})
    table = Table(title="cores used during each leg's window (2 = the whole machine)")
    table.add_column("leg")
    for name in [*names, "others", "machine"]:
        table.add_column(name, justify="right")
    for leg in legs:
        ours = sum(v for k, v in leg.cpu.items() if k != "machine")
        others = max(0.0, leg.cpu.get("machine", 0.0) - ours)
        cells = [f"{leg.cpu[n]:.2f}" if n in leg.cpu else "" for n in names]
        table.add_row(leg.name, *cells, f"{others:.2f}", f"{leg.cpu.get('machine', 0):.2f}")
    return table


def final_table(legs: dict[str, Leg]) -> Table:
    table = Table(title="shopstream transport — measured in this run", min_width=70)
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("against", justify="right")
    table.add_column("ratio", justify="right")
    embedded = legs["embedded"].rate if "embedded" in legs else None
    rows = [
        ("kafka-e2e", "collector → Kafka → loader → DuckDB", "embedded", embedded),
        ("kafka-alone", "collector → Kafka (no loader)", "embedded", embedded),
        ("kafka-loader", "loader alone, Kafka backlog → DuckDB", "embedded", embedded),
        ("pubsub-e2e", "collector → Pub/Sub → loader → DuckDB", "embedded", embedded),
        ("pubsub-alone", "collector → Pub/Sub (no loader)", "embedded", embedded),
        ("pubsub-loader", "loader alone, Pub/Sub backlog → DuckDB", "embedded", embedded),
    ]
    if "embedded" in legs:
        table.add_row("collector → DuckDB (embedded)", per_s(embedded), "", "1.00")
    for name, title, against, reference in rows:
        if name in legs:
            rate = legs[name].rate
            table.add_row(
                title, per_s(rate), f"{against} {per_s(reference)}", ratio(rate, reference)
            )
    if "kafka-limit" in legs and "kafka-alone" in legs:
        limit = legs["kafka-limit"].rate
        alone = legs["kafka-alone"].rate
        table.add_row(
            "collector → Kafka (no loader)",
            per_s(alone),
            f"limit {per_s(limit)}",
            ratio(alone, limit),
        )
    for name in ("kafka-e2e", "pubsub-e2e"):
        if name in legs:
            leg = legs[name]
            lag = "n/a" if leg.lag_messages is None else f"{leg.lag_messages:,.0f} msgs"
            by_itself = legs.get(name.replace("e2e", "alone"))
            table.add_row(
                f"{name}: collector while the loader ran",
                per_s(leg.accepted_per_s),
                f"alone {per_s(by_itself.rate)}" if by_itself else "",
                ratio(leg.accepted_per_s, by_itself.rate) if by_itself else "",
            )
            table.add_row(
                f"{name}: lag at the last answer",
                f"{leg.lag_events or 0:,} events",
                f"loader's reading {lag}",
                "",
            )
            table.add_row(
                f"{name}: caught up after",
                f"{leg.catch_up_s or 0:.1f} s" + ("" if leg.caught_up else " (NOT caught up)"),
                "",
                "",
            )
    return table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark collector → Kafka / Pub/Sub → loader → DuckDB against the "
        "embedded path and the broker's own produce rate."
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per leg")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per leg")
    parser.add_argument("--quick", action="store_true", help="10 s legs: a rough check")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--connections", type=int, default=64, help="connections posting batches")
    parser.add_argument(
        "--only",
        choices=("embedded", "kafka", "pubsub"),
        action="append",
        help="run only these transports (repeatable; default all)",
    )
    parser.add_argument(
        "--catch-up-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for the loader to land every acknowledged event",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 10.0, 1.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    only = set(args.only or ("embedded", "kafka", "pubsub"))
    console.rule("[bold]shopstream transport benchmark")
    load1, load5, load15 = os.getloadavg()
    busy = psutil.cpu_percent(interval=1.0)
    console.print(
        f"{psutil.cpu_count()} cores; load average {load1:.2f} {load5:.2f} {load15:.2f}; "
        f"machine {busy:.0f}% busy before the start"
        + (" [yellow](not quiet: other work lowers the figures)" if busy > 10 else "")
    )
    with console.status("generating events..."):
        templates, origin = event_templates(TEMPLATE_EVENTS)
    mean = sum(map(len, templates)) / len(templates)
    console.print(f"{len(templates):,} event shapes from {origin}, {mean:,.0f} bytes on average")
    work = Path(tempfile.mkdtemp(prefix="shopstream-bench-transport-"))
    started = time.monotonic()
    legs: dict[str, Leg] = {}
    spawn = multiprocessing.get_context("spawn")
    try:
        with cf.ProcessPoolExecutor(max_workers=max(1, args.clients), mp_context=spawn) as pool:
            list(pool.map(_ready, range(args.clients)))  # imports done before anything is timed
            run = Run(
                pool=pool,
                templates=templates,
                work=work,
                run_id=os.urandom(3).hex(),
                seconds=args.seconds,
                warmup=args.warmup,
                clients=max(1, args.clients),
                connections=args.connections,
                catch_up_timeout=args.catch_up_timeout,
            )
            if "embedded" in only:
                with console.status(f"embedded: {args.warmup:.0f} + {args.seconds:.0f} s"):
                    legs["embedded"] = embedded_leg(run)
                show(legs["embedded"])
            if "kafka" in only:
                run_kafka(run, legs)
            if "pubsub" in only:
                run_pubsub(run, legs)
    finally:
        if args.keep:
            console.print(f"data and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    embedded = legs["embedded"].rate if "embedded" in legs else None
    console.print(legs_table(list(legs.values()), embedded))
    console.print(cpu_table(list(legs.values())))
    console.print(final_table(legs))
    for leg in legs.values():
        if leg.note:
            console.print(f"{leg.name}: {leg.note}")
        if leg.durable is not None and not leg.durable_ok:
            console.print(
                f"[red]{leg.name}: raw.events holds {leg.durable:,} rows ({leg.distinct:,} "
                f"distinct) for {leg.acknowledged:,} acknowledged; {leg.dead_letters} dead letters"
            )
    load1, load5, load15 = os.getloadavg()
    console.print(
        f"load average at the end {load1:.2f} {load5:.2f} {load15:.2f}; "
        f"total {time.monotonic() - started:,.0f} s"
    )
    failed = any(leg.durable is not None and not leg.durable_ok for leg in legs.values())
    return 1 if failed else 0


def run_kafka(run: Run, legs: dict[str, Leg]) -> None:
    if broker_binary() is None:
        console.print(
            "[yellow]Kafka legs skipped: noida-db is not installed (pip install noida-db)"
        )
        return
    from shopstream.config import KafkaSettings

    partitions = KafkaSettings().partitions
    with kafka_broker(run.work) as broker:
        transport = Transport("kafka", broker.url, {}, broker_process(broker), True)
        console.print(f"noida-db broker at {broker.bootstrap} (pid {transport.peer.pid})")

        def limit(topic: str) -> Leg:
            return limit_leg(run, broker, topic, partitions)

        for leg in transport_legs(run, transport, limit):
            legs[leg.name] = leg


def run_pubsub(run: Run, legs: dict[str, Leg]) -> None:
    script = find_emulator()
    if script is None:
        console.print(f"[yellow]Pub/Sub legs skipped: {INSTALL_HINT}")
        return
    with pubsub_emulator(script, run.work) as emulator:
        assert emulator.process is not None
        env = {"PUBSUB_EMULATOR_HOST": emulator.host}
        transport = Transport(
            "pubsub", f"pubsub://{PUBSUB_PROJECT}", env, psutil.Process(emulator.process.pid), False
        )
        console.print(f"Pub/Sub emulator at {emulator.host}")
        for leg in transport_legs(run, transport, None):
            legs[leg.name] = leg


def _ready(_: int) -> int:
    return os.getpid()


if __name__ == "__main__":
    sys.exit(main())
