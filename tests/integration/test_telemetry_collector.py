"""The collector's operations telemetry, from a real collector process over real HTTP: the
metrics the alerts read (responses by status class, the sink's queue limit, data freshness),
``collector.metrics_port`` moving /metrics off the intake port, and OpenTelemetry spans from a
request to the group commit it waits on to the warehouse append — on the console, and over
OTLP/HTTP to a real receiver."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import metrics
from tests.support.cdc import wait_for
from tests.support.collector import CollectorProcess, free_port
from tests.support.rows import tracked_event
from tests.support.traces import OtlpReceiver, console_spans

KEY = "telemetry-key"
AUTH = {"X-Write-Key": KEY}
#: A W3C traceparent a client sends: the request's span continues its trace.
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


def good_and_bad(url: str) -> None:
    good = httpx.post(f"{url}/v1/events", json=[tracked_event()] * 3, headers=AUTH, timeout=30)
    assert good.status_code == 200, good.text
    headers = {**AUTH, "Content-Type": "application/json"}
    bad = httpx.post(f"{url}/v1/events", content=b"{not json", headers=headers, timeout=30)
    assert bad.status_code == 400, bad.text


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectorProcess, str]]:
    """A collector with collector.metrics_port set, tracing to the console (its log)."""
    port = free_port()
    collector = CollectorProcess(
        tmp_path_factory.mktemp("split"),
        env={
            "SHOPSTREAM_WRITE_KEYS": KEY,
            "SHOPSTREAM_COLLECTOR__METRICS_PORT": str(port),
            "SHOPSTREAM_OBSERVABILITY__TRACING": "console",
        },
    ).start()
    try:
        yield collector, f"http://127.0.0.1:{port}"
    finally:
        collector.stop()


def test_metrics_say_what_was_answered_how_full_and_how_fresh(
    split: tuple[CollectorProcess, str],
) -> None:
    collector, metrics_url = split
    good_and_bad(collector.url)
    # Refused before the body is read: a wrong key, and headers over the limit (answered by
    # the connection itself, before any route).
    assert httpx.post(f"{collector.url}/v1/events", json=[], timeout=10).status_code == 401
    with socket.create_connection(("127.0.0.1", collector.port), timeout=10) as sock:
        # Headers that never end: past collector.max_header_bytes (64 KiB) the connection
        # answers 431 itself.
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000)
        assert sock.recv(64).startswith(b"HTTP/1.1 431")

    def responses(**labels: str) -> float:
        return metrics.total(metrics_url, "shopstream_collector_responses_total", **labels)

    assert responses(route="/v1/events", status="2xx") >= 1
    assert responses(route="/v1/events", status="4xx") >= 2
    assert responses(route="none", status="4xx") >= 1  # the 431
    assert metrics.value(metrics_url, "shopstream_sink_queue_limit_rows") > 0
    newest = metrics.value(
        metrics_url, "shopstream_raw_newest_record_timestamp_seconds", table="events"
    )
    assert abs(time.time() - newest) < 60, newest
    # The bad body's dead letter is durable too, so raw.dead_letter is fresh as well.
    assert metrics.value(
        metrics_url, "shopstream_raw_newest_record_timestamp_seconds", table="dead_letter"
    )


def test_metrics_port_moves_metrics_off_the_intake_port(
    split: tuple[CollectorProcess, str],
) -> None:
    collector, metrics_url = split
    assert httpx.get(f"{collector.url}/metrics", timeout=10).status_code == 404
    served = httpx.get(f"{metrics_url}/metrics", timeout=10)
    assert served.status_code == 200
    assert "shopstream_collector_responses_total" in served.text
    # The intake port keeps its probes; the 404 above was counted as an answer too.
    assert httpx.get(f"{collector.url}/healthz", timeout=10).status_code == 200
    assert metrics.total(metrics_url, "shopstream_collector_responses_total", status="4xx") >= 1


def test_console_spans_link_a_request_to_its_commit_and_the_append(
    split: tuple[CollectorProcess, str],
) -> None:
    collector, _ = split
    answer = httpx.post(
        f"{collector.url}/v1/events",
        json=[tracked_event(), tracked_event(), {"event_type": "nope"}],
        headers={**AUTH, "traceparent": TRACEPARENT},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    # Each span is written as it ends; the commit's ends just after the request was answered.
    wait_for(
        lambda: any(
            s["name"] == "sink.commit"
            and any(link["context"]["trace_id"] == f"0x{CLIENT_TRACE}" for link in s["links"])
            for s in console_spans(collector.log())
        ),
        "the commit's span",
        timeout=10,
    )
    spans = console_spans(collector.log())
    requests = [
        s
        for s in spans
        if s["name"] == "collector.request" and s["context"]["trace_id"] == f"0x{CLIENT_TRACE}"
    ]
    assert len(requests) == 1, spans
    request = requests[0]
    assert request["context"]["trace_id"] == f"0x{CLIENT_TRACE}"  # the client's trace goes on
    assert request["attributes"] == {
        "http.route": "/v1/events",
        "collector.events": 3,
        "collector.accepted": 2,
        "collector.rejected": 1,
        "http.response.status_code": 200,
    }
    assert request["resource"]["attributes"]["service.name"] == "shopstream-collector"
    # The commit the request waited on links to it (a commit serves many requests) ...
    commits = [
        s
        for s in spans
        if s["name"] == "sink.commit"
        and any(link["context"]["span_id"] == request["context"]["span_id"] for link in s["links"])
    ]
    assert len(commits) == 1, spans
    commit = commits[0]
    assert commit["links"][0]["context"]["trace_id"] == request["context"]["trace_id"]
    assert commit["attributes"]["sink.rows"] == 3  # two events and the rejection's dead letter
    # ... and the append is its child.
    appends = [s for s in spans if s["name"] == "warehouse.append"]
    children = [a for a in appends if a["parent_id"] == commit["context"]["span_id"]]
    assert len(children) == 1, appends
    append = children[0]
    assert append["context"]["trace_id"] == commit["context"]["trace_id"]
    assert set(append["attributes"]["warehouse.table"].split(",")) == {"events", "dead_letter"}
    assert append["attributes"]["warehouse.rows"] == 3


def test_otlp_spans_reach_a_receiver(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver:
        collector = CollectorProcess(
            tmp_path,
            env={
                "SHOPSTREAM_WRITE_KEYS": KEY,
                "SHOPSTREAM_OBSERVABILITY__TRACING": "otlp",
                "SHOPSTREAM_OBSERVABILITY__OTLP_ENDPOINT": receiver.url,
                "SHOPSTREAM_OBSERVABILITY__SERVICE_NAME": "collector-under-test",
            },
        ).start()
        try:
            good_and_bad(collector.url)
        finally:
            # The batch processor flushes at exit: the spans arrive by the time it is gone.
            assert collector.stop() == 0, collector.log()
        spans = receiver.wait_for({"collector.request", "sink.commit", "warehouse.append"})
    assert {s.service for s in spans} == {"collector-under-test"}
    requests = {s.span_id: s for s in spans if s.name == "collector.request"}
    assert len(requests) == 2
    linked = {span_id for s in spans if s.name == "sink.commit" for _, span_id in s.links}
    assert set(requests) <= linked  # the good body's rows and the bad body's dead letter
