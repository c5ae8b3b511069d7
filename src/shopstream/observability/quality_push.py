"""The quality gauges of a one-shot ``shopstream quality run`` (the quality CronJob, the Airflow
``shopstream_quality`` DAG), pushed to the Pushgateway so that the DataQualityCheckFailing
alert and the quality dashboard see them after the process is gone. A running platform serves
the same gauges on its /metrics and pushes nothing.

What is pushed, and when (:func:`push_quality`):

- The group ``job="shopstream_quality"`` (no other grouping label), *replaced* (PUT) by each
  run that judged every configured check: the status (one-hot) and observed value of each
  check and the run's end time. A check no longer configured (disabled, removed) is gone from
  the group, and its alert clears. (POST would keep a metric the run no longer has at all:
  with every check turned off, the last failing status would fire for ever.)
- A ``--select`` run judged only some checks: it pushes nothing. Replacing the group with a
  part would clear the alerts of the checks it did not select; a group of its own would keep
  its statuses beside the full run's, stale, for ever (nothing deletes a group). The next full
  run brings the group up to date; the selected run's results are in
  ``monitoring.data_quality_checks`` like any other.
- A run that could not judge the checks (or store their results) pushes nothing either: the
  group keeps the last judged statuses, and the run's failure is pushed as the ``quality``
  pipeline's outcome (:mod:`shopstream.observability.pipeline_runs`) for the
  PipelineExecutionFailed alert.
- ``shopstream_quality_runs_total`` is not pushed: a fresh process's counter is 1 every time
  and ``increase()`` never sees it move; runs are counted from the pipeline outcome.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from shopstream.observability import metrics
from shopstream.observability.pushgateway import PushError, push_group

#: The Pushgateway job (the whole grouping key) of the pushed quality gauges.
PUSH_JOB = "shopstream_quality"
#: The outcomes a run that judged the checks counts (``failed``: it could not).
_JUDGED = ("ok", "alarm")


class _Gauges:
    """The quality gauges of this process's registry, as they are now."""

    def collect(self) -> Iterable[Metric]:
        for gauge in (
            metrics.QUALITY_CHECK_STATUS,
            metrics.QUALITY_CHECK_OBSERVED,
            metrics.QUALITY_LAST_RUN,
        ):
            yield from gauge.collect()


def judged_here(registry: CollectorRegistry = metrics.REGISTRY) -> bool:
    """This process ran a quality run that judged the checks (counted ``ok`` or ``alarm``):
    not the case when ``shopstream quality run`` handed the run to a running platform."""
    return any(
        (registry.get_sample_value("shopstream_quality_runs_total", {"outcome": outcome}) or 0) > 0
        for outcome in _JUDGED
    )


def push_quality(url: str, *, timeout: float = 10.0) -> None:
    """Replace the Pushgateway's ``shopstream_quality`` group with this process's quality
    gauges. Call it after a run here that judged every configured check (no ``--select``, no
    error): then the gauges hold exactly those checks. Raises :class:`PushError`."""
    registry = CollectorRegistry()
    registry.register(_Gauges())
    push_group(url, PUSH_JOB, registry, replace=True, timeout=timeout)


__all__ = ["PUSH_JOB", "PushError", "judged_here", "push_quality"]
