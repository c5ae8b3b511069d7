"""Collector benchmark: the real collector process on loopback, measured in one run.

    .venv/bin/python bench/collector.py            # ~100 s
    .venv/bin/python bench/collector.py --quick    # ~40 s, rough figures

Starts ``python -m shopstream collector`` on a free port with a fresh data directory, drives
it with raw-asyncio client processes (see ``_load.py``), and prints, against the targets of
DESIGN.md "Performance targets":

1. events/s accepted *and durable* with batches of 100 native events per ``POST /v1/events``;
   afterwards ``raw.events`` is counted through the collector's query route and must equal
   what was acknowledged (and again from the DuckDB file after ``kill -9``);
2. single-event requests/s as a ratio to the same server's no-op route (``GET /healthz``),
   same client, same connections;
3. p99 latency at a fixed offered load of single-event requests, open loop (a request's
   latency runs from when it was *due*, so a late client counts against the result);
4. the collector's peak RSS.

Both sides share the machine's cores, so every phase also reports the CPU the server (its
HTTP-loop thread and its other threads), the client and anything else used, and says which
side, if any, saturated.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from rich.console import Console
from rich.table import Table

from _load import Kind, PhaseResult, PhaseSpec, run_phase

# The collector process is the tests' own (tests/support/collector.py).
sys.path.append(str(Path(__file__).resolve().parent.parent))
from tests.support.collector import CollectorProcess

# Tables stay readable when the output goes to a file or CI log (80 columns otherwise).
console = Console(width=None if sys.stdout.isatty() else 150)

BATCH_SIZE = 100
TARGET_EVENTS_PER_S = 100_000.0
TARGET_SINGLE_RATIO = 0.5
TARGET_P99_MS = 20.0
#: Distinct event shapes; every request stamps a fresh event_id onto one of them.
TEMPLATE_EVENTS = 10_000
#: A thread this busy (cores) is taken as saturated.
SATURATED = 0.85


# -- the collector process --------------------------------------------------------------------


class Collector(CollectorProcess):
    """The tests' collector process (``python -m shopstream collector``), plus psutil."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str]) -> None:
        super().__init__(data_dir, env=extra_env)
        self.ps: psutil.Process | None = None

    def start(self, timeout: float = 60.0) -> Collector:
        super().start(timeout)
        assert self.process is not None
        self.ps = psutil.Process(self.process.pid)
        return self


# -- measuring the server side ------------------------------------------------------------------


@dataclass
class CpuSnapshot:
    at: float
    server: float  # user + system seconds of the whole collector process
    loop: float  # ... of its main thread (uvicorn's event loop: HTTP, validation, rows)
    machine_busy: float  # seconds of all cores not idle
    bench: float  # this orchestrating process


def cpu_snapshot(process: psutil.Process) -> CpuSnapshot:
    times = process.cpu_times()
    loop = next(
        (t.user_time + t.system_time for t in process.threads() if t.id == process.pid), 0.0
    )
    machine = psutil.cpu_times()
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    mine = psutil.Process().cpu_times()
    return CpuSnapshot(
        at=time.monotonic(),
        server=times.user + times.system,
        loop=loop,
        machine_busy=sum(machine) - idle - getattr(machine, "guest", 0.0),
        bench=mine.user + mine.system,
    )


@dataclass
class SinkCounters:
    """The group-commit writer's own totals, from the collector's /metrics."""

    commits: float = 0.0
    rows: float = 0.0
    seconds: float = 0.0  # building Arrow + appending + committing


def sink_counters(collector: Collector) -> SinkCounters:
    wanted = {
        "shopstream_sink_batch_rows_count": "commits",
        "shopstream_sink_batch_rows_sum": "rows",
        "shopstream_sink_flush_seconds_sum": "seconds",
    }
    counters = SinkCounters()
    try:
        text = httpx.get(f"{collector.url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return counters
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            setattr(counters, wanted[name], float(value))
    return counters


class RssWatch:
    """Samples the collector's RSS every 50 ms for the whole run; keeps the peak. The RSS is
    the collector's and its children's (the DuckDB writer process) together."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = 0
        self.first = 0
        self.last = 0
        self.kernel_peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                rss = self.process.memory_info().rss
                for child in self.process.children(recursive=True):
                    rss += child.memory_info().rss
            except psutil.Error:
                return
            self.first = self.first or rss
            self.last = rss
            self.peak = max(self.peak, rss)

    def high_water_mark(self) -> int | None:
        """The kernel's own peak (VmHWM) of the collector process alone (children not
        included), which no sampling can miss."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None

    def stop(self) -> None:
        """Stop sampling; read the kernel's peak while the process still exists."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(1)
            self.kernel_peak = self.high_water_mark()


# -- phases -------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    title: str
    kind: Kind
    connections: int
    clients: int
    rate: float = 0.0  # open loop when > 0 (requests/s, all clients together)


@dataclass
class PhaseOutcome:
    phase: Phase
    result: PhaseResult
    cpu: dict[str, float] = field(default_factory=dict)  # cores used, averaged over the phase
    client_peak: float = 0.0  # the busiest client process, cores
    profile: dict[str, dict[str, float]] | None = None  # thread -> where its time went
    sink: dict[str, float] = field(default_factory=dict)  # group commits in the window

    @property
    def requests_per_s(self) -> float:
        return self.result.requests / self.result.window if self.result.window else 0.0

    @property
    def events_per_s(self) -> float:
        return self.result.events_accepted / self.result.window if self.result.window else 0.0

    def percentile_ms(self, q: float, values: list[float] | None = None) -> float:
        data = sorted(self.result.latencies if values is None else values)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q * len(data)))] * 1000

    def verdict(self) -> str:
        cpu = self.cpu
        notes = []
        if cpu["loop"] >= SATURATED:
            notes.append("server saturated: its event-loop thread is at one full core (GIL)")
        if self.sink.get("busy", 0.0) >= 0.9:
            notes.append(
                f"writer saturated: committing {self.sink['busy']:.0%} of the time "
                f"({self.sink['rows_per_commit']:,.0f} rows, "
                f"{self.sink['ms_per_commit']:.1f} ms per commit)"
            )
        if self.client_peak >= SATURATED:
            notes.append("CLIENT saturated: the figure is a lower bound")
        if cpu["idle"] < 0.15 * psutil.cpu_count():
            notes.append("machine saturated: no idle core left")
        if cpu["others"] >= 0.25:
            notes.append(f"other processes used {cpu['others']:.2f} cores: figures are low")
        if not notes:
            notes.append("nothing saturated: bound by waiting (commits, round trips)")
        return "; ".join(notes)


def run_phase_on(
    pool: cf.ProcessPoolExecutor,
    collector: Collector,
    phase: Phase,
    templates: tuple[bytes, ...],
    *,
    warmup: float,
    seconds: float,
    run_id: str,
    profile: Profiler | None = None,
) -> PhaseOutcome:
    assert collector.ps is not None
    per_client = max(1, phase.connections // phase.clients)
    start_at = time.time() + 0.3
    specs = [
        PhaseSpec(
            name=phase.name,
            kind=phase.kind,
            host="127.0.0.1",
            port=collector.port,
            connections=per_client,
            warmup=warmup,
            seconds=seconds,
            start_at=start_at,
            templates=templates if phase.kind != "noop" else (),
            batch_size=BATCH_SIZE if phase.kind == "batch" else 1,
            rate=phase.rate / phase.clients,
            id_prefix=f"{run_id}-{phase.name}-{k}",
        )
        for k in range(phase.clients)
    ]
    futures = [pool.submit(run_phase, spec) for spec in specs]
    # CPU is read over the measured window only (warm-up and drain excluded).
    time.sleep(max(0.0, start_at - time.time()) + warmup)
    sink_before = sink_counters(collector)
    before = cpu_snapshot(collector.ps)
    sampling = profile.start(collector.ps.pid, phase.name, seconds) if profile else None
    time.sleep(seconds)
    after = cpu_snapshot(collector.ps)
    sink_after = sink_counters(collector)
    results = [f.result(timeout=warmup + seconds + 120) for f in futures]
    breakdown = profile.finish(sampling) if profile and sampling else None
    merged = PhaseResult()
    for result in results:
        merged.merge(result)
    span = after.at - before.at
    clients = sum(r.cpu_seconds for r in results) / max(r.wall_seconds for r in results)
    server = (after.server - before.server) / span
    loop = (after.loop - before.loop) / span
    busy = (after.machine_busy - before.machine_busy) / span
    bench = (after.bench - before.bench) / span
    cpu = {
        "server": server,
        "loop": loop,
        "writer": max(0.0, server - loop),
        "client": clients,
        "others": max(0.0, busy - server - clients - bench),
        "idle": max(0.0, psutil.cpu_count() - busy),
    }
    peak = max(r.cpu_seconds / r.wall_seconds for r in results)
    commits = sink_after.commits - sink_before.commits
    sink = {
        "commits_per_s": commits / span,
        "rows_per_commit": (sink_after.rows - sink_before.rows) / commits if commits else 0.0,
        "ms_per_commit": (sink_after.seconds - sink_before.seconds) / commits * 1000
        if commits
        else 0.0,
        "busy": (sink_after.seconds - sink_before.seconds) / span,
    }
    return PhaseOutcome(phase, merged, cpu, peak, breakdown, sink)


def wrk_noop(collector: Collector, connections: int, seconds: float) -> float:
    """The no-op route under wrk (C, one thread): a yardstick for the Python client."""
    assert collector.ps is not None
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    output = subprocess.run(
        [*command, f"{collector.url}/healthz"], capture_output=True, text=True, check=True
    ).stdout
    for line in output.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(f"unexpected wrk output:\n{output}")


def settle(collector: Collector, *, least: float = 2.5, most: float = 30.0) -> float:
    """Wait until the server is idle again (its idle checkpoint runs after 2 s without
    traffic), so one phase's aftermath does not land in the next one's figures."""
    assert collector.ps is not None
    began = time.monotonic()
    previous = cpu_snapshot(collector.ps)
    while time.monotonic() - began < most:
        time.sleep(0.5)
        now = cpu_snapshot(collector.ps)
        busy = (now.server - previous.server) / (now.at - previous.at)
        previous = now
        if time.monotonic() - began >= least and busy < 0.05:
            break
    return time.monotonic() - began


# -- where the server's time goes (py-spy) ---------------------------------------------------

#: Innermost frame that matches decides a sample's bucket; ``$`` rules match the leaf only.
BUCKETS: tuple[tuple[str, str], ...] = (
    ("DuckDBWarehouse.append", "DuckDB append + commit"),
    ("DuckDBWarehouse.checkpoint", "DuckDB checkpoint"),
    ("_to_arrow", "Arrow batch building"),
    ("WarehouseSink._c", "writer bookkeeping (futures, metrics)"),
    ("WarehouseSink._gather", "writer: waiting for rows"),
    ("WarehouseSink._run", "writer: waiting for rows"),
    ("validate_python", "validation (Pydantic)"),
    ("EventBase._", "validation (Pydantic)"),
    ("ClockWindow.check", "validation (clock check)"),
    ("raw_event_row", "raw row building"),
    ("parse_json", "JSON parsing (orjson)"),
    ("prometheus_client/", "metrics (prometheus_client)"),
    ("IntakeHandlers.finish", "response building"),
    ("shopstream/collector/answers.py", "response building"),
    ("read_body", "HTTP + ASGI (uvicorn, Starlette, FastAPI)"),
    ("accept_one", "intake loop (take_native, accept_one)"),
    ("take_native", "intake loop (take_native, accept_one)"),
    ("WarehouseSink.submit", "collector route code"),
    ("IntakeHandlers.", "collector route code"),
    ("uvicorn/", "HTTP + ASGI (uvicorn, Starlette, FastAPI)"),
    ("starlette/", "HTTP + ASGI (uvicorn, Starlette, FastAPI)"),
    ("fastapi/", "HTTP + ASGI (uvicorn, Starlette, FastAPI)"),
    ("$Runner.run", "event loop: idle"),
    ("$run_forever", "event loop: idle"),
)


def bucket_of(frames: list[str]) -> str:
    for depth, frame in enumerate(reversed(frames)):
        for needle, bucket in BUCKETS:
            if needle.startswith("$"):
                if depth == 0 and needle[1:] in frame:
                    return bucket
            elif needle in frame:
                return bucket
    return "other"


class Profiler:
    """``py-spy record`` on the collector during each measured window.

    Default: wall-clock samples per thread, idle included, so each thread's row says how its
    time went (a thread waiting for the GIL is seen where it waits, in Python code). With
    ``gil=True`` only the thread holding the GIL is sampled, so the rows say what the GIL, the
    one-core ceiling of the process, was spent on. The collapsed stacks stay in ``directory``
    (speedscope.app opens them as flame graphs).
    """

    def __init__(self, directory: Path, *, gil: bool = False, rate: int = 100) -> None:
        self.directory = directory
        self.gil = gil
        self.rate = rate
        self.executable = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(self.executable).exists():
            raise SystemExit(
                "--profile needs py-spy: .venv/bin/pip install py-spy (it samples the server "
                "from outside, without changing it)"
            )
        directory.mkdir(parents=True, exist_ok=True)

    def start(self, pid: int, name: str, seconds: float) -> Sampling:
        output = self.directory / f"{name}{'-gil' if self.gil else ''}.folded"
        duration = max(1, round(seconds))
        command = [self.executable, "record", "--pid", str(pid), "--duration", str(duration)]
        command += ["--rate", str(self.rate), "--format", "raw", "--threads", "--nonblocking"]
        command += ["--gil"] if self.gil else ["--idle"]
        popen = subprocess.Popen(
            [*command, "--output", str(output)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return Sampling(popen, output, duration * self.rate)

    def finish(self, sampling: Sampling) -> dict[str, dict[str, float]]:
        """Thread -> bucket -> share: of the thread's samples (wall mode) or of the window
        (GIL mode: the shares of all threads add up to how busy the GIL was)."""
        sampling.popen.wait(60)
        if not sampling.output.exists():
            return {}
        counts: dict[str, dict[str, int]] = {}
        for line in sampling.output.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            frames = stack.split(";")
            if len(frames) < 2:
                continue  # a native thread with no Python frames (DuckDB's own workers)
            thread = frames[0].partition(":")[2].strip() or frames[0]
            per = counts.setdefault(thread, {})
            bucket = bucket_of(frames[1:])
            if self.gil and bucket == "event loop: idle":
                bucket = "event loop (uvloop's own C code)"  # holding the GIL is not idling
            per[bucket] = per.get(bucket, 0) + int(n)
        shares: dict[str, dict[str, float]] = {}
        for thread, per in counts.items():
            total = sampling.expected if self.gil else sum(per.values())
            ordered = sorted(per.items(), key=lambda kv: -kv[1])
            shares[thread] = {k: v / total for k, v in ordered}
        return shares


@dataclass
class Sampling:
    popen: subprocess.Popen[bytes]
    output: Path
    expected: int  # samples a thread busy for the whole window would get


def profile_table(outcomes: Sequence[PhaseOutcome], gil: bool) -> Table:
    title = (
        "What the GIL was held for (py-spy --gil, share of the measured window)"
        if gil
        else "Where the server's time goes (py-spy, share of each thread's wall time)"
    )
    table = Table(title=title)
    table.add_column("phase")
    table.add_column("thread")
    table.add_column("breakdown")
    for o in outcomes:
        for thread, shares in (o.profile or {}).items():
            text = ", ".join(f"{k} {v:.0%}" for k, v in shares.items() if v >= 0.01)
            if gil:
                text = f"holds the GIL {sum(shares.values()):.0%}: {text}"
            table.add_row(o.phase.title, thread, text)
    return table


# -- events ---------------------------------------------------------------------------------------


def event_templates(count: int) -> tuple[tuple[bytes, ...], str]:
    """Valid native events serialised without ``event_id`` (the client stamps a fresh one)."""
    from shopstream.events.behaviour import parse_event

    start = datetime.now(UTC) - timedelta(minutes=5)
    try:
        from shopstream.generators.clickstream import Clickstream

        stream = Clickstream(seed=11, run_id="bench", start=start, sessions=5_000)
        events = stream.take(count)
        for event in events[:: max(1, count // 500)]:
            parse_event(event)
        origin = "shopstream.generators.clickstream"
    except Exception as exc:  # the generator is optional here; the benchmark is not about it
        console.print(f"[yellow]clickstream generator unusable ({exc}); using minimal events")
        events = minimal_events(count, start)
        origin = "minimal built-in events"
    for event in events[:50]:
        parse_event(event)
    return tuple(orjson.dumps({k: v for k, v in e.items() if k != "event_id"}) for e in events), (
        origin
    )


def minimal_events(count: int, start: datetime) -> list[dict[str, Any]]:
    shapes: list[tuple[str, dict[str, Any]]] = [
        ("page_view", {"page_type": "home", "page_title": "shopstream"}),
        ("product_view", {"product_id": "p-1001", "name": "Wool socks", "price": 12900}),
        ("search", {"query": "socks", "results_count": 12}),
        ("add_to_cart", {"product_id": "p-1001", "quantity": 2, "price": 12900}),
        ("purchase", {"order_id": "o-1", "revenue": 25800, "currency": "KRW"}),
    ]
    events = []
    for i in range(count):
        event_type, properties = shapes[i % len(shapes)]
        events.append(
            {
                "event_id": f"min-{i}",
                "event_type": event_type,
                "event_ts": (start + timedelta(milliseconds=10 * i)).isoformat(),
                "anonymous_id": f"anon-{i % 997}",
                "session_id": f"sess-{i % 211}",
                "device_type": ("ios", "android", "web_mobile", "web_desktop")[i % 4],
                "page_url": "https://shopstream.example/",
                "properties": properties,
            }
        )
    return events


# -- durability ---------------------------------------------------------------------------------


@dataclass
class Durability:
    acknowledged: dict[str, int]
    stored: dict[str, int]
    distinct: int
    dead_letters: int
    after_kill: int | None = None
    after_kill_error: str | None = None

    @property
    def total_acknowledged(self) -> int:
        return sum(self.acknowledged.values())

    @property
    def total_stored(self) -> int:
        return sum(self.stored.values())

    @property
    def ok(self) -> bool:
        return (
            self.stored == self.acknowledged
            and self.distinct == self.total_stored
            and self.dead_letters == 0
            and (self.after_kill is None or self.after_kill == self.total_stored)
        )


def count_stored(collector: Collector, run_id: str, acknowledged: dict[str, int]) -> Durability:
    rows = collector.query(
        "SELECT split_part(event_id, '-', 2) AS phase, count(*) AS n, "
        "count(DISTINCT event_id) AS d FROM raw.events GROUP BY 1"
    )
    stored = {r["phase"]: int(r["n"]) for r in rows if r["phase"] in acknowledged}
    for phase in acknowledged:
        stored.setdefault(phase, 0)
    distinct = sum(int(r["d"]) for r in rows)
    extra = sum(int(r["n"]) for r in rows if r["phase"] not in acknowledged)
    if extra:
        stored["(unknown)"] = extra
    dead = collector.query("SELECT count(*) AS n FROM raw.dead_letter")[0]["n"]
    return Durability(dict(acknowledged), stored, distinct, int(dead))


def count_after_kill(path: Path) -> int:
    """Open the DuckDB file the killed collector left (its WAL replays) and count."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM raw.events").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


# -- output --------------------------------------------------------------------------------------


def ms(value: float) -> str:
    """Milliseconds; infinite when requests were shed (the server fell over a second behind)."""
    return "∞" if value == float("inf") else f"{value:.1f}"


def cores(value: float) -> str:
    return f"{value:.2f}"


def mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:,.0f} MiB"


def phase_table(outcomes: Sequence[PhaseOutcome]) -> Table:
    table = Table(title="Phases (measured window; warm-up and drain excluded)")
    for name in ("phase", "conns × clients", "req/s", "events/s", "p50 ms", "p99 ms", "answers"):
        table.add_column(name, justify="left" if name in ("phase", "answers") else "right")
    for o in outcomes:
        per_client = max(1, o.phase.connections // o.phase.clients)
        table.add_row(
            o.phase.title,
            f"{per_client} × {o.phase.clients}",
            f"{o.requests_per_s:,.0f}",
            f"{o.events_per_s:,.0f}" if o.phase.kind != "noop" else "—",
            ms(o.percentile_ms(0.5)),
            ms(o.percentile_ms(0.99)),
            answers(o),
        )
    return table


def cpu_table(outcomes: Sequence[PhaseOutcome]) -> Table:
    table = Table(
        title=f"CPU in cores (the machine has {psutil.cpu_count()}) and the group-commit writer"
    )
    columns = (
        "phase",
        "server",
        "└ loop thread",
        "└ other threads",
        "client",
        "others",
        "idle",
        "commits/s",
        "rows/commit",
        "ms/commit",
        "writer busy",
    )
    for name in columns:
        table.add_column(name, justify="left" if name == "phase" else "right")
    for o in outcomes:
        table.add_row(
            o.phase.title,
            cores(o.cpu["server"]),
            cores(o.cpu["loop"]),
            cores(o.cpu["writer"]),
            cores(o.cpu["client"]),
            cores(o.cpu["others"]),
            cores(o.cpu["idle"]),
            f"{o.sink.get('commits_per_s', 0):,.0f}",
            f"{o.sink.get('rows_per_commit', 0):,.0f}",
            f"{o.sink.get('ms_per_commit', 0):.1f}",
            f"{o.sink.get('busy', 0):.0%}",
        )
    return table


def answers(outcome: PhaseOutcome) -> str:
    result = outcome.result
    parts = [f"HTTP {k} ×{v:,}" for k, v in sorted(result.statuses.items())]
    parts += [f"{k} ×{v:,}" for k, v in sorted(result.errors.items())]
    if result.shed:
        parts.append(f"shed ×{result.shed:,} (server behind by over a second)")
    return ", ".join(parts)


def verdict_table(outcomes: Sequence[PhaseOutcome]) -> Table:
    table = Table(title="Who saturates")
    table.add_column("phase")
    table.add_column("verdict")
    for o in outcomes:
        table.add_row(o.phase.title, o.verdict())
    return table


def mark(ok: bool) -> str:
    return "[green]PASS" if ok else "[red]FAIL"


def final_table(
    batch: PhaseOutcome,
    noop: PhaseOutcome,
    single: PhaseOutcome,
    latency: PhaseOutcome,
    durability: Durability,
    rss: RssWatch,
    rate: float,
) -> Table:
    table = Table(title="shopstream collector — measured in this run")
    table.add_column("metric")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("", justify="center")

    eps = batch.events_per_s
    table.add_row(
        f"events/s accepted and durable (batches of {BATCH_SIZE})",
        f"{eps:,.0f}",
        f"≥ {TARGET_EVENTS_PER_S:,.0f}",
        f"{eps / TARGET_EVENTS_PER_S:.2f}× target",
        mark(eps >= TARGET_EVENTS_PER_S),
    )
    after_kill = (
        f"; {durability.after_kill:,} after kill -9"
        if durability.after_kill is not None
        else f"; after kill -9: {durability.after_kill_error}"
    )
    table.add_row(
        "raw.events rows = events acknowledged",
        f"{durability.total_stored:,} = {durability.total_acknowledged:,}{after_kill}",
        "equal",
        "",
        mark(durability.ok),
    )
    ratio = single.requests_per_s / noop.requests_per_s if noop.requests_per_s else 0.0
    table.add_row("single-event requests/s", f"{single.requests_per_s:,.0f}", "", "", "")
    table.add_row("no-op requests/s (GET /healthz)", f"{noop.requests_per_s:,.0f}", "", "", "")
    table.add_row(
        "single-event / no-op",
        f"{ratio:.2f}",
        f"≥ {TARGET_SINGLE_RATIO:.2f}",
        f"{ratio / TARGET_SINGLE_RATIO:.2f}× target",
        mark(ratio >= TARGET_SINGLE_RATIO),
    )
    p99 = latency.percentile_ms(0.99)
    achieved = latency.requests_per_s
    table.add_row(
        f"p99 latency at {rate:,.0f} req/s offered (achieved {achieved:,.0f}/s)",
        f"{ms(p99)} ms" + (" (requests shed)" if latency.result.shed else ""),
        f"≤ {TARGET_P99_MS:.0f} ms",
        f"{p99 / TARGET_P99_MS:.2f}× budget" if p99 != float("inf") else "—",
        mark(p99 <= TARGET_P99_MS and achieved >= 0.95 * rate and not latency.result.shed),
    )
    table.add_row(
        "peak RSS of the collector (sampled; kernel VmHWM)",
        f"{mib(rss.peak)}; {mib(rss.kernel_peak)}",
        "— (soak: flat)",
        f"{mib(rss.first)} at start",
        "",
    )
    return table


def latency_details(latency: PhaseOutcome) -> str:
    lag = latency.result.send_lag
    return (
        "open-loop latency (from the due time): "
        + ", ".join(
            f"p{label} {ms(latency.percentile_ms(q))} ms"
            for label, q in (("50", 0.5), ("90", 0.9), ("99", 0.99), ("99.9", 0.999))
        )
        + f", max {ms(max(latency.result.latencies, default=0) * 1000)} ms; client send lag "
        f"p99 {latency.percentile_ms(0.99, lag):.2f} ms (how late the client itself sent)"
    )


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the shopstream collector against its performance targets."
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per phase")
    parser.add_argument("--quick", action="store_true", help="4 s phases: a rough check")
    parser.add_argument(
        "--clients", type=int, default=2, help="client processes for the closed-loop phases"
    )
    parser.add_argument(
        "--batch-connections", type=int, default=64, help="connections posting batches"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="connections for the single-event and no-op phases (the same for both); every "
        "answer waits for a commit, so fewer connections mean smaller group commits",
    )
    parser.add_argument("--rate", type=float, default=2_000.0, help="open-loop requests/s")
    parser.add_argument(
        "--only",
        choices=("batch", "single", "latency"),
        action="append",
        help="run only these measurements (repeatable; default all)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the collector, e.g. SHOPSTREAM_SINK__LINGER_MS=5",
    )
    parser.add_argument(
        "--wrk",
        action="store_true",
        help="also load the no-op route with wrk, to check the Python client is not the limit "
        "(needs wrk: apt-get install wrk)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the machine to be quiet (under 15%% busy)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the server with py-spy in each measured window; stacks go to DIR "
        "(costs the server a few per cent)",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (what the one core "
        "of Python work is spent on)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 4.0, 1.0
    if args.profile_gil and not args.profile:
        parser.error("--profile-gil goes with --profile DIR")
    if args.wrk and shutil.which("wrk") is None:
        parser.error("--wrk needs wrk: apt-get install wrk (Debian/Ubuntu), brew install wrk")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    only = set(args.only or ("batch", "single", "latency"))
    run_id = os.urandom(3).hex()
    extra_env = dict(item.split("=", 1) for item in args.server_env)

    console.rule("[bold]shopstream collector benchmark")
    quiet = psutil.cpu_percent(interval=1.0)
    if args.wait_quiet and quiet >= 15:
        with console.status(f"machine {quiet:.0f}% busy; waiting for it to be quiet..."):
            deadline = time.monotonic() + args.wait_quiet
            while quiet >= 15 and time.monotonic() < deadline:
                quiet = psutil.cpu_percent(interval=2.0)
    console.print(
        f"{psutil.cpu_count()} cores; machine {quiet:.0f}% busy before the start"
        + (" [yellow](not quiet: other work will lower the figures)" if quiet > 10 else "")
    )
    with console.status("generating events..."):
        templates, origin = event_templates(TEMPLATE_EVENTS)
    mean = sum(map(len, templates)) / len(templates)
    console.print(f"{len(templates):,} event shapes from {origin}, {mean:,.0f} bytes on average")

    work = Path(tempfile.mkdtemp(prefix="shopstream-bench-"))
    collector = Collector(work / "data", extra_env)
    outcomes: dict[str, PhaseOutcome] = {}
    rss: RssWatch | None = None
    started = time.monotonic()
    spawn = multiprocessing.get_context("spawn")
    profiler = Profiler(args.profile, gil=args.profile_gil) if args.profile else None
    try:
        with console.status("starting the collector..."):
            collector.start()
        assert collector.ps is not None
        console.print(f"collector pid {collector.ps.pid} at {collector.url} (data in {work})")
        rss = RssWatch(collector.ps)
        rss.start()
        clients = max(1, args.clients)
        phases = []
        if "batch" in only:
            title = f"batches of {BATCH_SIZE}"
            phases.append(Phase("batch", title, "batch", args.batch_connections, clients))
        if "single" in only:
            phases.append(Phase("noop", "no-op GET /healthz", "noop", args.connections, clients))
            phases.append(Phase("single", "single event", "single", args.connections, clients))
        if "latency" in only:
            title = f"single event @ {args.rate:,.0f}/s"
            phases.append(Phase("latency", title, "single", 64, 1, args.rate))
        with cf.ProcessPoolExecutor(max_workers=clients, mp_context=spawn) as pool:
            # Start the client processes (imports) before anything is timed.
            list(pool.map(_ready, range(clients)))
            for phase in phases:
                with console.status(f"{phase.title}: {args.warmup:.0f} s + {args.seconds:.0f} s"):
                    outcome = run_phase_on(
                        pool,
                        collector,
                        phase,
                        templates,
                        warmup=args.warmup,
                        seconds=args.seconds,
                        run_id=run_id,
                        profile=profiler,
                    )
                outcomes[phase.name] = outcome
                console.print(
                    f"{phase.title}: {outcome.requests_per_s:,.0f} req/s"
                    + (f", {outcome.events_per_s:,.0f} events/s" if phase.kind != "noop" else "")
                    + f", p99 {ms(outcome.percentile_ms(0.99))} ms"
                )
                with console.status("waiting for the server to go idle (checkpoint)..."):
                    waited = settle(collector)
                console.print(f"  server idle again after {waited:.1f} s")
                if phase.name == "noop" and args.wrk:
                    with console.status("the same no-op load from wrk..."):
                        wrk_rate = wrk_noop(collector, phase.connections, args.seconds)
                    console.print(
                        f"  wrk on the no-op route, {phase.connections} connections: "
                        f"{wrk_rate:,.0f} req/s (Python client: {outcome.requests_per_s:,.0f}; "
                        "close figures mean the client is not the limit)"
                    )
                    settle(collector)

        acknowledged = {
            name: o.result.acknowledged_total for name, o in outcomes.items() if name != "noop"
        }
        with console.status("counting raw.events through the collector..."):
            durability = count_stored(collector, run_id, acknowledged)
        rss.stop()
        collector.kill()
        try:
            durability.after_kill = count_after_kill(collector.data_dir / "shopstream.duckdb")
        except Exception as exc:
            durability.after_kill_error = str(exc)[:80]
    except Exception:
        console.print(f"[red]the benchmark failed; collector log ({collector.log_path}):")
        console.print(collector.log(), markup=False, highlight=False)
        raise
    finally:
        if rss is not None:
            rss.stop()
        collector.kill()

    console.print(phase_table(list(outcomes.values())))
    console.print(cpu_table(list(outcomes.values())))
    console.print(verdict_table(list(outcomes.values())))
    if profiler is not None:
        console.print(profile_table(list(outcomes.values()), profiler.gil))
        console.print(f"collapsed stacks (open in speedscope.app): {profiler.directory}")
    if "latency" in outcomes:
        console.print(latency_details(outcomes["latency"]))
    for name, stored in durability.stored.items():
        acked = durability.acknowledged.get(name)
        console.print(
            f"raw.events from {name}: {stored:,} stored, "
            f"{'?' if acked is None else f'{acked:,}'} acknowledged"
        )
    console.print(
        f"distinct event_id: {durability.distinct:,}; raw.dead_letter rows: "
        f"{durability.dead_letters:,}"
    )
    if only == {"batch", "single", "latency"}:
        console.print(
            final_table(
                outcomes["batch"],
                outcomes["noop"],
                outcomes["single"],
                outcomes["latency"],
                durability,
                rss,
                args.rate,
            )
        )
    else:
        console.print(partial_table(outcomes, durability, rss, args.rate))
    if args.keep:
        console.print(f"data and collector log kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    console.print(f"total {time.monotonic() - started:,.0f} s")
    return 0


def partial_table(
    outcomes: dict[str, PhaseOutcome], durability: Durability, rss: RssWatch, rate: float
) -> Table:
    table = Table(title="shopstream collector — measured in this run (partial)", min_width=60)
    table.add_column("metric")
    table.add_column("measured", justify="right")
    rows: list[tuple[str, Callable[[PhaseOutcome], str]]] = [
        ("batch", lambda o: f"{o.events_per_s:,.0f} events/s"),
        ("noop", lambda o: f"{o.requests_per_s:,.0f} req/s"),
        ("single", lambda o: f"{o.requests_per_s:,.0f} req/s"),
        ("latency", lambda o: f"p99 {ms(o.percentile_ms(0.99))} ms at {rate:,.0f}/s"),
    ]
    for name, show in rows:
        if name in outcomes:
            table.add_row(outcomes[name].phase.title, show(outcomes[name]))
    table.add_row("stored = acknowledged", str(durability.ok))
    table.add_row("peak RSS", mib(rss.peak))
    return table


def _ready(_: int) -> int:
    return os.getpid()


if __name__ == "__main__":
    sys.exit(main())
