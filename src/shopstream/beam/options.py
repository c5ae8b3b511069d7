"""What the pipeline reads and how it runs, from settings (``beam.*``): the source URL, the
topics and subscriptions, the runner, and Dataflow's streaming engine, autoscaling, worker
ceiling, region and temp location.

Everything here but :func:`pipeline_options` (which makes Beam's ``PipelineOptions``) is plain
Python, unit-tested where Beam is not installed.

    >>> from shopstream.config import Settings
    >>> runner_args(Settings(), streaming=True)
    ['--runner=BundleBasedDirectRunner', '--streaming']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shopstream.events.messages import Topics, fit_name
from shopstream.events.raw import cdc_table_name

if TYPE_CHECKING:
    from shopstream.config import Settings

DATAFLOW = "DataflowRunner"
PUBSUB = "pubsub://"


def pubsub_project(url: str) -> str:
    """The project of a ``pubsub://<project>`` URL (the same URL as the sink's and the
    loader's); a ValueError naming what is wrong otherwise."""
    if url.startswith("kafka://"):
        raise ValueError(
            "the Beam pipeline reads Pub/Sub only: Beam's Kafka IO for Python needs a Java "
            "expansion service; run the loader for Kafka (shopstream load --from kafka://...)"
        )
    project = url.removeprefix(PUBSUB)
    if not url.startswith(PUBSUB) or not project or "/" in project:
        raise ValueError(f"{url!r} is not a Pub/Sub URL: use pubsub://<project>")
    return project


def topics_to_read(settings: Settings) -> list[str]:
    """``beam.topics``, or the fixed topics and the change topics of ``cdc.tables``."""
    if settings.beam.topics:
        return list(settings.beam.topics)
    topics = Topics(settings.transport.topic_prefix)
    names = list(topics.fixed())
    for table in settings.cdc.tables:
        schema, dot, name = table.rpartition(".")
        schema = schema if dot else settings.cdc.schema_name
        if topics.table_for(topics.changes(schema, name)) == cdc_table_name(name, schema):
            names.append(topics.changes(schema, name))
    return names


def subscription_path(project: str, topic: str, name: str) -> str:
    # Cut as the loader's are (Pub/Sub's 255 characters; a long table's topic has 249).
    return f"projects/{project}/subscriptions/{fit_name(f'{topic}.{name}', 255)}"


def runner_args(settings: Settings, *, streaming: bool, project: str | None = None) -> list[str]:
    """Beam's command-line options for ``settings.beam`` (Dataflow's only for Dataflow).

    Raises ValueError naming the setting that Dataflow needs and that is not set.
    """
    beam = settings.beam
    args = [f"--runner={beam.runner}"]
    if streaming:
        args.append("--streaming")
    if beam.runner != DATAFLOW:
        return args
    missing = [
        name
        for name, value in (
            ("SHOPSTREAM_BEAM__REGION", beam.region),
            ("SHOPSTREAM_BEAM__TEMP_LOCATION", beam.temp_location),
            ("a project (--from pubsub://<project>)", project),
        )
        if not value
    ]
    if missing:
        raise ValueError(f"the DataflowRunner needs {', '.join(missing)}")
    args += [
        f"--project={project}",
        f"--region={beam.region}",
        f"--temp_location={beam.temp_location}",
        f"--autoscaling_algorithm={beam.autoscaling_algorithm}",
        f"--max_num_workers={beam.max_workers}",
    ]
    if beam.streaming_engine:
        args.append("--enable_streaming_engine")
    if beam.sdk_container_image:
        args.append(f"--sdk_container_image={beam.sdk_container_image}")
    return args


def pipeline_options(
    settings: Settings,
    *,
    streaming: bool,
    project: str | None = None,
    extra: Sequence[str] = (),
) -> Any:
    """Beam's ``PipelineOptions`` for ``settings`` plus ``extra`` command-line options (these
    win: Beam keeps the last value of an option given twice)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    args = runner_args(settings, streaming=streaming, project=project)
    return PipelineOptions([*args, *extra])
