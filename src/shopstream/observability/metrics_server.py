"""The metrics listener of processes whose port is not the collector's intake port.

``shopstream cdc`` and ``shopstream load`` (``cdc.metrics_port``, ``loader.metrics_port``) and
the collector with ``collector.metrics_port`` serve ``/metrics`` here, and ``/healthz`` for
Kubernetes' liveness probe: 200 while the process's loop runs and its sink is not broken for
good, 503 with the reason otherwise. A small threaded WSGI server, as prometheus_client's
own ``start_http_server``, in daemon threads: it never holds the process up at exit.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app

from shopstream.observability.metrics import REGISTRY

#: Why the process is not alive (None: it is); called on every /healthz.
Health = Callable[[], "str | None"]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes and scrapes every few seconds: not worth a log line each


def metrics_app(health: Health | None) -> Callable[..., Iterable[bytes]]:
    """WSGI: /healthz from ``health`` (when given), everything else prometheus_client's."""
    prometheus = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if health is not None and environ.get("PATH_INFO") == "/healthz":
            try:
                reason = health()
            except Exception as exc:  # the check itself failing is an answer too
                reason = f"the health check failed: {exc}"
            if reason is None:
                status, body = "200 OK", b'{"status":"ok"}'
            else:
                status = "503 Service Unavailable"
                body = orjson.dumps({"status": "failed", "reason": reason})
            start_response(
                status,
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return prometheus(environ, start_response)

    return app


def serve_metrics(host: str, port: int, health: Health | None = None) -> WSGIServer:
    """Serve /metrics (and /healthz) on ``host:port`` from a daemon thread; returns the server
    (``server_port`` is the port bound, for port 0)."""
    server_class = _Server6 if ":" in host else _Server  # "::" listens on IPv6 (and v4)
    server = make_server(host, port, metrics_app(health), server_class, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


__all__ = ["Health", "metrics_app", "serve_metrics"]
