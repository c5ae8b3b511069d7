"""The code map of the real shopstream package: what each pipeline's source says it does.

Facts checked here were read in the code: the collector's intake batches ``rows["events"]`` and
``rows["dead_letter"]`` and checks the body against ``collector.max_body_bytes``; the CDC reader
names raw tables with ``cdc_table_name`` and keeps its slot in ``cdc.slot_name``; the quality
store appends to ``monitoring.data_quality_checks``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import shopstream
from shopstream.config import Settings
from shopstream.genai.docs.code_map import PIPELINES, analyse_pipelines
from shopstream.genai.docs.model import PipelineCode
from shopstream.observability.metrics import REGISTRY

PACKAGE = Path(shopstream.__file__).parent


@pytest.fixture(scope="module")
def pipelines() -> dict[str, PipelineCode]:
    return analyse_pipelines()


def test_every_pipeline_is_mapped(pipelines: dict[str, PipelineCode]) -> None:
    assert tuple(pipelines) == PIPELINES == ("collector", "cdc", "loader", "transform", "quality")
    for name, code in pipelines.items():
        assert code.name == name
        assert code.summary and "\n" not in code.summary
        assert f"shopstream.{name}" in code.modules
        for sequence in (
            code.modules,
            code.settings_read,
            code.tables_written,
            code.sinks,
            code.reads_from,
        ):
            assert list(sequence) == sorted(set(sequence))
        assert code.entry_points, name
        # Docstrings' Sphinx markup is read as its text on the pages.
        for text in (code.summary, *code.entry_points.values()):
            assert not re.search(r":\w+:`|``", text), (name, text)


def test_collector(pipelines: dict[str, PipelineCode]) -> None:
    collector = pipelines["collector"]
    assert collector.summary.startswith("HTTP intake of behaviour events")
    assert "shopstream.collector.app" in collector.modules
    assert {"raw.events", "raw.dead_letter"} == set(collector.tables_written)
    assert {"collector.max_body_bytes", "collector.max_events_per_request", "write_keys"} <= set(
        collector.settings_read
    )
    assert collector.entry_points["shopstream collector"].startswith("Run the collector alone")
    assert "shopstream_collector_events_received_total" in collector.metrics
    assert "shopstream_collector_request_seconds" in collector.metrics
    # It hands its records to a Sink; the sink URL may name a broker.
    assert collector.sinks == ("kafka", "pubsub")


def test_cdc(pipelines: dict[str, PipelineCode]) -> None:
    cdc = pipelines["cdc"]
    assert {"raw.cdc_<table>", "raw.source_schemas", "raw.dead_letter"} == set(cdc.tables_written)
    assert {"cdc.slot_name", "cdc.publication_name", "cdc.batch_max_changes"} <= set(
        cdc.settings_read
    )
    assert cdc.entry_points["shopstream cdc"].startswith("Capture the shop database's changes")
    assert {"shopstream_cdc_changes_total", "shopstream_cdc_replication_lag_bytes"} <= set(
        cdc.metrics
    )
    assert not any(metric.startswith("shopstream_collector_") for metric in cdc.metrics)


def test_loader_transform_and_quality(pipelines: dict[str, PipelineCode]) -> None:
    loader = pipelines["loader"]
    assert set(loader.entry_points) == {"shopstream load"}
    # It lands whatever the transport carries (events.messages decodes every raw table).
    assert {"raw.events", "raw.cdc_<table>", "raw.dead_letter"} <= set(loader.tables_written)
    assert "loader.group" in loader.settings_read
    # It consumes the transports the collector and cdc write to: it reads them, sends to none.
    assert loader.reads_from == ("kafka", "pubsub")
    assert loader.sinks == ()
    assert pipelines["collector"].reads_from == () and pipelines["cdc"].reads_from == ()
    assert "shopstream_loader_rows_total" in loader.metrics

    transform = pipelines["transform"]
    assert {
        "mart.daily_sales",
        "mart.sessions",
        "staging.stg_events",
        "staging.stg_<table>",
        "staging.stg_<table>_history",
        "monitoring.pipeline_freshness",
    } <= set(transform.tables_written)
    assert not any(t.startswith("raw.") for t in transform.tables_written)
    assert {"transform.lookback_days", "transform.schedule_minutes"} <= set(transform.settings_read)
    assert "shopstream transform" in transform.entry_points

    quality = pipelines["quality"]
    assert {"monitoring.data_quality_checks", "monitoring.data_quality_reports"} == set(
        quality.tables_written
    )
    assert {"quality.checks_file", "quality.schedule_minutes"} <= set(quality.settings_read)
    assert quality.entry_points["shopstream quality run"].startswith("Run the data quality")
    assert "shopstream_quality_runs_total" in quality.metrics


def test_commands_belong_to_the_pipelines_they_run(pipelines: dict[str, PipelineCode]) -> None:
    owners = {
        command: sorted(name for name, code in pipelines.items() if command in code.entry_points)
        for code in pipelines.values()
        for command in code.entry_points
    }
    # `run` starts the collector and CDC, then transform and quality (--transform, --quality).
    assert owners["shopstream run"] == ["cdc", "collector", "quality", "transform"]
    assert owners["shopstream load"] == ["loader"]
    assert "shopstream sql" not in owners
    assert "shopstream generate-history" not in owners


def test_settings_and_metrics_exist(pipelines: dict[str, PipelineCode]) -> None:
    """What the map names is real: every settings path is a field of Settings, every metric
    is exported by the process's registry."""
    exported = {
        name for family in REGISTRY.collect() for name in (family.name, f"{family.name}_total")
    }
    for code in pipelines.values():
        for path in code.settings_read:
            model: object = Settings
            for part in path.split("."):
                fields = model.model_fields  # type: ignore[attr-defined]
                assert part in fields, f"{code.name} reads {path}: no such setting"
                model = fields[part].annotation
        assert set(code.metrics) <= exported, code.name


def test_the_same_package_gives_the_same_map(pipelines: dict[str, PipelineCode]) -> None:
    assert analyse_pipelines(PACKAGE) == pipelines


def test_analysing_imports_none_of_the_pipelines() -> None:
    script = (
        "import json, sys\n"
        "from shopstream.genai.docs.code_map import analyse_pipelines\n"
        "analyse_pipelines()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('shopstream'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout)
    assert "shopstream.genai.docs.code_map" in loaded
    pipeline_packages = ("collector", "cdc", "loader", "transform", "quality", "sinks")
    assert [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in pipeline_packages] == []
    assert "shopstream.collector.app" not in loaded


def test_the_map_follows_the_code(tmp_path: Path) -> None:
    """A copy of the package with a new collector module: its write, settings read and metric
    show up, so the map is read from the code and not written down."""
    copy = tmp_path / "shopstream"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "collector" / "tally.py").write_text(
        '"""Per-minute intake tallies."""\n'
        "from prometheus_client import Counter\n"
        "from shopstream.config import Settings\n\n"
        'TALLIES = Counter("shopstream_intake_tallies", "Tallies written.")\n'
        'TALLY_TABLE = "intake_tallies"\n\n\n'
        "def write(warehouse, settings: Settings, batch) -> None:\n"
        "    if settings.collector.port:\n"
        "        warehouse.append_mart(TALLY_TABLE, batch)\n"
        "        TALLIES.inc()\n"
    )
    collector = analyse_pipelines(copy)["collector"]
    assert "mart.intake_tallies" in collector.tables_written
    assert "collector.port" in collector.settings_read
    assert "shopstream_intake_tallies_total" in collector.metrics
    assert "shopstream.collector.tally" in collector.modules


def test_a_directory_that_is_not_the_package_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not the shopstream package"):
        analyse_pipelines(tmp_path)
