"""Hostile and careless clients cannot make the collector hold memory or connections.

A real collector process is attacked over loopback with raw sockets: clients that send most of
a large Segment body without any key and then stall, and clients that trickle a body. Bodies
whose write key can only be in the body must be read, so the intake memory budget and the
body read deadline are what bound them; legitimate clients (key in a header) keep getting 200.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from tests.support import metrics
from tests.support.clients import StalledClient
from tests.support.collector import CollectorProcess

KEY = "wk_hostile_" + uuid.uuid4().hex[:8]
BUDGET = 20_000_000  # collector.intake_memory_bytes: keyless bodies may hold half of it
DEADLINE = 2.0  # collector.request_read_timeout_seconds
BODY = 4_900_000  # as in the reproduction: most of a 5 MB body
MB = 1_000_000


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    process = CollectorProcess(
        tmp_path_factory.mktemp("hostile"),
        env={
            "SHOPSTREAM_WRITE_KEYS": KEY,
            "SHOPSTREAM_COLLECTOR__INTAKE_MEMORY_BYTES": str(BUDGET),
            "SHOPSTREAM_COLLECTOR__REQUEST_READ_TIMEOUT_SECONDS": str(DEADLINE),
        },
    )
    process.start()
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log(), process.log()


def page(n: int = 1) -> dict[str, object]:
    return {
        "batch": [
            {"type": "page", "anonymousId": "a", "name": "Home", "messageId": str(uuid.uuid4())}
            for _ in range(n)
        ]
    }


def legit_post(collector: CollectorProcess) -> httpx.Response:
    return httpx.post(f"{collector.url}/v1/batch", json=page(), auth=(KEY, ""), timeout=30)


def rss(collector: CollectorProcess) -> int:
    assert collector.process is not None
    return int(psutil.Process(collector.process.pid).memory_info().rss)


def refusals(collector: CollectorProcess) -> dict[str, float]:
    return {
        reason: metrics.value(
            collector.url, "shopstream_collector_requests_rejected_total", reason=reason
        )
        for reason in ("busy", "request_timeout")
    }


def test_stalled_keyless_bodies_keep_memory_bounded_and_legit_clients_served(
    guarded: CollectorProcess,
) -> None:
    for _ in range(3):  # warm up: imports, buffers and the first group commits
        assert legit_post(guarded).status_code == 200
    baseline = rss(guarded)
    refused_before = refusals(guarded)

    attackers = [
        StalledClient(guarded.port, send=BODY, length=BODY + 100, stall=DEADLINE * 3)
        for _ in range(80)
    ]
    for attacker in attackers:
        attacker.start()
    samples: list[int] = []
    legit: list[int] = []
    while any(a.is_alive() for a in attackers):
        samples.append(rss(guarded))
        legit.append(legit_post(guarded).status_code)
        time.sleep(0.1)
    for attacker in attackers:
        attacker.join()
    after = [rss(guarded) for _ in range(3)]

    # Without the bounds all 80 bodies (392 MB) were held at once. With them: keyless bodies
    # hold at most half the budget; the rest is the parsing and answers of legit requests.
    bound = baseline + BUDGET + 40 * MB
    assert max(samples) <= bound, (baseline, max(samples))
    assert max(after) <= bound, (baseline, after)
    assert set(legit) == {200}, legit
    assert legit_post(guarded).status_code == 200
    statuses = {a.status for a in attackers}
    assert statuses <= {503, 408, None}, statuses  # None: reset while it was still sending
    # Every attacker was refused: admitted ones timed out while stalling, the rest were busy.
    refused = {k: refusals(guarded)[k] - refused_before[k] for k in refused_before}
    assert refused["request_timeout"] >= 2, refused
    assert refused["busy"] >= 1, refused
    assert refused["request_timeout"] + refused["busy"] == len(attackers), refused


def test_a_slow_body_is_answered_408_and_the_connection_closed(guarded: CollectorProcess) -> None:
    slow = StalledClient(
        guarded.port,
        send=1_000,
        length=10_000,
        stall=DEADLINE * 5,
        headers={"X-Write-Key": KEY},
    )
    slow.start()
    slow.join()
    assert slow.status == 408, slow.response
    head, _, body = slow.response.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    answer = orjson.loads(body)
    assert answer["error"] == "request_timeout"
    assert "request_read_timeout_seconds" in answer["message"]


def test_a_full_budget_answers_503_with_retry_after_before_reading(
    guarded: CollectorProcess,
) -> None:
    # Two keyless bodies just under 5 MB fill the keyless half of the 20 MB budget.
    holders = [
        StalledClient(guarded.port, send=MB, length=4_999_000, stall=DEADLINE * 3) for _ in range(2)
    ]
    for holder in holders:
        holder.start()
    time.sleep(0.5)  # let both be admitted (they are answered 408 only after the deadline)
    response = httpx.post(
        f"{guarded.url}/v1/batch",
        content=orjson.dumps(page()) + b" " * 4_000_000,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["connection"] == "close"
    assert response.json()["error"] == "busy"
    assert "intake_memory_bytes" in response.json()["message"]
    # A client with its key in a header is not kept out by keyless ones.
    assert legit_post(guarded).status_code == 200
    for holder in holders:
        holder.join()
    assert [h.status for h in holders] == [408, 408]


def test_unauthenticated_native_bodies_are_refused_unread(guarded: CollectorProcess) -> None:
    client = StalledClient(
        guarded.port, send=MB, length=4_999_000, stall=DEADLINE * 3, path="/v1/events"
    )
    started = time.monotonic()
    client.start()
    client.join()
    assert client.status == 401, client.response
    assert b"connection: close" in client.response.lower()
    # Answered on its headers, not after the read deadline.
    assert time.monotonic() - started < DEADLINE


def test_settings_refuse_a_budget_smaller_than_two_bodies(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from shopstream.config import CollectorSettings

    with pytest.raises(ValidationError, match="intake_memory_bytes"):
        CollectorSettings(max_body_bytes=5_000_000, intake_memory_bytes=6_000_000)


def test_endless_headers_are_cut_off_and_hold_no_memory(guarded: CollectorProcess) -> None:
    baseline = rss(guarded)
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=DEADLINE * 3) as sock:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        chunk = b"a" * 65_536
        response = b""
        try:
            while sent < 100 * MB:  # unbounded before: RSS grew with every byte
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the collector closed the connection
        with contextlib.suppress(OSError):
            while data := sock.recv(65_536):
                response += data
    assert rss(guarded) <= baseline + 20 * MB, (baseline, rss(guarded), sent)
    assert sent < 100 * MB
    if response:  # the answer may be lost to the reset of a client still sending
        assert response.startswith(b"HTTP/1.1 431 "), response
        assert b"max_header_bytes" in response
    assert legit_post(guarded).status_code == 200


def test_slow_or_missing_headers_are_answered_408_and_closed(guarded: CollectorProcess) -> None:
    silent = socket.create_connection(("127.0.0.1", guarded.port), timeout=DEADLINE * 5)
    trickle = socket.create_connection(("127.0.0.1", guarded.port), timeout=DEADLINE * 5)
    trickle.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    for sock in (silent, trickle):
        with sock:
            response = b""
            while data := sock.recv(65_536):
                response += data
            assert response.startswith(b"HTTP/1.1 408 "), response
            assert b"request_read_timeout_seconds" in response


def test_a_client_leaving_mid_body_is_counted_not_a_traceback(guarded: CollectorProcess) -> None:
    def left() -> float:
        name = "shopstream_collector_requests_rejected_total"
        return metrics.value(guarded.url, name, reason="client_disconnected")

    before = left()
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-Write-Key: {KEY}\r\nContent-Length: 1000\r\n\r\n[{{".encode()
        )
        time.sleep(0.2)  # the handler is waiting for the rest of the body
    deadline = time.monotonic() + DEADLINE
    while left() == before:
        assert time.monotonic() < deadline, "the disconnect was not counted"
        time.sleep(0.05)
    assert left() == before + 1
    assert "Traceback" not in guarded.log()


def test_gzip_bodies_hold_what_they_may_inflate_to(guarded: CollectorProcess) -> None:
    """A gzip body of a few bytes on the wire may inflate to collector.max_body_bytes (5 MB by
    default) and is held that long: the budget counts that, not its wire size."""
    key = {"Authorization": f"Bearer {KEY}", "Content-Encoding": "gzip"}
    holders = [
        StalledClient(guarded.port, send=500, length=1_000, stall=DEADLINE * 3, headers=key)
        for _ in range(4)
    ]
    for holder in holders:
        holder.start()
    time.sleep(0.5)  # four 5 MB reservations fill the 20 MB budget
    response = httpx.post(
        f"{guarded.url}/v1/batch",
        content=gzip.compress(orjson.dumps(page())),
        headers={"content-type": "application/json", **key},
        timeout=30,
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "busy"
    for holder in holders:
        holder.join()
    assert [h.status for h in holders] == [408] * 4
    # Released again: gzip bodies are taken once the holders are gone.
    after = httpx.post(
        f"{guarded.url}/v1/batch",
        content=gzip.compress(orjson.dumps(page())),
        headers={"content-type": "application/json", **key},
        timeout=30,
    )
    assert after.status_code == 200, after.text
