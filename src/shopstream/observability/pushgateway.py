"""Pushing a short-lived process's metrics to a Prometheus Pushgateway
(``observability.pushgateway_url``): the one place that talks to it, for the batch runs'
outcomes (:mod:`shopstream.observability.pipeline_runs`) and the quality gauges
(:mod:`shopstream.observability.quality_push`).

Prometheus scrapes the Pushgateway with ``honor_labels``: a pushed series carries the group's
``job`` and ``instance=""``, not the Pushgateway's own.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import push_to_gateway, pushadd_to_gateway


class PushError(RuntimeError):
    """The Pushgateway could not be reached or refused the push."""


def push_group(
    url: str,
    job: str,
    registry: CollectorRegistry,
    *,
    replace: bool,
    grouping_key: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> None:
    """Push ``registry`` to the group ``job`` (+ ``grouping_key``) at ``url``.

    ``replace``: PUT, the group becomes exactly ``registry`` (a series not pushed again is
    gone); else POST, only the metric names ``registry`` has are replaced, the group's other
    metrics stay. Raises :class:`PushError` when the push fails."""
    push = push_to_gateway if replace else pushadd_to_gateway
    try:
        push(
            url, job=job, grouping_key=dict(grouping_key or {}), registry=registry, timeout=timeout
        )
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise PushError(f"could not push to the Pushgateway at {url}: {exc}") from exc


__all__ = ["PushError", "push_group"]
