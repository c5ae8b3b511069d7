"""OpenTelemetry spans, set up from settings when a process starts (``observability.*``).

``tracing: off`` (the default) installs nothing, and the instrumented code tests the one flag
:data:`enabled` before any span work, so a request pays a global read, not even the OTel API's
no-op call. ``console`` writes each finished span as one JSON line to stderr; ``otlp`` batches
them to an OTLP/HTTP receiver (``otlp_endpoint``, an OpenTelemetry Collector), sampled by
``trace_sample_ratio`` and parent-based (a sampled caller's trace is kept whole).

The spans (one per request or batch, never per event):

- ``collector.request`` (route, events, accepted, rejected; continues a W3C ``traceparent``
  sent by the client) — its rows wait on a group commit: ``sink.commit`` (rows, submissions),
  with a span link to every request span it serves (one commit serves many requests), and
  under it ``warehouse.append`` (table, rows).
- ``cdc.transaction`` (xid, commit LSN, changes), and per batch ``cdc.durable`` — the wait until
  the batch is durable, linked to its transactions, with the LSN it makes safe to confirm; its
  submission's ``sink.commit`` links to it in turn.
- ``loader.batch`` (messages, rows): from a batch's poll until it is durable.

Read the flag through the module (``tracing.enabled``): :func:`set_up` rebinds it.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import TYPE_CHECKING

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

    from shopstream.config import ObservabilitySettings

log = logging.getLogger(__name__)

#: True once :func:`set_up` installed a tracer provider (tracing console or otlp).
enabled = False
_provider: TracerProvider | None = None

#: The tracer every instrumented module uses (the API's proxy: it becomes the installed
#: provider's tracer once :func:`set_up` ran).
TRACER = trace.get_tracer("shopstream")


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + os.linesep


def set_up(settings: ObservabilitySettings, command: str) -> bool:
    """Install the tracer provider ``settings`` ask for (nothing when tracing is off); once
    per process. Returns whether tracing is on. The provider is flushed and shut down at
    exit (or by :func:`shut_down`)."""
    global enabled, _provider
    if settings.tracing == "off" or _provider is not None:
        return enabled
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.service_name or f"shopstream-{command}"}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
        # Flushed by shut_down (at exit, or the command's end): one place, which logs a
        # receiver gone at exit instead of failing.
        shutdown_on_exit=False,
    )
    if settings.tracing == "console":
        # Written as each span ends: console tracing is for reading along, not for load.
        provider.add_span_processor(
            SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr, formatter=_one_line))
        )
    else:
        from shopstream.observability.otlp import otlp_processor, traces_url

        provider.add_span_processor(otlp_processor(settings.otlp_endpoint))
    trace.set_tracer_provider(provider)
    _provider = provider
    enabled = True
    atexit.register(shut_down)
    where = "stderr" if settings.tracing == "console" else traces_url(settings.otlp_endpoint)
    log.info("tracing to %s", where)
    return True


def shut_down() -> None:
    """Export what is buffered and stop (at exit; safe to call twice)."""
    global enabled, _provider
    provider = _provider
    if provider is None:
        return
    enabled = False
    _provider = None
    try:
        provider.shutdown()
    except Exception as exc:  # a receiver gone at exit must not fail the command
        log.warning("could not flush the trace spans: %s", exc)


__all__ = ["TRACER", "enabled", "set_up", "shut_down"]
