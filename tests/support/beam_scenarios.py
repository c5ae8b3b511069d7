"""Beam scenarios, run by ``.venv-beam/bin/python`` (Beam cannot live in the test venv): the
integration tests in ``tests/integration/test_beam_pipeline.py`` write a scenario's input, run
this script on it, and assert in the test venv on what landed in the warehouse.

``python beam_scenarios.py teststream SPEC OUT``: SPEC (JSON) holds steps, each either
``{"messages": [...]}`` (topic, key and value in base64, headers, the element's timestamp in
epoch seconds) or ``{"watermark": seconds}``; they become one TestStream, run through
:func:`shopstream.beam.pipeline.build` on the BundleBasedDirectRunner into the warehouse the
environment names (``SHOPSTREAM_WAREHOUSE_URL``). OUT (JSON) receives what only Beam can say:
how the Dataflow options parse.

``python beam_scenarios.py pubsub OUT RAW_ROWS MART_ROWS -- ARGS...``: ``python -m
shopstream.beam``'s own start (:func:`shopstream.beam.__main__.start`) with ARGS, against the
Pub/Sub emulator (``PUBSUB_EMULATOR_HOST``): the DirectRunner cannot run a streaming pipeline
for a while and stop (``wait_until_finish(duration)`` is not implemented), so it runs until
the warehouse holds RAW_ROWS raw rows and MART_ROWS mart rows (or 90 s passed), then the
process ends (cancelling would wait for the runner's blocked Pub/Sub pulls); OUT gets the
rows per layer it saw.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections import Counter
from typing import Any


def _decoded(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def teststream(spec_path: str, out_path: str) -> None:
    import apache_beam as beam
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    from shopstream.beam.options import pipeline_options
    from shopstream.beam.pipeline import build, received
    from shopstream.config import Settings

    with open(spec_path) as file:
        spec = json.load(file)
    settings = Settings()
    stream = TestStream()
    for step in spec["steps"]:
        if "watermark" in step:
            stream.advance_watermark_to(step["watermark"])
            continue
        stream.add_elements(
            [
                TimestampedValue(
                    (
                        m["topic"],
                        _decoded(m["key"]),
                        _decoded(m["value"]),
                        m["headers"],
                        m.get("message_id"),
                    ),
                    m["timestamp"],
                )
                for m in step["messages"]
            ]
        )
    stream.advance_watermark_to_infinity()
    with beam.Pipeline(options=pipeline_options(settings, streaming=True)) as pipeline:
        messages = pipeline | stream | beam.MapTuple(received)
        build(messages, settings)
    with open(out_path, "w") as file:
        json.dump({"dataflow_options": _dataflow_options(), "runner": settings.beam.runner}, file)


def _dataflow_options() -> dict[str, Any]:
    """The Dataflow options :func:`pipeline_options` makes, as Beam itself parses them."""
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        StandardOptions,
        WorkerOptions,
    )

    from shopstream.beam.options import pipeline_options
    from shopstream.config import BeamSettings, Settings

    beam_settings = BeamSettings(
        runner="DataflowRunner",
        region="europe-west1",
        temp_location="gs://shop-temp/beam",
        max_workers=7,
        autoscaling_algorithm="THROUGHPUT_BASED",
        sdk_container_image="europe-docker.pkg.dev/shop/beam/shopstream:1",
    )
    options = pipeline_options(
        Settings(beam=beam_settings), streaming=True, project="shop-prod", extra=["--job_name=j1"]
    )
    cloud, worker = options.view_as(GoogleCloudOptions), options.view_as(WorkerOptions)
    return {
        "runner": options.view_as(StandardOptions).runner,
        "streaming": options.view_as(StandardOptions).streaming,
        "project": cloud.project,
        "region": cloud.region,
        "temp_location": cloud.temp_location,
        "job_name": cloud.job_name,
        "enable_streaming_engine": cloud.enable_streaming_engine,
        "max_num_workers": worker.max_num_workers,
        "autoscaling_algorithm": worker.autoscaling_algorithm,
        "sdk_container_image": worker.sdk_container_image,
    }


def pubsub(out_path: str, raw_rows: str, mart_rows: str, _dash: str, *argv: str) -> None:
    import time

    from shopstream.beam.__main__ import start
    from shopstream.beam.pipeline import close_warehouses, opened_warehouses

    wanted = {"raw": int(raw_rows), "mart": int(mart_rows)}
    began = time.monotonic()
    start(list(argv))
    seconds: dict[str, float] = {"started": time.monotonic() - began}
    landed: dict[str, int] = {}
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and not all(
            landed.get(layer, 0) >= count for layer, count in wanted.items()
        ):
            time.sleep(0.5)
            # The warehouse the pipeline's DoFns share in this process (DuckDB's file lock
            # keeps anyone else out): what is durable so far, by layer.
            for warehouse in opened_warehouses():
                landed = Counter()
                for table, rows in warehouse.table_counts().items():
                    landed[table.partition(".")[0]] += rows
            for layer, count in wanted.items():
                if landed.get(layer, 0) >= count:
                    seconds.setdefault(layer, time.monotonic() - began)
        time.sleep(1.0)  # anything more it would append (it should not) lands now
    finally:
        # Not result.cancel(): it waits for the runner's Pub/Sub reads, each blocked in a pull
        # for up to 30 s (Beam's DirectRunner asks with that timeout). The process ends below.
        close_warehouses()
    with open(out_path, "w") as file:
        json.dump({"landed": landed, "seconds": seconds}, file)
    # The runner's threads would keep the interpreter from exiting: everything is written
    # and closed, so leave now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"teststream": teststream, "pubsub": pubsub}[command](*arguments)
