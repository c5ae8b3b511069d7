"""`shopstream`: one command, a subcommand per job."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import httpx
import orjson
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shopstream.config import Settings, load_settings
from shopstream.observability.logging import setup_logging

if TYPE_CHECKING:  # the platform is imported when a command runs it (uvicorn, FastAPI...)
    from shopstream.cdc.stats import ReaderStatus
    from shopstream.generators.clickstream import SendStats
    from shopstream.generators.shop import WorkloadStats
    from shopstream.loader.run import LoaderStatus
    from shopstream.platform import Parts, Platform, PlatformStatus, Summary, Traffic
    from shopstream.platform_runs import RunStatus
    from shopstream.quality.runner import QualityProgress
    from shopstream.quality.runs import QualityRun
    from shopstream.transform.runner import Progress, TransformResult

T = TypeVar("T")

app = typer.Typer(
    help="shopstream: real-time data platform for e-commerce.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schema_app = typer.Typer(help="Print the contracts' JSON Schema.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
quality_app = typer.Typer(help="The data quality agent's checks.", no_args_is_help=True)
app.add_typer(quality_app, name="quality")
docs_app = typer.Typer(help="The pipeline documentation.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")

console = Console(stderr=True)
out = Console()


def _settings() -> Settings:
    try:
        settings = load_settings()
    except Exception as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    setup_logging(settings.log_level)
    return settings


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


# -- run / collector ----------------------------------------------------------------------


class StatusLine:
    """The live status: rates from the difference between ticks."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.last_accepted = 0
        self.last_changes = 0
        self.last_loaded = 0
        self.rate = 0.0
        self.cdc_rate = 0.0
        self.load_rate = 0.0

    def tick(self, accepted: int, changes: int, loaded: int = 0) -> None:
        """Update the events/s, changes/s and loaded messages/s rates (at most every half
        second)."""
        now = time.monotonic()
        elapsed = now - self.last
        if elapsed >= 0.5:
            self.rate = (accepted - self.last_accepted) / elapsed
            self.cdc_rate = (changes - self.last_changes) / elapsed
            self.load_rate = (loaded - self.last_loaded) / elapsed
            self.last, self.last_accepted, self.last_changes = now, accepted, changes
            self.last_loaded = loaded

    def render(self, status: PlatformStatus) -> Group:
        collector, reader = status.collector, status.cdc
        self.tick(
            collector.accepted if collector else 0,
            reader.changes + reader.snapshot_rows if reader else 0,
            status.loader.messages if status.loader else 0,
        )
        lines: list[Text] = []
        if collector is not None:
            up = int(collector.up_seconds)
            lines.append(
                Text.assemble(
                    ("shopstream ", "bold"),
                    ("● ", "green"),
                    f"collector {collector.url}   up {up // 60:02d}:{up % 60:02d}",
                )
            )
            lines.append(
                Text(
                    f"events    accepted {collector.accepted:,} ({self.rate:,.0f}/s)   "
                    f"rejected {collector.rejected:,}   "
                    f"sink queue {collector.sink_pending_rows:,} rows   "
                    f"commits {collector.sink_commits:,}"
                )
            )
        if status.generator is not None:
            g = status.generator
            lines.append(
                Text(
                    f"generator sent {g.sent:,}   acknowledged {g.accepted:,}   "
                    f"rejected {g.rejected:,}   errors {g.errors:,}"
                )
            )
        if reader is not None:
            lines.append(cdc_line(reader, self.cdc_rate))
        orders = status.orders
        if orders is not None:
            lines.append(
                Text(
                    f"orders    {orders.transactions:,} transactions "
                    f"({orders.transactions_per_second:,.0f}/s)   orders placed {orders.orders:,}"
                    f"   rolled back {orders.rolled_back:,}"
                )
            )
        if status.loader is not None:
            lines.append(loader_line(status.loader, self.load_rate))
        if status.transform is not None:
            lines.append(run_line("transform", status.transform, failed="FAILED"))
        if status.quality is not None:
            lines.append(run_line("quality", status.quality, failed="ALARM"))
        return Group(*lines)


def run_line(label: str, status: RunStatus, *, failed: str) -> Text:
    """One status line of a kind of run (transforms, quality runs): running, the last one's
    outcome (``failed`` when it was not ok), the next one's start."""
    parts = []
    if status.running:
        parts.append(f"running ({status.reason})")
    if status.last_finished is not None:
        when = time.strftime("%H:%M:%S", time.localtime(status.last_finished))
        outcome = "ok" if status.last_ok else failed
        parts.append(f"last {when} {outcome}: {status.last_summary}")
    if status.next_in_seconds is not None and not status.running:
        parts.append(
            f"next in {int(status.next_in_seconds) // 60}:{int(status.next_in_seconds) % 60:02d}"
        )
    style = "red" if status.last_ok is False else ""
    return Text(f"{label:<10}" + "   ".join(parts or ["scheduled"]), style=style)


def _size(value: int | None) -> str:
    if value is None:
        return "?"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size = size / 1024
    return str(size)


def cdc_line(stats: ReaderStatus, rate: float) -> Text:
    lag = stats.lag_seconds
    lag_text = "-" if lag is None else f"{lag:,.1f} s"
    return Text(
        f"cdc       {stats.state}   changes {stats.changes:,} ({rate:,.0f}/s)   "
        f"snapshot {stats.snapshot_rows:,}   tx {stats.transactions:,}   lag {lag_text} / "
        f"{_size(stats.lag_bytes)}   slot retains {_size(stats.retained_bytes)}"
        + (f"   dead letters {stats.dead_letters:,}" if stats.dead_letters else "")
    )


def loader_line(stats: LoaderStatus, rate: float) -> Text:
    rows = " · ".join(f"{table} {n:,}" for table, n in sorted(stats.rows.items())) or "none"
    lag = "-" if stats.lag is None else f"{stats.lag:,}"
    text = (
        f"loader    {stats.state}   messages {stats.messages:,} ({rate:,.0f}/s)   rows {rows}   "
        f"poison {stats.poison:,}   refused {stats.refused:,}   lag {lag}"
    )
    if stats.retries:
        text += f"   retries {stats.retries:,}"
    if stats.state == "retrying" and stats.last_error:
        text += f"   ({stats.last_error})"
    return Text(text, style="yellow" if stats.state == "retrying" else "")


def _summary_table(summary: Summary) -> Table:
    table = Table(title=f"shopstream stopped after {summary.seconds:,.1f} s", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in summary.table_counts.items():
        table.add_row(name, f"{rows:,}")
    return table


def _build(settings: Settings, parts: Parts, command: str) -> Platform:
    """The platform, or a clear error (the warehouse held by another process, say). Tracing
    is set up first (observability.tracing), named after the command (service.name
    shopstream-<command>)."""
    from shopstream.loader.base import SourceError
    from shopstream.observability import tracing
    from shopstream.platform import LocalDatabaseError, Platform
    from shopstream.warehouse import WarehouseError

    tracing.set_up(settings.observability, command)

    try:
        return Platform(settings, parts, announce=console.print)
    except (WarehouseError, LocalDatabaseError, SourceError) as exc:  # says what to do
        raise _fail(str(exc)) from exc
    except ValueError as exc:  # a URL with an unknown scheme: the message names the known
        raise _fail(str(exc), 2) from exc


def _one_of(value: str, allowed: Sequence[str], option: str) -> None:
    """A usage error (exit 2) naming the choices when ``value`` is not one of them."""
    if value not in allowed:
        raise typer.BadParameter(f"{value!r}: use one of {', '.join(allowed)}", param_hint=option)


def _print_as(
    output: str,
    value: T,
    as_json: Callable[[T], str],
    as_markdown: Callable[[T], str],
    as_table: Callable[[T], Any],
) -> None:
    """Print ``value`` in the ``--format`` asked for: JSON or Markdown on stdout as text, a
    table through Rich."""
    if output == "json":
        sys.stdout.write(as_json(value) + "\n")
    elif output == "markdown":
        sys.stdout.write(as_markdown(value) + "\n")
    else:
        out.print(as_table(value))


def _run_platform(
    platform: Platform,
    duration: float | None,
    finish: Callable[[Platform, Summary], Summary] | None = None,
) -> tuple[Summary, StatusLine]:
    """Run it with the live status line on a terminal; tune the process first. ``finish``
    runs after ingest has stopped and drained, before the warehouse closes."""
    from shopstream.platform import tune_process

    tune_process()
    status = StatusLine()
    live = Live(console=console, refresh_per_second=4) if console.is_terminal else None

    def tick(p: Platform) -> None:
        if live is not None:
            live.update(status.render(p.status()))

    async def main() -> Summary:
        if live is not None:
            with live:
                return await platform.run(duration=duration, on_tick=tick)
        return await platform.run(duration=duration)

    try:
        summary: Summary = _run_async(main())
        if finish is not None:
            summary = finish(platform, summary)
    except OSError as exc:
        collector = platform.collector
        where = f"{collector.host}:{collector.port}" if collector else "the collector's address"
        raise _fail(
            f"cannot listen on {where}: {exc}. "
            "Pick another with --port or SHOPSTREAM_COLLECTOR__PORT."
        ) from exc
    finally:
        platform.close()
        from shopstream.observability import tracing

        tracing.shut_down()  # the spans still buffered go out before the process ends
    return summary, status


def _record_pipeline(settings: Settings, pipeline: str, ok: bool) -> None:
    """A one-shot run's outcome for the PipelineExecutionFailed alert: counted, and pushed to
    observability.pushgateway_url when set. A failed push is a warning: the command's own exit
    status stands."""
    from shopstream.platform_runs import record_pipeline_run

    problem = record_pipeline_run(pipeline, ok, settings.observability.pushgateway_url)
    if problem is not None:
        console.print(f"[yellow]warning:[/yellow] {problem}; the alert will not see this run")


def _push_quality(settings: Settings, *, partial: bool) -> None:
    """After a quality run that judged its checks: when they ran in this process (not on a
    running platform, whose /metrics serves them) and observability.pushgateway_url is set,
    replace the pushed quality gauges (:mod:`shopstream.observability.quality_push`). A
    ``--select`` run (``partial``) pushes nothing. A failed push is a warning: the command's
    own exit status stands."""
    url = settings.observability.pushgateway_url
    if not url:
        return
    from shopstream.observability.quality_push import PushError, judged_here, push_quality

    if not judged_here():
        return
    if partial:
        console.print(
            "[dim]note: a --select run does not push the quality gauges (only a run of every "
            "check replaces them at the Pushgateway)[/dim]"
        )
        return
    try:
        push_quality(url)
    except PushError as exc:
        console.print(
            f"[yellow]warning:[/yellow] {exc}; the quality alert and dashboard will not see "
            "this run's checks"
        )


def _serve(
    settings: Settings,
    *,
    host: str | None,
    port: int | None,
    duration: float | None,
    traffic: Traffic | None,
    local_postgres: bool = False,
    orders_tps: float = 0.0,
    transform_at_end: bool = False,
    quality_at_end: bool = False,
    schedules: bool = True,
    metrics_port: int | None = None,
    command: str = "run",
) -> None:
    """Run the platform in this process until it is told to stop; print the summary (with
    ``transform_at_end``: then build staging and marts once and print the headline marts;
    with ``quality_at_end``: then run the quality checks and print their report)."""
    from shopstream.platform import Parts

    # With generated traffic, the end-of-run checks judge the shop as it was when that traffic
    # began: its burst (thousands of events a second, against a history of thousands a day)
    # is synthetic load, not the shop's behaviour, and a run that crossed an hour boundary
    # would otherwise alarm on its own traffic.
    judged_as_of = datetime.now(UTC) if traffic is not None else None
    parts = Parts(
        host=host,
        port=port,
        cdc_dsn=settings.postgres_dsn,
        local_postgres=local_postgres,
        traffic=traffic,
        orders_tps=orders_tps if traffic is not None else 0.0,
        duration=duration,
        schedule_transforms=schedules,
        schedule_quality=schedules,
        metrics_port=metrics_port,
    )
    platform = _build(settings, parts, command)
    if platform.metrics_url is not None:
        console.print(f"metrics on {platform.metrics_url}")
    final: list[tuple[TransformResult, list[tuple[str, Any]]]] = []
    checked: list[QualityRun] = []

    def finish(p: Platform, summary: Summary) -> Summary:
        # Ingest has drained: build staging and marts, then check them.
        if transform_at_end:
            summary = transform_once(p, summary)
        if quality_at_end:
            from dataclasses import replace

            from shopstream.quality.runs import QualityRequest
            from shopstream.warehouse import WarehouseError

            request = None
            if judged_as_of is None:
                console.print("running the quality checks...")
            else:
                request = QualityRequest(now=judged_as_of)
                console.print(
                    f"running the quality checks, judged as of {judged_as_of:%H:%M:%S} UTC "
                    "(when the generated traffic began: its burst is load, not the shop)..."
                )
            # The CDC reader has stopped on purpose: its slot is idle by design, not lagging
            # (the checks while the platform serves watch replication).
            checked.append(
                _with_quality_progress(
                    lambda on_progress: p.check_quality(
                        request, on_progress, reason="end of run", replication=False
                    )
                )
            )
            assert p.warehouse is not None  # the checks are scheduled: it holds the warehouse
            with contextlib.suppress(WarehouseError):  # the counts stay those from before
                summary = replace(summary, table_counts=p.warehouse.table_counts())
        return summary

    def transform_once(p: Platform, summary: Summary) -> Summary:
        from dataclasses import replace

        from shopstream.transform.headline import headline_marts
        from shopstream.warehouse import WarehouseError

        assert p.warehouse is not None  # transforms are scheduled: it holds the warehouse
        console.print("building staging and marts (dbt build)...")
        result = _with_progress(
            lambda on_progress: p.transform(None, on_progress, reason="end of run")
        )
        try:
            marts = headline_marts(p.warehouse) if result.success else []
            summary = replace(summary, table_counts=p.warehouse.table_counts())
        except WarehouseError as exc:
            console.print(f"[red]error:[/red] cannot read the marts: {exc}")
            marts = []
        final.append((result, marts))
        return summary

    summary, status = _run_platform(
        platform, duration, finish if transform_at_end or quality_at_end else None
    )
    if not console.is_terminal:
        console.print(status.render(platform.status()))
    console.print(_summary_table(summary))
    console.print(
        f"accepted {summary.accepted:,} events, rejected {summary.rejected:,} "
        f'(reasons in raw.dead_letter).  Query: {_command_name()} sql "SELECT ..."'
    )
    generator = summary.generator
    if generator is not None:
        console.print(
            f"generator: sent {generator.sent:,}, acknowledged {generator.accepted:,}, "
            f"rejected {generator.rejected:,}"
        )
    cdc = summary.cdc
    if cdc is not None:
        console.print(
            f"cdc: {cdc.changes:,} changes in {cdc.transactions:,} transactions, "
            f"{cdc.snapshot_rows:,} snapshot rows, {cdc.dead_letters:,} dead letters"
        )
    transform_failed = False
    for result, marts in final:
        _print_transform(result)
        for title, table in marts:
            out.print(_arrow_table(table, title))
        if result.success and not marts:
            console.print("no headline marts (daily_sales, daily_funnel, tracking_coverage) yet")
        transform_failed = not result.success
    quality_failed = False
    for run in checked:
        from shopstream.quality.report import as_table

        # The checks' verdict is the report's to tell (`shopstream quality run` exits 1 on a
        # failed check, for CI); a run that could not run at all fails this command.
        out.print(as_table(run, passing=False))  # what needs a person; the rest counted
        quality_failed = run.error is not None
    for failure in summary.failures:
        console.print(f"[red]error:[/red] {failure}")
    if summary.failures or transform_failed or quality_failed:
        raise typer.Exit(1)


def _command_name() -> str:
    """How the user started us, for hints: `.venv/bin/shopstream` after `make run`."""
    if sys.argv[0].endswith("__main__.py"):
        return "python -m shopstream"
    return sys.argv[0]


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(coro)


@app.command()
def run(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    generate: Annotated[
        bool, typer.Option(help="Send generated shop traffic to the collector.")
    ] = False,
    rate: Annotated[float, typer.Option(help="Generated events per second.")] = 2_000.0,
    truth: Annotated[
        Path | None, typer.Option(help="Write the generator's ground truth to this JSON file.")
    ] = None,
    bad_fraction: Annotated[
        float, typer.Option(help="Share of deliberately bad generated events (shows rejections).")
    ] = 0.001,
    host: Annotated[str | None, typer.Option(help="Collector address.")] = None,
    port: Annotated[int | None, typer.Option(help="Collector port.")] = None,
    local_postgres: Annotated[
        bool,
        typer.Option(
            help="Without SHOPSTREAM_POSTGRES_DSN: start a local PostgreSQL for the shop "
            "database (under the data dir) and capture its changes."
        ),
    ] = False,
    orders_tps: Annotated[
        float, typer.Option(help="Order-workload transactions/s with --generate (0: none).")
    ] = 50.0,
    transform: Annotated[
        bool,
        typer.Option(
            help="At the end, build staging and marts once (dbt) and print the headline marts."
        ),
    ] = True,
    quality: Annotated[
        bool,
        typer.Option(help="At the end, run the quality checks and print their report."),
    ] = True,
) -> None:
    """Run the platform on one machine: collector, CDC (when a shop database is configured)
    and the sink into the DuckDB warehouse."""
    from shopstream.platform import Traffic

    settings = _settings()
    _serve(
        settings,
        host=host,
        port=port,
        duration=duration,
        traffic=Traffic(rate=rate, bad_fraction=bad_fraction, truth=truth) if generate else None,
        local_postgres=local_postgres,
        orders_tps=orders_tps,
        transform_at_end=transform,
        quality_at_end=quality,
        metrics_port=settings.collector.metrics_port,
    )


@app.command()
def collector(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the collector alone (events → raw.events, or to the broker the sink URL names),
    until Ctrl-C or SIGTERM. Publishing to a broker, it never opens the warehouse (the loader
    holds it), and transforms and quality checks run where the warehouse is held."""
    from shopstream.platform import sink_needs_warehouse

    settings = _settings()
    try:
        schedules = sink_needs_warehouse(settings)
    except ValueError as exc:  # an unknown sink URL: the message names the known ones
        raise _fail(str(exc), 2) from exc
    _serve(
        settings,
        host=host,
        port=port,
        duration=None,
        traffic=None,
        schedules=schedules,
        metrics_port=settings.collector.metrics_port,
        command="collector",
    )


@app.command()
def load(
    from_url: Annotated[
        str,
        typer.Option(
            "--from",
            help="The transport to load: kafka://host:port[,host:port...] or pubsub://project "
            "(the collectors' sink URL).",
        ),
    ],
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    idle_exit: Annotated[
        float | None,
        typer.Option(help="Stop once nothing has arrived for this many seconds."),
    ] = None,
    schedule: Annotated[
        bool,
        typer.Option(
            help="Run the transform and the quality checks on their schedules while loading "
            "(as `shopstream run` does)."
        ),
    ] = False,
) -> None:
    """Load what collectors and CDC readers published to a broker into the warehouse's raw
    tables, committing offsets only once the rows are durable. Run more of them (same
    loader.group) to share the partitions. While it runs it holds the warehouse and answers
    `shopstream sql`."""
    from shopstream.platform import Parts

    settings = _settings()
    parts = Parts(
        collector=False,
        loader_url=from_url,
        loader_idle_exit=idle_exit,
        schedule_transforms=schedule,
        schedule_quality=schedule,
        metrics_port=settings.loader.metrics_port,
    )
    platform = _build(settings, parts, "load")
    console.print(f"loading {from_url} into {settings.warehouse} (group {settings.loader.group})")
    if platform.metrics_url is not None:
        console.print(f"metrics on {platform.metrics_url}")
    summary, status = _run_platform(platform, duration)
    if summary.loader is not None:
        console.print(loader_line(summary.loader, 0.0))
    elif not console.is_terminal:
        console.print(status.render(platform.status()))
    console.print(_summary_table(summary))
    for failure in summary.failures:
        console.print(f"[red]error:[/red] {failure}")
    if summary.failures:
        raise typer.Exit(1)


# -- generators -----------------------------------------------------------------------------


@app.command("generate-events")
def generate_events(
    url: Annotated[str, typer.Option(help="Collector base URL.")] = "http://127.0.0.1:8080",
    rate: Annotated[float, typer.Option(help="Events per second.")] = 1_000.0,
    duration: Annotated[float, typer.Option(help="Seconds to send for.")] = 60.0,
    batch_size: Annotated[int, typer.Option(help="Events per request.")] = 50,
    truth: Annotated[Path | None, typer.Option(help="Write the ground truth JSON here.")] = None,
    write_key: Annotated[
        str | None, typer.Option(envvar="SHOPSTREAM_WRITE_KEY", help="Write key to send.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same shop).")] = 1,
    bad_fraction: Annotated[float, typer.Option(help="Share of deliberately bad events.")] = 0.0,
) -> None:
    """Send realistic shop clickstream to a collector over HTTP."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from shopstream.generators.clickstream import send_events

    settings = _settings()
    with Progress(
        TextColumn("[bold]sending"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("send", total=duration, detail="")
        started = time.monotonic()

        def on_progress(stats: SendStats) -> None:
            progress.update(
                task,
                completed=min(time.monotonic() - started, duration),
                detail=f"sent {stats.sent:,}  ok {stats.accepted:,}  "
                f"rejected {stats.rejected:,}  errors {stats.errors:,}",
            )

        try:
            truth_data = _run_async(
                send_events(
                    url,
                    rate=rate,
                    duration=duration,
                    batch_size=batch_size,
                    write_key=write_key,
                    seed=seed,
                    bad_fraction=bad_fraction,
                    on_progress=on_progress,
                    # No shop database here: purchases carry made-up order ids.
                    timezone=settings.timezone,
                    session_timeout=settings.transform.session_timeout_minutes * 60,
                )
            )
        except httpx.HTTPError as exc:
            raise _fail(f"cannot reach the collector at {url}: {exc}. Is it running?") from exc
    if truth is not None:
        truth_data.write_json(truth)
        console.print(f"ground truth written to {truth}")
    console.print(
        f"sent {truth_data.sent:,} events: {truth_data.accepted:,} accepted, "
        f"{truth_data.rejected:,} rejected"
    )


@app.command("generate-orders")
def generate_orders(
    dsn: Annotated[
        str | None, typer.Option(envvar="SHOPSTREAM_POSTGRES_DSN", help="Shop database DSN.")
    ] = None,
    tps: Annotated[float, typer.Option(help="Transactions per second.")] = 50.0,
    duration: Annotated[float, typer.Option(help="Seconds to run for.")] = 60.0,
    truth: Annotated[Path | None, typer.Option(help="Write the ground truth JSON here.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same shop).")] = 1,
) -> None:
    """Run the shop's order workload against PostgreSQL (creates the schema if missing)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from shopstream.generators.shop import run_order_workload, setup_shop_schema

    _settings()
    if not dsn:
        raise _fail("no shop database: pass --dsn or set SHOPSTREAM_POSTGRES_DSN")
    try:
        setup_shop_schema(dsn, seed=seed)
    except Exception as exc:
        raise _fail(f"cannot prepare the shop schema at {dsn}: {exc}") from exc
    with Progress(
        TextColumn("[bold]orders"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("orders", total=duration, detail="")

        def on_progress(stats: WorkloadStats) -> None:
            progress.update(
                task,
                completed=min(stats.elapsed, duration),
                detail=f"{stats.transactions:,} tx ({stats.transactions_per_second:,.0f}/s)  "
                f"orders {stats.orders:,}  rolled back {stats.rolled_back:,}",
            )

        result = _run_async(
            run_order_workload(
                dsn,
                tps=tps,
                duration=duration,
                seed=seed,
                truth_path=truth,
                on_progress=on_progress,
            )
        )
    if truth is not None:
        console.print(f"ground truth written to {truth}")
    statuses = ", ".join(f"{s} {n:,}" for s, n in sorted(result.orders_by_status.items()) if n)
    console.print(
        f"committed {result.transactions:,} transactions ({result.rolled_back:,} rolled back); "
        f"orders: {statuses or 'none'}; revenue {result.revenue:,}"
    )


@app.command("generate-history")
def generate_history(
    days: Annotated[int, typer.Option(help="Days of history, ending at --end.")] = 35,
    events_per_day: Annotated[int, typer.Option(help="Events per day, on average.")] = 20_000,
    orders_per_day: Annotated[int, typer.Option(help="Orders per day, on average.")] = 600,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same history).")] = 9,
    end: Annotated[
        str | None,
        typer.Option(
            help="ISO-8601 instant history ends at (default: the oldest row in raw, or now).",
        ),
    ] = None,
) -> None:
    """Write weeks of realistic history straight into raw (DuckDB), before what raw holds:
    events, dead letters and the shop's changes, with daily and weekly rhythm in the shop's
    time zone. Writes nothing when raw already holds history. Stop a running platform first."""
    from datetime import datetime

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from shopstream.generators.history import HistoryRequest
    from shopstream.generators.history import generate_history as write
    from shopstream.warehouse import WarehouseError

    settings = _settings()
    end_at = None
    if end is not None:
        try:
            end_at = datetime.fromisoformat(end.replace("Z", "+00:00"))
        except ValueError as exc:
            raise _fail(f"--end {end!r} is not ISO-8601 (e.g. 2026-03-01T00:00:00Z)", 2) from exc
        if end_at.tzinfo is None:
            raise _fail(f"--end {end!r} has no time zone: add Z or an offset (+09:00)", 2)
    request = HistoryRequest(
        days=days,
        end=end_at,
        events_per_day=events_per_day,
        orders_per_day=orders_per_day,
        seed=seed,
        timezone=settings.timezone,
    )
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]history"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=console.is_terminal,
    ) as bar:
        task = bar.add_task("history", total=None, detail="opening the warehouse...")
        try:
            summary = write(
                settings, request, lambda step: bar.update(task, detail=f"writing {step}")
            )
        except (WarehouseError, ValueError) as exc:
            raise _fail(str(exc)) from exc
    if summary.skipped:
        console.print(f"[yellow]{summary.skipped}[/yellow]")
        return
    table = Table(title="history written", title_justify="left")
    table.add_column("raw table")
    table.add_column("rows", justify="right")
    for name, rows in summary.rows.items():
        table.add_row(f"raw.{name}", f"{rows:,}")
    out.print(table)
    console.print(
        f"{days} days of history, {summary.start.isoformat()} to {summary.end.isoformat()} "
        f"({settings.timezone}), in {summary.seconds:,.1f} s"
    )


@app.command()
def cdc(
    dsn: Annotated[
        str | None,
        typer.Option(envvar="SHOPSTREAM_POSTGRES_DSN", help="The shop's PostgreSQL DSN."),
    ] = None,
    idle_exit: Annotated[
        float | None,
        typer.Option(help="Stop once no change has arrived for this many seconds."),
    ] = None,
    setup_only: Annotated[
        bool, typer.Option(help="Create the publication and slot (and snapshot), then stop.")
    ] = False,
) -> None:
    """Capture the shop database's changes into raw.cdc_<table> (runs the reader alone)."""
    from shopstream.cdc.catalog import CdcSetupError
    from shopstream.platform import Parts

    settings = _settings()
    dsn = dsn or settings.postgres_dsn
    if not dsn:
        raise _fail("no shop database: pass --dsn or set SHOPSTREAM_POSTGRES_DSN")
    parts = Parts(
        collector=False,
        cdc_dsn=dsn,
        cdc_idle_exit=0.0 if setup_only else idle_exit,
        metrics_port=settings.cdc.metrics_port,
    )
    platform = _build(settings, parts, "cdc")
    if platform.metrics_url is not None:
        console.print(f"metrics on {platform.metrics_url}")
    summary, _ = _run_platform(platform, None)
    if summary.failures:
        failure = summary.failures[0]
        if isinstance(failure, CdcSetupError):
            raise _fail(str(failure))
        raise _fail(f"CDC reader failed: {failure}")
    stats = summary.cdc
    assert stats is not None  # the reader finished without a failure
    console.print(cdc_line(stats, 0.0))
    console.print(
        f"captured {stats.changes:,} changes in {stats.transactions:,} transactions "
        f"and {stats.snapshot_rows:,} snapshot rows; confirmed LSN {stats.confirmed_lsn:X}"
    )
    for table, rows in summary.table_counts.items():
        if table.startswith("raw.cdc_"):
            console.print(f"  {table}: {rows:,} rows")


# -- transform -------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress_bar(label: str, detail: str) -> Iterator[tuple[Any, Any]]:
    """A Rich progress bar for one long job (transform, quality run, docs build): (bar, its
    task)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=console.is_terminal,
    ) as bar:
        yield bar, bar.add_task(label, total=None, detail=detail)


def _with_progress(
    run: Callable[[Callable[[Progress], None]], TransformResult],
) -> TransformResult:
    """Run a transform with a Rich progress bar fed by its progress events."""
    with _progress_bar("transform", "starting dbt...") as (bar, task):

        def on_progress(step: Any) -> None:
            if step.kind == "waiting":
                bar.update(task, detail="waiting for the transform already running")
            elif step.kind == "started":
                bar.update(task, total=step.total, detail=f"{step.resource_type} {step.node}")
            elif step.kind == "finished":
                bar.update(task, completed=step.index, total=step.total or None)
                if step.status not in ("success", "pass"):
                    console.print(f"  {step.resource_type} {step.node}: {step.status}")

        return run(on_progress)


def _print_transform(result: TransformResult) -> None:
    if result.models:
        table = Table(title="transform", title_justify="left")
        table.add_column("model")
        table.add_column("status")
        table.add_column("rows", justify="right")
        table.add_column("seconds", justify="right")
        for model in result.models:
            style = "red" if model.status == "error" else ""
            rows = "-" if model.rows is None else f"{model.rows:,}"
            table.add_row(model.name, model.status, rows, f"{model.seconds:,.2f}", style=style)
        out.print(table)
    built = sum(1 for m in result.models if m.status == "success")
    console.print(
        f"{built} of {len(result.models)} models built; tests: {result.tests_passed} passed, "
        f"{result.tests_failed} failed, {result.tests_warned} warned ({result.seconds:,.1f} s)"
    )
    for line in result.failures():
        console.print(f"[red]failed:[/red] {line}")


def _arrow_table(table: Any, title: str) -> Table:
    shown = Table(*table.column_names, title=title, title_justify="left")
    for row in zip(*(column.to_pylist() for column in table.columns), strict=True):
        shown.add_row(*("NULL" if v is None else str(v) for v in row))
    return shown


@app.command()
def transform(
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Rebuild incremental models from scratch.")
    ] = False,
    select: Annotated[
        list[str] | None,
        typer.Option("--select", "-s", help="dbt node selection (repeatable), e.g. stg_orders+."),
    ] = None,
) -> None:
    """Build staging and marts (dbt build). A running platform runs it where it holds the
    warehouse; with nothing running, it runs here."""
    from shopstream.transform.runner import TransformRequest
    from shopstream.transform.runs import transform_warehouse
    from shopstream.warehouse import WarehouseError

    settings = _settings()
    request = TransformRequest(full_refresh=full_refresh, select=tuple(select or ()))
    try:
        result = _with_progress(
            lambda on_progress: transform_warehouse(settings, request, on_progress)
        )
    except WarehouseError as exc:
        _record_pipeline(settings, "transform", ok=False)
        raise _fail(str(exc)) from exc
    _record_pipeline(settings, "transform", ok=result.success)
    _print_transform(result)
    if not result.success:
        raise typer.Exit(1)


# -- quality ---------------------------------------------------------------------------------


def _with_quality_progress(
    run: Callable[[Callable[[QualityProgress], None]], QualityRun],
) -> QualityRun:
    """Run the quality checks with a Rich progress bar fed by their progress, check by check."""
    with _progress_bar("quality", "starting...") as (bar, task):

        def on_progress(step: QualityProgress) -> None:
            if step.kind == "waiting":
                bar.update(task, detail="waiting for the quality run already running")
            elif step.kind == "planned":
                bar.update(task, total=step.total, detail="")
            elif step.kind == "checked":
                bar.update(task, completed=step.index, total=step.total, detail=f"{step.check}")
                if step.status in ("warn", "fail", "error"):
                    console.print(f"  {step.check}: {step.status}")
            elif step.kind == "report":
                bar.update(task, detail="writing the report")

        return run(on_progress)


def _pinned_now(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        now = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-12-01T10:00:00Z)", param_hint="--now"
        ) from exc
    if now.tzinfo is None:
        raise typer.BadParameter(
            f"{value!r} has no time zone: add one (2026-12-01T10:00:00Z)", param_hint="--now"
        )
    return now


@quality_app.command(
    "run",
    epilog="Exit status: 0 when no check failed or errored (warn and learning do not fail), "
    "1 when one did (or the run itself could not run), 2 on a usage error (an option, the "
    "checks file).",
)
def quality_run(
    output: Annotated[
        str,
        typer.Option("--format", "-f", help="table (a person), json (a program) or markdown."),
    ] = "table",
    select: Annotated[
        list[str] | None,
        typer.Option(
            "--select", "-s", help="Only checks whose name starts with this (repeatable)."
        ),
    ] = None,
    now: Annotated[
        str | None,
        typer.Option(
            help="Judge as if it were this time (ISO 8601 with a time zone; tests, what-if)."
        ),
    ] = None,
) -> None:
    """Run the data quality checks, store their results in monitoring.data_quality_checks and
    print them with the analyst's report. A running platform runs them where it holds the
    warehouse; with nothing running, they run here, and a run of every check replaces the
    checks' statuses at observability.pushgateway_url when it is set."""
    from shopstream.quality.report import FORMATS, as_json, as_markdown, as_table
    from shopstream.quality.runs import QualityRequest, quality_warehouse
    from shopstream.quality.spec import QualityConfigError, load_config
    from shopstream.warehouse import WarehouseError

    _one_of(output, FORMATS, "--format")
    request = QualityRequest(select=tuple(select or ()), now=_pinned_now(now))
    settings = _settings()
    try:
        load_config(settings.quality.checks_file)  # a broken file is the user's to fix first
    except QualityConfigError as exc:
        _record_pipeline(settings, "quality", ok=False)
        raise _fail(str(exc), 2) from exc
    try:
        result = _with_quality_progress(
            lambda on_progress: quality_warehouse(settings, request, on_progress)
        )
    except WarehouseError as exc:
        _record_pipeline(settings, "quality", ok=False)
        raise _fail(str(exc)) from exc
    # As the exit status says: a failed or errored check fails the run (for the alert too).
    _record_pipeline(settings, "quality", ok=not result.failed)
    if result.error is None:
        _push_quality(settings, partial=bool(request.select))
    if result.config_error:
        assert result.error is not None
        raise _fail(result.error, 2)
    _print_as(output, result, as_json, as_markdown, as_table)
    if result.failed:
        raise typer.Exit(1)


# -- docs ------------------------------------------------------------------------------------


@docs_app.command(
    "build",
    epilog="Exit status: 0 when the pages were written; 1 when a source could not be read (no "
    "dbt manifest or no models built yet: run `shopstream transform`; the warehouse "
    'unreachable; dbt failed; a deploy/ file unreadable: "cannot read ..."); 2 on a usage '
    "error (the settings, a broken quality checks file, an --out that is a file or holds files "
    'not written by docs build) or when the pages cannot be written to --out ("cannot write '
    'the docs to ..."). Nothing is created in --out until the sources are read.',
)
def docs_build(
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write (default: docs.out_dir, else <data_dir>/docs)."),
    ] = None,
) -> None:
    """Build the pipeline documentation: a page per pipeline and per dbt model (lineage,
    schemas, freshness, checks, alerts, runbooks) as Markdown and a static HTML site."""
    from shopstream.genai.docs.site import OutDirError
    from shopstream.genai.docs.sources import DocsSourceError
    from shopstream.genai.pipeline_doc_generator import build_docs, docs_dir
    from shopstream.quality.spec import QualityConfigError
    from shopstream.warehouse import WarehouseError

    settings = _settings()
    target = docs_dir(settings, out_dir)
    with _progress_bar("docs", "reading the sources...") as (bar, task):
        try:
            files = build_docs(settings, target, lambda step: bar.update(task, detail=step))
        except (DocsSourceError, WarehouseError) as exc:
            raise _fail(str(exc)) from exc
        except (OutDirError, QualityConfigError) as exc:
            raise _fail(str(exc), 2) from exc
        except OSError as exc:  # the sources' read errors are DocsSourceErrors: this is a write
            raise _fail(f"cannot write the docs to {target}: {exc}", 2) from exc
    pages = [f for f in files if f.suffix == ".html"]
    console.print(
        f"{len(pages)} pages written: Markdown in {target / 'markdown'}, the site in "
        f"{target / 'site'}; open {target / 'site' / 'index.html'}"
    )


# -- record-run ------------------------------------------------------------------------------


@app.command("record-run", epilog="Exit status: 0 when recorded, 1 when it could not be pushed.")
def record_run(
    pipeline: Annotated[str, typer.Argument(help="transform, quality, docs, ...")],
    outcome: Annotated[str, typer.Option(help="success or failed.")] = "failed",
    reason: Annotated[
        str | None, typer.Option(help="What failed (logged beside the outcome).")
    ] = None,
) -> None:
    """Record a batch run's outcome for the PipelineExecutionFailed alert: push it to the
    Pushgateway of observability.pushgateway_url. Orchestrators call it from their failure
    callbacks (deploy/airflow), for failures that happen before shopstream itself runs."""
    from shopstream.observability.pipeline_runs import OUTCOMES, PushError
    from shopstream.observability.pipeline_runs import record_run as record

    if outcome not in OUTCOMES:
        raise typer.BadParameter(f"{outcome!r}: use success or failed", param_hint="--outcome")
    settings = _settings()
    url = settings.observability.pushgateway_url
    if not url:
        raise _fail(
            "observability.pushgateway_url is not set (SHOPSTREAM_OBSERVABILITY__PUSHGATEWAY_URL): "
            f"the {outcome} run of {pipeline} was not recorded anywhere an alert can see it"
        )
    try:
        record(pipeline, outcome, pushgateway_url=url)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="PIPELINE") from exc
    except PushError as exc:
        raise _fail(f"{exc}; check that the Pushgateway runs and the URL is right") from exc
    detail = f": {reason}" if reason else ""
    console.print(f"recorded the {outcome} run of {pipeline} at {url}{detail}")


# -- sql -------------------------------------------------------------------------------------


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A read-only SQL query.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1_000_000,  # query_endpoint.MAX_LIMIT (imported lazily: fastapi)
            help="Rows to print at most (default: the query.max_rows setting, 10,000).",
        ),
    ] = None,
) -> None:
    """Query the warehouse (reads only); works while the platform runs (it answers for you)."""
    from shopstream.runtime import query_warehouse
    from shopstream.warehouse import WarehouseError

    settings = _settings()
    limit = limit or settings.query.max_rows
    try:
        answer = query_warehouse(settings, query, limit=limit)
    except WarehouseError as exc:
        raise _fail(str(exc)) from exc
    columns, rows = answer.columns, answer.rows
    if as_json:
        sys.stdout.write(
            orjson.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str).decode()
            + "\n"
        )
    else:
        table = Table(*columns)
        for row in rows:
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        out.print(table)
        console.print(f"{len(rows):,} rows")
    if answer.truncated:
        console.print(
            f"[yellow]truncated at {limit:,} rows[/yellow]; use --limit N to see more "
            f"(up to 1,000,000), or narrow the query"
        )


# -- optimize-sql ----------------------------------------------------------------------------


def _read_query(source: str) -> str:
    """The query in the file ``source`` names (``-``: standard input)."""
    if source == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise _fail(f"cannot read {source}: {reason}", 2) from exc
    if not text.strip():
        raise _fail(f"{'standard input' if source == '-' else source} holds no query", 2)
    return text


@app.command(
    "optimize-sql",
    epilog="Exit status: 0 when the query was analysed (with or without findings), 1 when the "
    "warehouse could not be read, 2 on a usage error (an unreadable file, SQL that does not "
    "parse or names a column its tables do not have, an unknown option value).",
)
def optimize_sql(
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="The query's file; - : stdin.")],
    dialect: Annotated[
        str | None,
        typer.Option(
            help="The query's SQL dialect: duckdb or bigquery (default: the warehouse's)."
        ),
    ] = None,
    output: Annotated[
        str,
        typer.Option("--format", "-f", help="table (a person), json (a program) or markdown."),
    ] = "table",
) -> None:
    """Find what makes a query expensive (each finding with evidence, position and a concrete
    fix), cost it before and after, and offer rewrites only once the warehouse proved them
    equal (same schema, same rows). Works while the platform runs (it answers for you)."""
    from shopstream.genai.optimizer.findings import DIALECTS
    from shopstream.genai.optimizer.query import SqlSyntaxError
    from shopstream.genai.optimizer.report import FORMATS, as_json, as_markdown, as_table
    from shopstream.genai.sql_optimizer import optimize_warehouse
    from shopstream.warehouse import WarehouseError

    _one_of(output, FORMATS, "--format")
    if dialect is not None:
        _one_of(dialect, DIALECTS, "--dialect")
    sql = _read_query(source)
    settings = _settings()
    try:
        report = optimize_warehouse(settings, sql, dialect)  # type: ignore[arg-type]
    except SqlSyntaxError as exc:
        raise _fail(str(exc), 2) from exc
    except WarehouseError as exc:
        raise _fail(str(exc)) from exc
    _print_as(output, report, as_json, as_markdown, as_table)


# -- schema ----------------------------------------------------------------------------------


@schema_app.command("events")
def schema_events() -> None:
    """The behaviour-event JSON Schema (what the collector accepts on /v1/events)."""
    from shopstream.events.schema import event_json_schema

    sys.stdout.write(json.dumps(event_json_schema(), indent=2) + "\n")


if __name__ == "__main__":  # pragma: no cover
    app()
