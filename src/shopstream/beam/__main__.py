"""``python -m shopstream.beam --from pubsub://<project> [Beam options...]``: run the pipeline.

Locally (``beam.runner`` BundleBasedDirectRunner, the default) it runs until interrupted,
writing to ``settings.warehouse``; with ``SHOPSTREAM_BEAM__RUNNER=DataflowRunner`` it submits a
Dataflow streaming job (options from ``beam.*``) and returns. Options it does not know go to
Beam unchanged (``--job_name=...``, ``--service_account_email=...``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import apache_beam as beam

from shopstream.beam.options import DATAFLOW, pipeline_options, pubsub_project, topics_to_read
from shopstream.beam.pipeline import build, close_warehouses
from shopstream.beam.sources import ReadMessages, ensure_subscriptions
from shopstream.config import Settings


def start(argv: list[str] | None = None) -> Any:
    """Build and start the pipeline (``argv`` as on the command line); its PipelineResult."""
    parser = argparse.ArgumentParser(prog="python -m shopstream.beam", description=__doc__)
    parser.add_argument("--from", dest="source", required=True, help="pubsub://<project>")
    parser.add_argument(
        "--topic",
        action="append",
        default=None,
        help="a topic to read (repeat it; default: beam.topics, or shopstream's topics)",
    )
    known, beam_args = parser.parse_known_args(argv)
    settings = Settings()
    try:
        project = pubsub_project(known.source)
        options = pipeline_options(settings, streaming=True, project=project, extra=beam_args)
    except ValueError as exc:
        parser.error(str(exc))
    topics = known.topic or topics_to_read(settings)
    if settings.pubsub.create:
        ensure_subscriptions(project, topics, settings.beam.subscription)
    pipeline = beam.Pipeline(options=options)
    messages = pipeline | "Pub/Sub" >> ReadMessages(project, topics, settings.beam.subscription)
    build(messages, settings)
    return pipeline.run()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    result = start(argv)
    if Settings().beam.runner == DATAFLOW:
        logging.info("submitted the Dataflow job %s", result.job_id())
        return 0
    try:
        result.wait_until_finish()  # a streaming pipeline: until interrupted
    finally:
        close_warehouses()
    return 0


if __name__ == "__main__":
    sys.exit(main())
