"""Transport benchmark, Kafka producer side: the collector answering only after the broker's
acknowledgement, against the embedded path and against the broker's own produce limit.

    .venv/bin/python bench/transport.py            # ~90 s
    .venv/bin/python bench/transport.py --quick    # ~40 s, rough figures

In one run, on one machine, a noida-db broker (tests/support/kafka_broker.py) beside:

1. embedded: ``python -m shopstream collector`` writing to DuckDB (the default sink), batches
   of 100 native events per ``POST /v1/events`` (bench/collector.py's clients and phase);
2. kafka: the same collector and load with ``SHOPSTREAM_SINK_URL=kafka://...``: every 2xx
   came after the delivery reports of all its events (idempotent producer, acks=all, lz4);
3. the limit: a plain confluent-kafka producer with the same settings sending the very
   messages phase 2 wrote (read back from the events topic) as fast as it can, flushed.

It prints events/s for each and the ratios kafka / embedded and kafka / plain producer. The
broker, the collector and the clients share the machine's cores, and the plain producer runs
without HTTP, validation or a collector: its rate is what the broker takes from one Python
producer here, the ceiling for the sink, not a target it can reach.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from collector import (
    BATCH_SIZE,
    TEMPLATE_EVENTS,
    Collector,
    Phase,
    PhaseOutcome,
    _ready,
    console,
    event_templates,
    run_phase_on,
    settle,
)

sys.path.append(str(Path(__file__).resolve().parent.parent))
from tests.support.kafka_broker import Consumed, KafkaBroker, consume_all

#: Messages read back from the kafka phase for the plain producer (enough for a few seconds).
SAMPLE_MESSAGES = 300_000


def measure_collector(
    pool: cf.ProcessPoolExecutor,
    work: Path,
    name: str,
    env: dict[str, str],
    templates: tuple[bytes, ...],
    args: argparse.Namespace,
) -> PhaseOutcome:
    collector = Collector(work / name, env)
    try:
        with console.status(f"{name}: starting the collector..."):
            collector.start()
        phase = Phase(name, f"{name}: batches of {BATCH_SIZE}", "batch", args.connections, 2)
        with console.status(f"{name}: {args.warmup:.0f} s + {args.seconds:.0f} s"):
            outcome = run_phase_on(
                pool,
                collector,
                phase,
                templates,
                warmup=args.warmup,
                seconds=args.seconds,
                run_id=f"{name}-{uuid.uuid4().hex[:6]}",
            )
        settle(collector, least=0.5, most=10)
        statuses = ", ".join(f"{s}: {n:,}" for s, n in sorted(outcome.result.statuses.items()))
        console.print(f"{phase.title}: {outcome.events_per_s:,.0f} events/s ({statuses})")
        assert collector.stop() == 0, collector.log()[-3000:]
    except Exception:
        console.print(f"[red]{name} failed; collector log:")
        console.print(collector.log()[-5000:], markup=False, highlight=False)
        collector.kill()
        raise
    return outcome


def plain_producer_rate(broker: KafkaBroker, messages: list[Consumed], topic: str) -> float:
    """Records/s of one confluent-kafka producer with the sink's settings, flushed."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(10)
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    failed = 0

    def delivered(err: object, _: object) -> None:
        nonlocal failed
        failed += err is not None

    started = time.perf_counter()
    for message in messages:
        while True:
            try:
                producer.produce(
                    topic,
                    message.value,
                    message.key,
                    headers=message.headers,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(60)
    elapsed = time.perf_counter() - started
    if left or failed:
        raise RuntimeError(f"plain producer: {left} not delivered, {failed} failed")
    return len(messages) / elapsed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per phase")
    parser.add_argument("--quick", action="store_true", help="5 s phases: a rough check")
    parser.add_argument("--connections", type=int, default=64, help="connections posting")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 5.0, 1.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console.rule("[bold]shopstream transport benchmark: Kafka, producer side")
    with console.status("generating events..."):
        templates, origin = event_templates(TEMPLATE_EVENTS)
    console.print(f"{len(templates):,} event shapes from {origin}")
    work = Path(tempfile.mkdtemp(prefix="shopstream-bench-transport-"))
    broker = KafkaBroker(work / "kafka")
    started = time.monotonic()
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    try:
        broker.start()
        console.print(f"noida-db at {broker.bootstrap} (data in {work})")
        kafka_env = {
            "SHOPSTREAM_SINK_URL": broker.url,
            "SHOPSTREAM_TRANSPORT__TOPIC_PREFIX": prefix,
        }
        spawn = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
            list(pool.map(_ready, range(2)))
            embedded = measure_collector(pool, work, "embedded", {}, templates, args)
            kafka = measure_collector(pool, work, "kafka", kafka_env, templates, args)
        with console.status("reading the events topic back..."):
            began = time.perf_counter()
            written = consume_all(broker.bootstrap, f"{prefix}.events", timeout=120)
            read_rate = len(written) / (time.perf_counter() - began)
        acknowledged = kafka.result.acknowledged_total
        console.print(
            f"events topic: {len(written):,} messages ({acknowledged:,} acknowledged to "
            f"clients; read back at {read_rate:,.0f}/s)"
        )
        sample = [m for m in written if m.value is not None][:SAMPLE_MESSAGES]
        with console.status(f"plain producer: {len(sample):,} messages..."):
            limit = plain_producer_rate(broker, sample, f"{prefix}.plain")
        console.print(f"plain confluent-kafka producer: {limit:,.0f} messages/s")
    finally:
        broker.kill()
    shutil.rmtree(work, ignore_errors=True)

    table = Table(title="collector → Kafka, measured in this run")
    table.add_column("path")
    table.add_column("events/s", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row("embedded (collector → DuckDB)", f"{embedded.events_per_s:,.0f}", "1.00")
    table.add_row(
        "collector → Kafka (2xx after acks)",
        f"{kafka.events_per_s:,.0f}",
        f"{kafka.events_per_s / embedded.events_per_s:.2f} of embedded",
    )
    table.add_row(
        "plain producer, same messages (limit)",
        f"{limit:,.0f}",
        f"sink at {kafka.events_per_s / limit:.2f} of it",
    )
    console.print(table)
    lost = acknowledged - len({m.headers.get("event_id") for m in written})
    console.print(
        f"acknowledged but not on the topic: {max(0, lost):,}; "
        f"total {time.monotonic() - started:,.0f} s"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
