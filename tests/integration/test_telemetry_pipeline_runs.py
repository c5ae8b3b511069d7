"""Batch runs record their outcome for the PipelineExecutionFailed alert: `shopstream quality
run` pushes it to a real Pushgateway, a Pushgateway that cannot be reached is a warning that
leaves the command's exit status alone, and the platform's own runs (its schedule, requests
over its socket) count them in its registry. `shopstream quality run` also pushes its quality
gauges for the DataQualityCheckFailing alert, replacing the group of the previous run."""

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


def quality_run(
    data_dir: Path, pushgateway_url: str, *args: str, checks_file: Path | None = None
) -> subprocess.Popen[str]:
    """`shopstream quality run` with ``args`` on the DuckDB warehouse in ``data_dir`` (created
    empty by the first run). ``--select no-such-check`` selects no check: it runs (and passes)
    in a few seconds; every check runs in a few seconds too, and raw.events.freshness fails
    (nothing has landed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    env["SHOPSTREAM_DATA_DIR"] = str(data_dir)
    env["SHOPSTREAM_OBSERVABILITY__PUSHGATEWAY_URL"] = pushgateway_url
    if checks_file is not None:
        env["SHOPSTREAM_QUALITY__CHECKS_FILE"] = str(checks_file)
    return subprocess.Popen(
        [sys.executable, "-m", "shopstream", "quality", "run", *args],
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
    pushed = quality_run(tmp_path / "pushed", pushgateway.url, "--select", "no-such-check")
    unpushed = quality_run(tmp_path / "unpushed", "http://127.0.0.1:9", "--select", "no-such-check")
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


STATUS = "shopstream_quality_check_status"
LAST_RUN = "shopstream_quality_last_run_timestamp_seconds"
FAILING = "raw.events.freshness"


def pushed_statuses(gateway: Pushgateway) -> dict[tuple[str, str, str, str], float]:
    """(check, table, kind, status) -> value of the pushed check statuses, every one of them
    in the group job="shopstream_quality" as Prometheus sees it (honor_labels: instance="")."""
    found: dict[tuple[str, str, str, str], float] = {}
    for labels, value in gateway.samples(STATUS).items():
        named = dict(labels)
        assert (named.pop("job"), named.pop("instance")) == ("shopstream_quality", ""), labels
        found[named["check"], named["table"], named["kind"], named["status"]] = value
    return found


def pushed_last_run(gateway: Pushgateway) -> float | None:
    return gateway.samples(LAST_RUN).get((("instance", ""), ("job", "shopstream_quality")))


def finished(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = process.communicate(timeout=120)
    assert "Traceback" not in out, out
    return process.returncode, " ".join(out.split())


def test_a_quality_run_replaces_the_pushed_quality_gauges(
    pushgateway: Pushgateway,  # noqa: F811
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "warehouse"
    started = time.time()
    # Every check, on an empty warehouse; beside it, the same to a port nobody listens on.
    first = quality_run(warehouse, pushgateway.url)
    unpushed = quality_run(tmp_path / "unpushed", "http://127.0.0.1:9")
    code, out = finished(first)
    assert code == 1, out  # raw.events.freshness fails
    statuses = pushed_statuses(pushgateway)
    assert statuses[FAILING, "raw.events", "freshness", "fail"] == 1
    assert statuses[FAILING, "raw.events", "freshness", "pass"] == 0
    checks = {check for check, *_ in statuses}
    assert len(checks) > 10 and all(
        sum(v for (c, *_), v in statuses.items() if c == check) == 1 for check in checks
    )  # one status each
    observed = pushgateway.samples("shopstream_quality_check_observed")
    assert {dict(labels)["check"] for labels in observed} == checks
    first_run = pushed_last_run(pushgateway)
    assert first_run is not None and first_run >= started
    # Counters are not pushed: a fresh process's would be 1 every time.
    assert not pushgateway.samples("shopstream_quality_runs_total")

    code, out = finished(unpushed)
    assert code == 1, out  # as the pushed run: the failed push does not change it
    assert "warning: could not push to the Pushgateway at http://127.0.0.1:9" in out, out
    assert "the quality alert and dashboard will not see this run's checks" in out, out

    # A --select run judged a part: the full run's group stays as it was.
    code, out = finished(quality_run(warehouse, pushgateway.url, "--select", FAILING))
    assert "a --select run does not push the quality gauges" in out, out
    assert pushed_statuses(pushgateway) == statuses
    assert pushed_last_run(pushgateway) == first_run

    # A check no longer configured is gone from the group (its alert clears); the rest stay.
    checks_file = tmp_path / "checks.yml"
    checks_file.write_text(f"disable: [{FAILING}]\n")
    code, out = finished(quality_run(warehouse, pushgateway.url, checks_file=checks_file))
    assert code == 0, out
    now = pushed_statuses(pushgateway)
    assert {check for check, *_ in now} == checks - {FAILING}
    assert not any(status == "fail" and value for (*_, status), value in now.items())
    second_run = pushed_last_run(pushgateway)
    assert second_run is not None and second_run > first_run

    # No check left at all: no status left either (a POST would keep the last ones).
    checks_file.write_text(f"disable: [{', '.join(sorted(checks))}]\n")
    code, out = finished(quality_run(warehouse, pushgateway.url, checks_file=checks_file))
    assert code == 0, out
    assert pushed_statuses(pushgateway) == {}
    assert not pushgateway.samples("shopstream_quality_check_observed")
    last_run = pushed_last_run(pushgateway)
    assert last_run is not None and last_run > second_run


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
