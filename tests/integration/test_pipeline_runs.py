"""`shopstream record-run` against a real Pushgateway: what the PipelineExecutionFailed alert
reads after a short-lived run (an Airflow task, the quality CronJob) has exited."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.pushgateway import Pushgateway, pushgateway  # noqa: F401

FAILURE = "shopstream_pipeline_last_failure_timestamp_seconds"
SUCCESS = "shopstream_pipeline_last_success_timestamp_seconds"


def said(result: subprocess.CompletedProcess[str]) -> str:
    """What the command printed, on one line (Rich wraps long messages)."""
    return " ".join((result.stdout + result.stderr).split())


def record(url: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    if url is not None:
        env["SHOPSTREAM_OBSERVABILITY__PUSHGATEWAY_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "shopstream", "record-run", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_a_failure_is_pushed_and_keeps_the_last_success(pushgateway: Pushgateway) -> None:  # noqa: F811
    ok = record(pushgateway.url, "transform", "--outcome", "success")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    failed = record(pushgateway.url, "transform", "--outcome", "failed", "--reason", "dbt failed")
    assert failed.returncode == 0, failed.stdout + failed.stderr

    labels = (("instance", ""), ("job", "shopstream_pipeline"), ("pipeline", "transform"))
    success_at = pushgateway.samples(SUCCESS)[labels]
    failure_at = pushgateway.samples(FAILURE)[labels]
    assert failure_at >= success_at > 0  # the alert's condition: the latest run failed


def test_without_a_pushgateway_it_says_the_outcome_was_not_recorded() -> None:
    result = record(None, "quality", "--outcome", "failed")
    assert result.returncode == 1
    assert "SHOPSTREAM_OBSERVABILITY__PUSHGATEWAY_URL" in said(result)


def test_an_unreachable_pushgateway_fails_saying_where() -> None:
    result = record("http://127.0.0.1:9", "quality", "--outcome", "failed")
    assert result.returncode == 1
    assert "127.0.0.1:9" in said(result) and "Pushgateway" in said(result)


def test_a_pipeline_name_that_would_grow_label_values_is_refused() -> None:
    result = record("http://127.0.0.1:9", "Transform; DROP", "--outcome", "failed")
    assert result.returncode == 2
    assert "not a pipeline name" in said(result)
