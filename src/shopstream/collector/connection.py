"""HTTP connections that cannot hold the collector's memory or sockets before a request starts.

The intake bounds bodies (budget, read deadline), but everything before the body happens in
the HTTP server, which has no limit of its own there: uvicorn's httptools protocol gathers a
header value, the URL and the list of headers without bound (one connection sending an
endless header grew the process by its size), and a connection that sends no request, or
half its headers, is kept forever. This protocol adds both limits and answers with the
collector's JSON error shape before closing the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from shopstream.events.codes import ReasonCode
from shopstream.observability import metrics

#: The route label of answers given before a request had a route (headers too large or slow).
UNROUTED = "none"


def bounded_http(max_header_bytes: int, read_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, with a size limit and a deadline on request headers.

    ``max_header_bytes``: bytes received while a request's headers are incomplete (request
    line, URL and headers); beyond it, 431. ``read_timeout``: a new connection, or a
    request that has begun, must complete its headers within this long; otherwise 408.
    """

    class BoundedHttp(HttpToolsProtocol):
        _header_bytes = 0
        _reading_headers = False
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._expect_headers()  # a new connection owes a request

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_clock()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # Counted after parsing: when the headers completed inside this chunk, the rest
            # of it is body, which the intake bounds.
            if self._reading_headers and not self.transport.is_closing():
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes:
                    self._refuse(
                        431,
                        ReasonCode.HEADERS_TOO_LARGE,
                        f"request line and headers are over {max_header_bytes} bytes "
                        "(collector.max_header_bytes)",
                    )

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._reading_headers:  # the next request on a kept-alive connection
                self._expect_headers()

        def on_headers_complete(self) -> None:
            self._reading_headers = False
            self._stop_clock()
            super().on_headers_complete()

        def _expect_headers(self) -> None:
            self._reading_headers = True
            self._header_bytes = 0
            self._stop_clock()
            self._deadline = self.loop.call_later(read_timeout, self._too_slow)

        def _stop_clock(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self._reading_headers and not self.transport.is_closing():
                self._refuse(
                    408,
                    ReasonCode.REQUEST_TIMEOUT,
                    f"no complete request headers within {read_timeout:g} s "
                    "(collector.request_read_timeout_seconds)",
                )

        def _refuse(self, status: int, code: ReasonCode, message: str) -> None:
            metrics.REQUESTS_REJECTED.labels(code).inc()
            # No route yet: the request line or its headers never arrived whole.
            metrics.COLLECTOR_RESPONSES.labels(UNROUTED, f"{status // 100}xx").inc()
            self._reading_headers = False
            self._stop_clock()
            answer: dict[str, Any] = {
                "accepted": 0,
                "rejected": [],
                "success": False,
                "error": code,
                "message": message,
                "code": code,
            }
            body = orjson.dumps(answer)
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        b"content-type: application/json\r\n",
                        b"content-length: %d\r\n" % len(body),
                        b"connection: close\r\n\r\n",
                        body,
                    ]
                )
            )
            self.transport.close()

    return BoundedHttp
