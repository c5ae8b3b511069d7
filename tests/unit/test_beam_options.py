"""The Beam pipeline's runner options from settings (``beam.*``), without Beam: what
``tests/integration/test_beam_pipeline.py`` then has Beam itself parse."""

from __future__ import annotations

import pytest

from shopstream.beam.options import pubsub_project, runner_args, topics_to_read
from shopstream.config import BeamSettings, CdcSettings, Settings


def test_locally_only_the_runner_and_streaming() -> None:
    settings = Settings(beam=BeamSettings(region="europe-west1", max_workers=3))
    assert runner_args(settings, streaming=True) == [
        "--runner=BundleBasedDirectRunner",
        "--streaming",
    ]
    assert runner_args(settings, streaming=False) == ["--runner=BundleBasedDirectRunner"]


def test_dataflow_gets_its_engine_autoscaling_workers_region_and_temp_location() -> None:
    settings = Settings(
        beam=BeamSettings(
            runner="DataflowRunner",
            region="europe-west1",
            temp_location="gs://t/beam",
            max_workers=4,
            autoscaling_algorithm="NONE",
            sdk_container_image="img:1",
        )
    )
    assert runner_args(settings, streaming=True, project="shop") == [
        "--runner=DataflowRunner",
        "--streaming",
        "--project=shop",
        "--region=europe-west1",
        "--temp_location=gs://t/beam",
        "--autoscaling_algorithm=NONE",
        "--max_num_workers=4",
        "--enable_streaming_engine",
        "--sdk_container_image=img:1",
    ]
    without_engine = settings.model_copy(
        update={"beam": settings.beam.model_copy(update={"streaming_engine": False})}
    )
    assert "--enable_streaming_engine" not in runner_args(
        without_engine, streaming=True, project="shop"
    )


def test_dataflow_without_region_temp_location_or_project_says_which() -> None:
    settings = Settings(beam=BeamSettings(runner="DataflowRunner", region="europe-west1"))
    with pytest.raises(ValueError, match=r"TEMP_LOCATION, a project") as caught:
        runner_args(settings, streaming=True)
    assert "REGION" not in str(caught.value)


def test_the_source_url_and_the_topics() -> None:
    assert pubsub_project("pubsub://shop-prod") == "shop-prod"
    with pytest.raises(ValueError, match="Java expansion service"):
        pubsub_project("kafka://127.0.0.1:9092")
    with pytest.raises(ValueError, match="pubsub://<project>"):
        pubsub_project("pubsub://")
    settings = Settings(cdc=CdcSettings(tables=["orders", "billing.invoices"]))
    assert topics_to_read(settings) == [
        "shopstream.events",
        "shopstream.dead_letter",
        "shopstream.source_schemas",
        "shopstream.public.orders",
        "shopstream.billing.invoices",
    ]
    chosen = Settings(beam=BeamSettings(topics=["shopstream.events"]))
    assert topics_to_read(chosen) == ["shopstream.events"]
