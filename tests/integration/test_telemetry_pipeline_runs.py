"""Batch runs record their outcome for the PipelineExecutionFailed alert: `shopstream quality
run` pushes it to a real Pushgateway, a Pushgateway that cannot be reached is a warning that
leaves the command's exit status alone, and the platform's own runs (its schedule, requests
over its socket) count them in its registry."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from shopstream.config import ObservabilitySettings, Settings
from shopstream.observability.metrics import REGISTRY
from shopstream.platform_runs import PlatformRuns
from tests.support.pushgateway import Pushgateway, pushgateway  # noqa: F401

SUCCESS = "shopstream_pipeline_last_success_timestamp_seconds"
FAILURE = "shopstream_pipeline_last_failure_timestamp_seconds"


def quality_run(data_dir: Path, pushgateway_url: str) -> subprocess.Popen[str]:
    """`shopstream quality run` selecting no check: it runs (and passes) in a few seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    env["SHOPSTREAM_DATA_DIR"] = str(data_dir)
    env["SHOPSTREAM_OBSERVABILITY__PUSHGATEWAY_URL"] = pushgateway_url
    return subprocess.Popen(
        [sys.executable, "-m", "shopstream", "quality", "run", "--select", "no-such-check"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_quality_run_pushes_its_outcome_and_a_failed_push_only_warns(
    pushgateway: Pushgateway,  # noqa: F811
    tmp_path: Path,
) -> None:
    started = time.time()
    # Side by side: one pushes to the Pushgateway, the other to a port nobody listens on.
    pushed = quality_run(tmp_path / "pushed", pushgateway.url)
    unpushed = quality_run(tmp_path / "unpushed", "http://127.0.0.1:9")
    pushed_out, _ = pushed.communicate(timeout=120)
    unpushed_out, _ = unpushed.communicate(timeout=120)

    assert pushed.returncode == 0, pushed_out
    labels = (("instance", ""), ("job", "shopstream_pipeline"), ("pipeline", "quality"))
    assert pushgateway.samples(SUCCESS)[labels] >= started
    # No failure pushed by this run (Debian's Pushgateway persists to a file every instance
    # shares, so an older one may be there).
    assert pushgateway.samples(FAILURE).get(labels, 0.0) < started

    assert unpushed.returncode == 0, unpushed_out  # the run passed: the push does not change it
    said = " ".join(unpushed_out.split())
    assert "warning: could not push to the Pushgateway at http://127.0.0.1:9" in said, said
    assert "Traceback" not in said


class _Runs(PlatformRuns[bool]):
    """A platform's runs of the transform pipeline (the outcome: whether it succeeded)."""

    name = "transform"

    def __init__(self, settings: Settings) -> None:
        super().__init__(0)
        self.settings = settings

    def ok(self, outcome: bool) -> bool:
        return outcome


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_the_platforms_runs_are_counted_and_pushed(pushgateway: Pushgateway) -> None:  # noqa: F811
    runs = _Runs(Settings(observability=ObservabilitySettings(pushgateway_url=pushgateway.url)))
    total = "shopstream_pipeline_runs_total"
    failed_before = _sample(REGISTRY, total, pipeline="transform", outcome="failed")
    started = time.time()
    assert runs.one_at_a_time(lambda: False, reason="schedule", wait=False) is False
    assert _sample(REGISTRY, total, pipeline="transform", outcome="failed") == failed_before + 1
    assert _sample(REGISTRY, FAILURE, pipeline="transform") >= started
    labels = (("instance", ""), ("job", "shopstream_pipeline"), ("pipeline", "transform"))
    assert pushgateway.samples(FAILURE)[labels] >= started
