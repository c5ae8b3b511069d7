"""The outcome of batch runs (transform, quality, docs), for the PipelineExecutionFailed alert.

A long-running platform serves these metrics on /metrics. A short-lived run (an Airflow task,
the quality CronJob) is gone before Prometheus scrapes it, so it pushes them to a Pushgateway
(``observability.pushgateway_url``): one group per pipeline, and *add* semantics, so that a
failure leaves the pipeline's last success in place and the alert can compare the two.

The alert compares timestamps rather than counting runs: a counter pushed by a fresh process is
1 every time, and ``increase()`` would never see it move.

>>> valid_pipeline("transform")
'transform'
>>> valid_pipeline("Transform!")
Traceback (most recent call last):
...
ValueError: 'Transform!' is not a pipeline name: use lower-case letters, digits and _ (at most 40)
"""

from __future__ import annotations

import re
import time
from typing import Literal

from prometheus_client import CollectorRegistry, Gauge

from shopstream.observability import metrics
from shopstream.observability.pushgateway import PushError, push_group

Outcome = Literal["success", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("success", "failed")
#: The Pushgateway job of every pushed pipeline outcome (its grouping key adds the pipeline).
PUSH_JOB = "shopstream_pipeline"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def valid_pipeline(name: str) -> str:
    """The pipeline name, checked: it becomes a label value, so it stays a small closed set."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a pipeline name: use lower-case letters, digits and _ (at most 40)"
        )
    return name


def record_run(
    pipeline: str,
    outcome: Outcome,
    *,
    pushgateway_url: str | None = None,
) -> None:
    """Count the run in this process's registry and, when a Pushgateway is given, push the
    pipeline's outcome there. Raises :class:`PushError` when the push fails (the run's own
    outcome stands; the caller says that the alert will not see it)."""
    valid_pipeline(pipeline)
    if outcome not in OUTCOMES:
        raise ValueError(f"{outcome!r} is not an outcome: use success or failed")
    ended = time.time()
    metrics.PIPELINE_RUNS.labels(pipeline=pipeline, outcome=outcome).inc()
    latest = (
        metrics.PIPELINE_LAST_SUCCESS if outcome == "success" else metrics.PIPELINE_LAST_FAILURE
    )
    latest.labels(pipeline=pipeline).set(ended)
    if pushgateway_url:
        _push(pipeline, outcome, ended, pushgateway_url)


def _push(pipeline: str, outcome: Outcome, ended: float, url: str) -> None:
    # Only the gauge of this outcome: POST replaces the metrics of that name in the group and
    # keeps the others, so the other outcome's timestamp survives.
    registry = CollectorRegistry()
    name, documentation = metrics.PIPELINE_LAST_HELP[outcome]
    Gauge(name, documentation, registry=registry).set(ended)
    push_group(url, PUSH_JOB, registry, replace=False, grouping_key={"pipeline": pipeline})


__all__ = ["OUTCOMES", "PUSH_JOB", "Outcome", "PushError", "record_run", "valid_pipeline"]
