"""Load generation for the collector benchmark: raw HTTP/1.1 over asyncio, keep-alive.

The client has to stay cheap because it shares two cores with the server: no HTTP library,
one :class:`asyncio.Protocol` per connection, request heads built once, bodies stitched from
pre-serialised events (only the ``event_id`` is stamped per event, so every event stored is
distinct), and a response parser that reads the status line and ``Content-Length`` only.

A worker runs one phase in its own process (:func:`run_phase`) and returns plain numbers, so
the orchestrator can run several workers side by side and add their results up.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Literal, cast

import orjson

Kind = Literal["batch", "single", "noop"]

_DRAIN_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """What one worker process does in one phase."""

    name: str
    kind: Kind
    host: str
    port: int
    connections: int
    warmup: float  # seconds run before counting starts (same load, not counted)
    seconds: float  # the measured window
    start_at: float  # wall clock (time.time()) at which every worker begins, together
    templates: tuple[bytes, ...] = ()  # events serialised without event_id: b'{"event_type":..}'
    batch_size: int = 1
    rate: float = 0.0  # requests/s for an open-loop phase; 0 means closed loop
    id_prefix: str = "bench"


@dataclass(slots=True)
class PhaseResult:
    """What one worker saw; :meth:`merge` adds the results of several workers."""

    requests: int = 0  # responses completed inside the measured window
    events_accepted: int = 0  # events acknowledged (200) inside the measured window
    acknowledged_total: int = 0  # events acknowledged over the whole phase, warm-up included
    sent_total: int = 0  # events sent over the whole phase
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, measured window only
    send_lag: list[float] = field(default_factory=list)  # open loop: seconds late to a due time
    shed: int = 0  # open loop: requests not sent because a second's worth was already queued
    window: float = 0.0  # seconds the measured window really lasted
    cpu_seconds: float = 0.0  # this client process, user + system, over the phase
    wall_seconds: float = 0.0  # the phase, warm-up and drain included

    def merge(self, other: PhaseResult) -> None:
        self.requests += other.requests
        self.events_accepted += other.events_accepted
        self.acknowledged_total += other.acknowledged_total
        self.sent_total += other.sent_total
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        for error, n in other.errors.items():
            self.errors[error] = self.errors.get(error, 0) + n
        self.latencies.extend(other.latencies)
        self.send_lag.extend(other.send_lag)
        self.shed += other.shed
        self.window = max(self.window, other.window)
        self.cpu_seconds += other.cpu_seconds
        self.wall_seconds = max(self.wall_seconds, other.wall_seconds)


class ConnectionLost(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.head_end = -1
        self.length = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.head_end < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._fail(ConnectionLost("response without Content-Length"))
                return
            stop = head.find(b"\r\n", at + 2)
            self.length = int(head[at + 17 : stop if stop > 0 else len(head)])
            self.head_end = end + 4
        total = self.head_end + self.length
        if len(buffer) < total:
            return
        status = int(buffer[9:12])
        body = bytes(buffer[self.head_end : total])
        del buffer[:total]
        self.head_end = -1
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionLost(str(exc) if exc else "closed by the server"))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def request(self, raw: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        assert self.waiter is None
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.waiter = waiter
        self.transport.write(raw)
        return waiter


class _Requests:
    """Builds request bytes: constant for the no-op route, stamped events for the others."""

    def __init__(self, spec: PhaseSpec) -> None:
        self.spec = spec
        host = f"{spec.host}:{spec.port}".encode()
        self.noop = b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
        self.head = (
            b"POST /v1/events HTTP/1.1\r\nHost: "
            + host
            + b"\r\nUser-Agent: shopstream-bench\r\nContent-Type: application/json\r\n"
            + b"Content-Length: "
        )
        # b'{"event_type":...}' -> b'{"event_id":"<id>",' + b'"event_type":...}'
        self.tails = [t[1:] for t in spec.templates]
        self.prefix = f'{{"event_id":"{spec.id_prefix}-'.encode()
        self.seq = 0

    def next(self) -> tuple[bytes, int]:
        """The next request and how many events it carries."""
        spec = self.spec
        if spec.kind == "noop":
            return self.noop, 0
        tails = self.tails
        n = len(tails)
        seq = self.seq
        prefix = self.prefix
        end = seq + spec.batch_size
        parts = [prefix + b"%d" % s + b'",' + tails[s % n] for s in range(seq, end)]
        self.seq = end
        body = parts[0] if spec.kind == "single" else b"[" + b",".join(parts) + b"]"
        return self.head + b"%d\r\n\r\n" % len(body) + body, spec.batch_size


class _Tally:
    def __init__(self, spec: PhaseSpec) -> None:
        self.spec = spec
        self.result = PhaseResult()
        self.window_start = 0.0
        self.window_end = 0.0

    def record(
        self, status: int, body: bytes, events: int, latency: float, at: float, done: float
    ) -> None:
        """One answer. Its latency counts if ``at`` (its send or due time) is in the window;
        its completion counts toward throughput if ``done`` is."""
        result = self.result
        result.statuses[status] = result.statuses.get(status, 0) + 1
        accepted = 0
        if status == 200 and events:
            accepted = int(orjson.loads(body).get("accepted", 0))
            result.acknowledged_total += accepted
        if self.window_start <= at < self.window_end:
            result.latencies.append(latency)
        if self.window_start <= done < self.window_end:
            result.requests += 1
            result.events_accepted += accepted

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.result.errors[name] = self.result.errors.get(name, 0) + 1


async def _connect(spec: PhaseSpec) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Connection, spec.host, spec.port)
    return protocol


async def _closed_loop(spec: PhaseSpec, tally: _Tally, requests: _Requests) -> None:
    """Each connection sends its next request as soon as the previous answer is in."""
    clock = time.perf_counter

    async def one_connection() -> None:
        connection = await _connect(spec)
        while clock() < tally.window_end:
            raw, events = requests.next()
            tally.result.sent_total += events
            sent = clock()
            try:
                status, body = await connection.request(raw)
            except ConnectionLost as exc:
                tally.error(exc)
                connection = await _connect(spec)
                continue
            done = clock()
            tally.record(status, body, events, done - sent, sent, done)
        if connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(one_connection() for _ in range(spec.connections)))


async def _open_loop(spec: PhaseSpec, tally: _Tally, requests: _Requests) -> None:
    """Requests fall due on a fixed schedule whatever the answers do (no coordinated omission).

    Latency runs from the *due* time, so a late client or a wait for a free connection counts
    against the result, never in its favour. When more than a second's worth of requests is
    waiting for a connection the server cannot keep up: further requests are shed and count
    as infinitely slow, so the run still ends on time.
    """
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    free: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(spec.connections):
        free.put_nowait(await _connect(spec))
    pending: set[asyncio.Task[None]] = set()
    result = tally.result
    backlog_limit = max(spec.connections, int(spec.rate))
    queued = 0

    async def send(due: float) -> None:
        nonlocal queued
        queued += 1
        try:
            connection = await free.get()
        finally:
            queued -= 1
        raw, events = requests.next()
        result.sent_total += events
        try:
            status, body = await connection.request(raw)
        except ConnectionLost as exc:
            tally.error(exc)
            free.put_nowait(await _connect(spec))
            return
        done = clock()
        free.put_nowait(connection)
        tally.record(status, body, events, done - due, due, done)

    interval = 1.0 / spec.rate
    start = tally.window_start - spec.warmup
    index = 0
    while True:
        now = clock()
        due = start + index * interval
        if due >= tally.window_end:
            break
        if due > now:
            # Timers tick in milliseconds: sleeping less would spin and steal the server's CPU.
            # Whatever falls due meanwhile goes out on waking, its lateness counted against us.
            await asyncio.sleep(max(due - now, 0.001))
            continue
        index += 1
        in_window = tally.window_start <= due < tally.window_end
        if in_window:
            result.send_lag.append(now - due)  # how late the client itself got to it
        if queued >= backlog_limit:
            result.shed += 1
            if in_window:
                result.latencies.append(math.inf)
            continue
        task = loop.create_task(send(due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    while not free.empty():
        connection = free.get_nowait()
        if connection.transport is not None:
            connection.transport.close()


async def _run(spec: PhaseSpec) -> PhaseResult:
    tally = _Tally(spec)
    requests = _Requests(spec)
    delay = spec.start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    cpu = time.process_time()
    began = time.perf_counter()
    tally.window_start = began + spec.warmup
    tally.window_end = tally.window_start + spec.seconds
    # A stuck server must not hang the benchmark: answers still missing this long after the
    # window closed fail the phase.
    async with asyncio.timeout(spec.warmup + spec.seconds + _DRAIN_TIMEOUT):
        if spec.rate > 0:
            await _open_loop(spec, tally, requests)
        else:
            await _closed_loop(spec, tally, requests)
    finished = time.perf_counter()
    result = tally.result
    result.window = min(finished, tally.window_end) - tally.window_start
    result.cpu_seconds = time.process_time() - cpu
    result.wall_seconds = finished - began
    return result


def run_phase(spec: PhaseSpec) -> PhaseResult:
    """Run one phase in this process (the entry point of a client worker process)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_run(spec))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run(spec))
