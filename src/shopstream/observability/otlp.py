"""Spans to an OpenTelemetry Collector over OTLP/HTTP (``observability.tracing: otlp``).

The one module that needs the ``otlp`` extra (opentelemetry-exporter-otlp-proto-http).

>>> traces_url("http://collector:4318")
'http://collector:4318/v1/traces'
>>> traces_url("http://collector:4318/v1/traces")
'http://collector:4318/v1/traces'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor


def traces_url(endpoint: str) -> str:
    """The receiver's traces URL from ``otlp_endpoint`` (its base, or the URL itself)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def otlp_processor(endpoint: str) -> SpanProcessor:
    """Spans batched in the background and sent to ``endpoint`` (protobuf over HTTP)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:  # pragma: no cover - the extra is in the image and dev installs
        raise RuntimeError(
            "observability.tracing=otlp needs the otlp extra: pip install 'shopstream[otlp]'"
        ) from exc
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint)))
