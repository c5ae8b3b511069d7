"""Where tests read shopstream's spans: the lines tracing=console writes (:func:`console_spans`),
and a small, real OTLP/HTTP trace receiver for tests and benchmarks (:class:`OtlpReceiver`):
``POST /v1/traces`` with an ``ExportTraceServiceRequest`` (protobuf, gzip or not), decoded with
opentelemetry-proto, as an OpenTelemetry Collector would receive it.

    with OtlpReceiver() as receiver:
        ...  # SHOPSTREAM_OBSERVABILITY__OTLP_ENDPOINT=receiver.url
        receiver.wait_for({"collector.request"})
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def console_spans(log: str) -> list[dict[str, Any]]:
    """The spans tracing=console wrote (one JSON object a line) among a process's log."""
    return [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith("{") and '"context"' in line
    ]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    #: (trace id, span id) of each link, hex.
    links: tuple[tuple[str, str], ...]
    attributes: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one export request."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        service=str(resource.get("service.name", "")),
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        links=tuple((ln.trace_id.hex(), ln.span_id.hex()) for ln in span.links),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    )
                )
    return spans


class OtlpReceiver:
    """Listens on a free loopback port; :attr:`spans` grows as exports arrive. With
    ``keep=False`` it only counts them (a benchmark's receiver keeps no memory)."""

    def __init__(self, *, keep: bool = True) -> None:
        self.spans: list[ReceivedSpan] = []
        self.span_count = 0
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                spans = decode(body)
                with receiver._lock:
                    receiver.requests += 1
                    receiver.span_count += len(spans)
                    if keep:
                        receiver.spans.extend(spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def names(self) -> set[str]:
        with self._lock:
            return {span.name for span in self.spans}

    def wait_for(self, names: Iterable[str], timeout: float = 30.0) -> list[ReceivedSpan]:
        """Until spans of every one of ``names`` arrived; all spans received so far."""
        wanted = set(names)
        deadline = time.monotonic() + timeout
        while not wanted <= self.names():
            if time.monotonic() > deadline:
                raise AssertionError(f"spans {sorted(wanted - self.names())} did not arrive")
            time.sleep(0.05)
        with self._lock:
            return list(self.spans)
