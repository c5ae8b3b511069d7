"""Transform benchmark: full rebuild vs incremental run, and ingest latency during a transform.

    .venv/bin/python bench/transform.py            # 10M events, 1M orders (the target's scale)
    .venv/bin/python bench/transform.py --quick    # 200k events, 20k orders: a smoke run

1. Generates ``--events`` events and ``--orders`` orders straight into the raw tables of a fresh
   DuckDB file (SQL in DuckDB, see ``_rawgen.py``: rows as the collector and the CDC reader
   write them, plus ``raw.source_schemas``), and keeps ~1% more (new orders and their changes,
   status changes of older orders, new events, late events inside the lookback, re-sent
   duplicates) aside.
2. Full build (``--full-refresh``): seconds and raw rows/s.
3. Appends the 1% and runs the incremental build: seconds, and incremental / full
   (target ≤ 0.1, DESIGN.md "Performance targets").
4. Starts the collector (the platform, DuckDB in its writer process) on that file and measures
   the p99 latency of single-event requests at a fixed offered rate (open loop, ``_load.py``)
   over a window without a transform and over a window while the platform runs one (asked
   through ``shopstream transform``, as a user would).

A target not reached is reported as measured. The machine's load is printed at the start and
after each step: other work on the machine lowers every figure.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson
import psutil
from rich.console import Console
from rich.table import Table

import _rawgen
from _load import PhaseResult, PhaseSpec, run_phase
from _machine import machine_load

sys.path.append(str(Path(__file__).resolve().parent.parent))
from tests.support.collector import CollectorProcess

console = Console(width=None if sys.stdout.isatty() else 150)

TARGET_INCREMENTAL_RATIO = 0.1
TARGET_P99_MS = 20.0
PROJECT = Path(__file__).resolve().parent.parent / "src/shopstream/transform/project"


# -- the transform ---------------------------------------------------------------------------


@dataclass
class Build:
    seconds: float  # wall clock of the whole transform, as a user waits for it
    ok: bool
    models: int = 0
    tests: int = 0
    model_seconds: float = 0.0  # dbt's own execution time of the models, summed
    failures: list[str] = field(default_factory=list)
    slowest: list[tuple[str, float]] = field(default_factory=list)
    how: str = ""


def build(data_dir: Path, *, full_refresh: bool, project: Path = PROJECT) -> Build:
    """One transform of the warehouse in ``data_dir`` with nothing else running, timed.

    ``shopstream transform`` once it exists (the runner: it opens the file itself, writes the
    working copy into ``<data_dir>/transform/project`` and the models of every captured table);
    until then dbt's own runner on a working copy of ``project`` plus stand-in models.
    """
    if transform_command_exists():
        began = time.perf_counter()
        answer = run_transform_command(data_dir, full_refresh=full_refresh)
        outcome = Build(time.perf_counter() - began, answer.returncode == 0)
        outcome.how = "`shopstream transform` (the runner), a process per run"
        if answer.returncode != 0:
            outcome.failures.append((answer.stderr or answer.stdout).strip()[-500:])
        # The runner's working copy (transform/workspace.py): <data_dir>/transform/project/.
        for project_copy in (data_dir / "transform" / "project", data_dir / "transform"):
            if (project_copy / "target" / "run_results.json").exists():
                read_run_results(project_copy / "target" / "run_results.json", outcome)
                break
        return outcome
    # In a process of its own that ends with the build: DuckDB (and dbt-duckdb's cached
    # connection) must let go of the file before the collector opens it.
    spawn = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(_dbt_build, data_dir, full_refresh, project).result()


def run_transform_command(
    data_dir: Path, *, full_refresh: bool
) -> subprocess.CompletedProcess[str]:
    """``shopstream transform`` on ``data_dir``: it asks the platform when one is running there
    (it owns the DuckDB file), else opens the file itself."""
    command = [sys.executable, "-m", "shopstream", "transform"]
    if full_refresh:
        command.append("--full-refresh")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    env["SHOPSTREAM_DATA_DIR"] = str(data_dir)
    return subprocess.run(command, env=env, cwd=data_dir, capture_output=True, text=True)


def transform_command_exists() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "shopstream", "transform", "--help"], capture_output=True
    )
    return probe.returncode == 0


def read_run_results(path: Path, outcome: Build) -> None:
    """Models, tests, failures and per-model times from dbt's run_results.json."""
    try:
        results = orjson.loads(path.read_bytes())["results"]
    except (OSError, ValueError, KeyError):
        return
    for r in results:
        unique_id: str = r.get("unique_id", "")
        name = unique_id.rsplit(".", 1)[-1]
        seconds = float(r.get("execution_time") or 0.0)
        if unique_id.startswith("model."):
            outcome.models += 1
            outcome.model_seconds += seconds
            outcome.slowest.append((name, seconds))
        elif unique_id.startswith("test."):
            outcome.tests += 1
        if r.get("status") not in ("success", "pass"):
            outcome.failures.append(f"{name}: {r.get('status')} {(r.get('message') or '')[:160]}")
    outcome.slowest.sort(key=lambda x: -x[1])


# Stand-in models for what the package's project does not have yet (its staging and marts are
# being written): the shapes of the decided contract, small but doing the same kind of work
# (dedupe events incrementally with a lookback, current state of CDC tables, a daily mart).
STANDIN_MODELS: dict[str, str] = {
    "staging/stg_events.sql": """
{{ config(materialized='incremental', unique_key='event_id',
          incremental_strategy='delete+insert') }}
with fresh as (
    select * from {{ source('raw', 'events') }}
    {% if is_incremental() %}
    where received_at > (select max(received_at) from {{ this }})
          - interval '{{ var("lookback_days") }} days'
    {% endif %}
)
select event_id, event_type, event_ts, received_at, event_date, user_id, anonymous_id,
       session_id, device_type, page_url, user_agent like '%bot%' as is_bot,
       json_extract_string(properties, '$.product_id') as product_id,
       try_cast(json_extract_string(properties, '$.price') as decimal(18, 2)) as price,
       try_cast(json_extract_string(properties, '$.quantity') as bigint) as quantity,
       json_extract_string(properties, '$.order_id') as order_id,
       try_cast(json_extract_string(properties, '$.revenue') as decimal(18, 2)) as revenue
from fresh
{% if is_incremental() %}
where event_id not in (select event_id from {{ this }}
                       where received_at < (select min(received_at) from fresh))
{% endif %}
qualify row_number() over (partition by event_id order by received_at) = 1
""",
    "staging/stg_orders.sql": """
select after->>'order_id' as order_id, after->>'user_id' as user_id, after->>'status' as status,
       after->>'delivery_type' as delivery_type,
       cast(after->>'total_amount' as decimal(14, 2)) as total_amount,
       cast(after->>'created_at' as timestamptz) as created_at,
       cast(after->>'updated_at' as timestamptz) as updated_at,
       change_id as _cdc_change_id, commit_ts as _cdc_changed_at
from {{ source('cdc', 'cdc_orders') }}
qualify row_number() over (partition by key->>'order_id' order by change_id desc) = 1
    and op <> 'd'
""",
    "staging/stg_order_items.sql": """
select after->>'order_id' as order_id, cast(after->>'line_no' as bigint) as line_no,
       after->>'product_id' as product_id, cast(after->>'quantity' as bigint) as quantity,
       cast(after->>'unit_price' as decimal(12, 2)) as unit_price
from {{ source('cdc', 'cdc_order_items') }}
qualify row_number() over (partition by key::varchar order by change_id desc) = 1
    and op <> 'd'
""",
    "staging/stg_products.sql": """
select after->>'product_id' as product_id, after->>'category' as category,
       cast(after->>'price' as decimal(12, 2)) as price
from {{ source('cdc', 'cdc_products') }}
qualify row_number() over (partition by key::varchar order by change_id desc) = 1
    and op <> 'd'
""",
    "marts/daily_sales.sql": """
select cast(o.created_at as date) as order_date, p.category, o.delivery_type,
       count(distinct o.order_id) as orders, count(distinct o.user_id) as customers,
       sum(i.quantity) as items, sum(i.quantity * i.unit_price) as gross_revenue
from {{ ref('stg_orders') }} o
join {{ ref('stg_order_items') }} i using (order_id)
join {{ ref('stg_products') }} p using (product_id)
group by all
""",
    "marts/daily_events.sql": """
{{ config(materialized='incremental', unique_key=['event_date', 'event_type'],
          incremental_strategy='delete+insert') }}
select event_date, event_type, count(*) as events, count(distinct session_id) as sessions
from {{ ref('stg_events') }}
{% if is_incremental() %}
where event_date >= (select max(event_date) from {{ this }}) - {{ var("lookback_days") }}
{% endif %}
group by all
""",
    "standin_sources.yml": """
version: 2
sources:
  - name: cdc
    schema: raw
    tables:
      - name: cdc_orders
      - name: cdc_order_items
      - name: cdc_products
""",
}


def _workspace(data_dir: Path, project: Path) -> tuple[Path, str]:
    """A working copy of ``project`` with a profile for the file; stand-in models fill in for
    what the project does not have yet."""
    work = data_dir / "bench-transform"
    if not work.exists():
        shutil.copytree(project, work, ignore=shutil.ignore_patterns("target", "logs"))
        existing = {p.stem for p in (work / "models").rglob("*.sql")}
        # Stand-ins come in two groups: the events' (when the project has no stg_events) and
        # the shop's (when it has no daily_sales, whose CDC staging is generated per table).
        wanted = set()
        if "stg_events" not in existing:
            wanted |= {"stg_events", "daily_events"}
        if "daily_sales" not in existing:
            wanted |= {"stg_orders", "stg_order_items", "stg_products", "daily_sales"}
            wanted |= {"standin_sources"}
        added = []
        for name, sql in STANDIN_MODELS.items():
            path = work / "models" / name
            if path.stem not in wanted:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(sql.lstrip())
            if path.suffix == ".sql":
                added.append(path.stem)
        (work / "profiles.yml").write_text(
            "shopstream:\n  target: duckdb\n  outputs:\n    duckdb:\n      type: duckdb\n"
            f"      path: '{data_dir / 'shopstream.duckdb'}'\n      threads: 2\n"
            "      settings:\n        TimeZone: UTC\n"
        )
        (work / ".standin").write_text("\n".join(added))
    added = (work / ".standin").read_text().split()
    how = f"dbtRunner on a working copy of {project}"
    if added:
        how += f" + stand-in models ({', '.join(sorted(added))})"
    return work, how


def _dbt_build(data_dir: Path, full_refresh: bool, project: Path) -> Build:
    os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    from dbt.cli.main import dbtRunner

    work, how = _workspace(data_dir, project)
    args = ["build", "--project-dir", str(work), "--profiles-dir", str(work), "--quiet"]
    args += ["--vars", "{lookback_days: 3, timezone: UTC}"]
    if full_refresh:
        args.append("--full-refresh")
    began = time.perf_counter()
    result = dbtRunner().invoke(args)
    outcome = Build(time.perf_counter() - began, bool(result.success), how=how)
    if result.exception is not None:
        outcome.failures.append(f"dbt: {result.exception}")
    read_run_results(work / "target" / "run_results.json", outcome)
    return outcome


# -- ingest latency with and without a transform ---------------------------------------------


@dataclass
class Window:
    name: str
    result: PhaseResult
    cores: dict[str, float] = field(default_factory=dict)  # averaged over the window
    transform_seconds: float | None = None
    transform_note: str = ""

    def p(self, q: float, values: list[float] | None = None) -> float:
        data = sorted(self.result.latencies if values is None else values)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q * len(data)))] * 1000

    @property
    def achieved(self) -> float:
        return self.result.requests / self.result.window if self.result.window else 0.0

    def details(self) -> str:
        if not self.result.latencies:
            return f"{self.name}: {self.transform_note}"
        ps = ", ".join(f"p{k} {self.p(q):.1f}" for k, q in (("50", 0.5), ("90", 0.9), ("99", 0.99)))
        cores = ", ".join(f"{k} {v:.2f}" for k, v in self.cores.items())
        text = (
            f"{self.name}: {ps} ms, max {max(self.result.latencies) * 1000:.0f} ms, "
            f"{self.result.shed:,} shed; client send lag p99 "
            f"{self.p(0.99, self.result.send_lag):.1f} ms; cores: {cores}"
        )
        return text + (f"; {self.transform_note}" if self.transform_note else "")


LATENCY_WARMUP = 2.0


def busy_cores(pid: int) -> tuple[float, float, float]:
    """(now, machine busy seconds, the collector's and its children's CPU seconds)."""
    machine = psutil.cpu_times()
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    busy = sum(machine) - idle - getattr(machine, "guest", 0.0)
    try:
        process = psutil.Process(pid)
        own = sum(process.cpu_times()[:2])
        own += sum(sum(c.cpu_times()[:2]) for c in process.children(recursive=True))
    except psutil.Error:
        own = 0.0
    return time.monotonic(), busy, own


def latency_window(
    pool: cf.ProcessPoolExecutor,
    collector: CollectorProcess,
    templates: tuple[bytes, ...],
    name: str,
    rate: float,
    seconds: float,
) -> Window:
    """One open-loop window of single-event requests; CPU read over the measured part."""
    assert collector.process is not None
    start_at = time.time() + 0.3
    spec = PhaseSpec(
        name=name,
        kind="single",
        host="127.0.0.1",
        port=collector.port,
        connections=64,
        warmup=LATENCY_WARMUP,
        seconds=seconds,
        start_at=start_at,
        templates=templates,
        rate=rate,
        id_prefix=f"tb-{name}-{os.urandom(2).hex()}",
    )
    future = pool.submit(run_phase, spec)
    time.sleep(max(0.0, start_at + LATENCY_WARMUP - time.time()))
    t0, busy0, own0 = busy_cores(collector.process.pid)
    time.sleep(seconds)
    t1, busy1, own1 = busy_cores(collector.process.pid)
    result = future.result(timeout=seconds + 120)
    span = t1 - t0
    machine = (busy1 - busy0) / span
    collector_cores = (own1 - own0) / span
    return Window(
        name,
        result,
        {
            "collector (+ writer)": collector_cores,
            "rest of the machine": max(0.0, machine - collector_cores),
        },
    )


def measure_ingest(
    data_dir: Path, rate: float, seconds: float, full_refresh: bool
) -> tuple[list[Window], str]:
    from collector import event_templates

    templates, origin = event_templates(2_000)
    collector = CollectorProcess(data_dir)
    windows: list[Window] = []
    spawn = multiprocessing.get_context("spawn")
    try:
        with console.status("starting the collector on the generated warehouse..."):
            collector.start(timeout=300)
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            pool.submit(os.getpid).result()  # the client process is up before anything is timed
            with console.status(f"ingest p99 without a transform ({seconds:.0f} s)..."):
                windows.append(
                    latency_window(pool, collector, templates, "no transform", rate, seconds)
                )
            if not transform_command_exists():
                note = (
                    "not measured: `shopstream transform` does not exist yet (the runner that "
                    "asks the running platform is being written)"
                )
                windows.append(Window("during a transform", PhaseResult(), transform_note=note))
                return windows, origin
            with console.status("ingest p99 while the platform runs a transform..."):
                windows.append(
                    window_during_transform(pool, collector, templates, rate, seconds, full_refresh)
                )
    finally:
        collector.stop()
    return windows, origin


def window_during_transform(
    pool: cf.ProcessPoolExecutor,
    collector: CollectorProcess,
    templates: tuple[bytes, ...],
    rate: float,
    seconds: float,
    full_refresh: bool,
) -> Window:
    """``shopstream transform`` asks the platform; the window opens once the command has
    started (its imports take a few seconds) and says how much of it the transform covered."""
    answer: list[subprocess.CompletedProcess[str]] = []
    span: dict[str, float] = {}

    def transform() -> None:
        span["start"] = time.monotonic()
        answer.append(run_transform_command(collector.data_dir, full_refresh=full_refresh))
        span["end"] = time.monotonic()

    thread = threading.Thread(target=transform, name="transform", daemon=True)
    thread.start()
    time.sleep(3.0)
    opened = time.monotonic() + 0.3 + LATENCY_WARMUP
    window = latency_window(pool, collector, templates, "during a transform", rate, seconds)
    thread.join()
    took = span["end"] - span["start"]
    window.transform_seconds = took
    covered = max(0.0, min(span["end"], opened + seconds) - opened) / seconds
    reply = answer[0]
    if reply.returncode != 0:
        window.transform_note = (
            f"the transform FAILED (exit {reply.returncode}): "
            f"{(reply.stderr or reply.stdout).strip()[-300:]}"
        )
    else:
        window.transform_note = (
            f"`shopstream transform` ran {took:.1f} s and covered {covered:.0%} of the window"
        )
    return window


# -- output -----------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "[green]PASS" if ok else "[red]FAIL"


def summary_table(
    scale: _rawgen.Scale,
    generated: _rawgen.Generated,
    gen_seconds: float,
    full: Build,
    appended: dict[str, int],
    incremental: Build,
    windows: list[Window],
    rate: float,
) -> Table:
    table = Table(title="shopstream transform — measured in this run")
    for name in ("metric", "measured", "target", "ratio", ""):
        table.add_column(name, justify="left" if name == "metric" else "right")
    raw_rows = sum(v for k, v in generated.rows.items())
    table.add_row(
        f"raw rows generated ({scale.events:,} events / {scale.orders:,} orders asked)",
        f"{raw_rows:,} in {gen_seconds:,.0f} s",
        "",
        "",
        "",
    )
    table.add_row(
        f"full build (--full-refresh), {full.models} models + {full.tests} tests",
        f"{full.seconds:,.1f} s",
        "",
        "",
        "" if full.ok else "[red]FAILED",
    )
    table.add_row("full build: raw rows/s", f"{raw_rows / full.seconds:,.0f}", "", "", "")
    new = sum(appended.values())
    table.add_row(
        f"incremental build after {new:,} new raw rows ({new / raw_rows:.2%})",
        f"{incremental.seconds:,.1f} s",
        "",
        "",
        "" if incremental.ok else "[red]FAILED",
    )
    ratio = incremental.seconds / full.seconds
    table.add_row(
        "incremental / full (wall clock: what a user waits)",
        f"{ratio:.3f}",
        f"≤ {TARGET_INCREMENTAL_RATIO}",
        f"{ratio / TARGET_INCREMENTAL_RATIO:.2f}× budget",
        mark(ratio <= TARGET_INCREMENTAL_RATIO and full.ok and incremental.ok),
    )
    if full.model_seconds:
        # Without dbt's fixed costs (start, parse, tests): what grows with the data.
        models_ratio = incremental.model_seconds / full.model_seconds
        table.add_row(
            "models' own time (dbt execution_time summed): full → incremental",
            f"{full.model_seconds:,.1f} s → {incremental.model_seconds:,.1f} s",
            "",
            f"{models_ratio:.3f}",
            "",
        )
    add_latency_rows(table, windows, rate)
    return table


def add_latency_rows(table: Table, windows: list[Window], rate: float) -> None:
    base = next((w for w in windows if w.name == "no transform"), None)
    for w in windows:
        if not w.result.latencies:
            table.add_row(f"ingest p99 {w.name}", "—", "", "", w.transform_note)
            continue
        p99 = w.p(0.99)
        shed = f" ({w.result.shed:,} shed)" if w.result.shed else ""
        ratio_text = f"{p99 / TARGET_P99_MS:.2f}× budget" if math.isfinite(p99) else "—"
        if w is not base and base is not None and math.isfinite(base.p(0.99)):
            ratio_text = f"{p99 / base.p(0.99):.2f}× without" if math.isfinite(p99) else "—"
        table.add_row(
            f"ingest p99 {w.name} @ {rate:,.0f} req/s (achieved {w.achieved:,.0f}/s)",
            ("∞" if not math.isfinite(p99) else f"{p99:.1f}") + f" ms{shed}",
            f"≤ {TARGET_P99_MS:.0f} ms",
            ratio_text,
            mark(p99 <= TARGET_P99_MS and not w.result.shed),
        )


def build_table(full: Build, incremental: Build) -> Table:
    table = Table(title="Slowest models (seconds)")
    table.add_column("model")
    table.add_column("full", justify="right")
    table.add_column("incremental", justify="right")
    inc = dict(incremental.slowest)
    for name, seconds in full.slowest[:12]:
        table.add_row(name, f"{seconds:.2f}", f"{inc.get(name, float('nan')):.2f}")
    return table


def rows_table(generated: _rawgen.Generated, appended: dict[str, int]) -> Table:
    table = Table(title="Raw rows")
    table.add_column("table")
    table.add_column("full load", justify="right")
    table.add_column("appended (increment)", justify="right")
    for name, n in generated.rows.items():
        table.add_row(name, f"{n:,}", f"{appended.get(name, 0):,}")
    return table


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events in raw.events")
    parser.add_argument("--orders", type=int, default=1_000_000, help="orders in the shop")
    parser.add_argument("--days", type=int, default=90, help="days of history")
    parser.add_argument("--quick", action="store_true", help="200k events, 20k orders, 5 s")
    parser.add_argument("--rate", type=float, default=2_000.0, help="ingest requests/s offered")
    parser.add_argument("--seconds", type=float, default=15.0, help="each latency window")
    parser.add_argument("--skip-ingest", action="store_true", help="no latency windows")
    parser.add_argument(
        "--incremental-during-ingest",
        action="store_true",
        help="run an incremental transform in the latency window (default: a full refresh, "
        "the longest)",
    )
    parser.add_argument(
        "--project",
        type=Path,
        default=PROJECT,
        help="dbt project for the stand-in path (while `shopstream transform` does not exist)",
    )
    parser.add_argument(
        "--ingest-only",
        type=Path,
        metavar="DATA_DIR",
        help="only the latency windows, on the warehouse a --keep run left in DATA_DIR",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.orders, args.seconds = 200_000, 20_000, 5.0
    return args


def ingest_only(data_dir: Path, args: argparse.Namespace) -> int:
    warehouse = duckdb.connect(str(data_dir / "shopstream.duckdb"), read_only=True)
    events = warehouse.execute("SELECT count(*) FROM raw.events").fetchone()
    warehouse.close()
    console.print(f"{data_dir}: {events[0] if events else 0:,} rows in raw.events")
    windows, origin = measure_ingest(
        data_dir, args.rate, args.seconds, not args.incremental_during_ingest
    )
    console.print(f"ingest load: single events from {origin}; {machine_load()}")
    table = Table(title="shopstream ingest with and without a transform — measured in this run")
    for name in ("metric", "measured", "target", "ratio", ""):
        table.add_column(name, justify="left" if name == "metric" else "right")
    add_latency_rows(table, windows, args.rate)
    console.print(table)
    for w in windows:
        console.print(w.details(), highlight=False, markup=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scale = _rawgen.Scale(events=args.events, orders=args.orders, days=args.days)
    console.rule("[bold]shopstream transform benchmark")
    console.print(f"machine at the start: {machine_load()}")
    if args.ingest_only:
        return ingest_only(args.ingest_only, args)
    work = Path(tempfile.mkdtemp(prefix="shopstream-bench-transform-"))
    data_dir = work / "data"
    data_dir.mkdir(mode=0o700)  # the warehouse holds personal data: private, as the platform wants
    warehouse = data_dir / "shopstream.duckdb"
    pending = work / "increment.duckdb"
    started = time.monotonic()
    try:
        with console.status(f"generating {scale.events:,} events, {scale.orders:,} orders..."):
            began = time.perf_counter()
            generated = _rawgen.generate(warehouse, pending, scale)
            gen_seconds = time.perf_counter() - began
        console.print(
            f"generated {sum(generated.rows.values()):,} raw rows in {gen_seconds:,.1f} s "
            f"({sum(generated.pending.values()):,} more kept for the increment); {machine_load()}"
        )
        with console.status("full build (--full-refresh)..."):
            full = build(data_dir, full_refresh=True, project=args.project)
        console.print(f"full build: {full.seconds:,.1f} s ({full.how}); {machine_load()}")
        for failure in full.failures[:10]:
            console.print(f"  [red]{failure}", markup=True, highlight=False)
        with console.status("appending the increment..."):
            appended = _rawgen.append_increment(warehouse, pending)
        with console.status("incremental build..."):
            incremental = build(data_dir, full_refresh=False, project=args.project)
        console.print(f"incremental build: {incremental.seconds:,.1f} s; {machine_load()}")
        for failure in incremental.failures[:10]:
            console.print(f"  [red]{failure}", markup=True, highlight=False)
        windows: list[Window] = []
        if not args.skip_ingest:
            windows, origin = measure_ingest(
                data_dir, args.rate, args.seconds, not args.incremental_during_ingest
            )
            console.print(f"ingest load: single events from {origin}; {machine_load()}")
        console.print(rows_table(generated, appended))
        console.print(build_table(full, incremental))
        console.print(
            summary_table(
                scale, generated, gen_seconds, full, appended, incremental, windows, args.rate
            )
        )
        for w in windows:
            console.print(w.details(), highlight=False, markup=False)
        console.print(f"transform: {full.how}")
    finally:
        if args.keep:
            console.print(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    console.print(f"total {time.monotonic() - started:,.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
