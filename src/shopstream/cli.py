"""`shopstream`: one command, a subcommand per job."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shopstream.config import Settings, load_settings
from shopstream.observability.logging import setup_logging

app = typer.Typer(
    help="shopstream: real-time data platform for e-commerce.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schema_app = typer.Typer(help="Print the contracts' JSON Schema.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")

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
        self.rate = 0.0
        self.generator: Any = None

    def render(self, platform: Any) -> Group:
        now = time.monotonic()
        stats = platform.stats
        elapsed = now - self.last
        if elapsed >= 0.5:
            self.rate = (stats.accepted - self.last_accepted) / elapsed
            self.last, self.last_accepted = now, stats.accepted
        up = int(now - platform.started_at)
        head = Text.assemble(
            ("shopstream ", "bold"),
            ("● ", "green"),
            f"collector {platform.url}   up {up // 60:02d}:{up % 60:02d}",
        )
        events = Text(
            f"events    accepted {stats.accepted:,} ({self.rate:,.0f}/s)   "
            f"rejected {stats.rejected:,}   sink queue {platform.sink.pending_rows():,} rows   "
            f"commits {platform.sink.commits:,}"
        )
        lines = [head, events]
        if self.generator is not None:
            g = self.generator
            lines.append(
                Text(
                    f"generator sent {g.sent:,}   acknowledged {g.accepted:,}   "
                    f"rejected {g.rejected:,}   errors {g.errors:,}"
                )
            )
        return Group(*lines)


def _summary_table(summary: Any) -> Table:
    table = Table(title=f"shopstream stopped after {summary.seconds:,.1f} s", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in summary.table_counts.items():
        table.add_row(name, f"{rows:,}")
    return table


def _serve(
    settings: Settings,
    *,
    host: str | None,
    port: int | None,
    duration: float | None,
    generate: bool,
    rate: float,
    truth: Path | None,
    bad_fraction: float,
) -> None:
    from shopstream.runtime import Companion, Platform
    from shopstream.warehouse.duckdb import WarehouseLocked

    try:
        platform = Platform(settings, host=host, port=port)
    except WarehouseLocked as exc:
        raise _fail(str(exc)) from exc
    status = StatusLine()
    companions: list[Companion] = []
    if generate:
        from shopstream.generators.clickstream import send_events

        async def traffic(url: str, stop: asyncio.Event) -> dict[str, Any]:
            def progress(stats: Any) -> None:
                status.generator = stats

            truth_data = await send_events(
                url,
                rate=rate,
                duration=duration if duration is not None else float("inf"),
                write_key=settings.write_keys[0].get_secret_value()
                if settings.write_keys
                else None,
                bad_fraction=bad_fraction,
                on_progress=progress,
                stop=stop,
            )
            if truth is not None:
                truth_data.write_json(truth)
            return {"generator": truth_data}

        companions.append(traffic)

    interactive = console.is_terminal
    live = Live(console=console, refresh_per_second=4, transient=False) if interactive else None

    def tick(p: Any) -> None:
        if live is not None:
            live.update(status.render(p))

    async def main() -> Any:
        if live is not None:
            with live:
                return await platform.run(duration=duration, companions=companions, on_tick=tick)
        return await platform.run(duration=duration, companions=companions)

    try:
        summary = _run_async(main())
    except OSError as exc:
        raise _fail(
            f"cannot listen on {platform.host}:{platform.port}: {exc}. "
            "Pick another with --port or SHOPSTREAM_COLLECTOR__PORT."
        ) from exc
    finally:
        platform.close()
    if not interactive:
        console.print(status.render(platform))
    console.print(_summary_table(summary))
    console.print(
        f"accepted {summary.accepted:,} events, rejected {summary.rejected:,} "
        f'(reasons in raw.dead_letter).  Query: shopstream sql "SELECT ..."'
    )
    generator = summary.extra.get("generator")
    if generator is not None:
        console.print(
            f"generator: sent {generator.sent:,}, acknowledged {generator.accepted:,}, "
            f"rejected {generator.rejected:,}"
        )


def _run_async(coro: Any) -> Any:
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
) -> None:
    """Run the platform on one machine: collector and sink into the DuckDB warehouse."""
    settings = _settings()
    _serve(
        settings,
        host=host,
        port=port,
        duration=duration,
        generate=generate,
        rate=rate,
        truth=truth,
        bad_fraction=bad_fraction,
    )


@app.command()
def collector(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the collector alone (events → raw.events), until Ctrl-C or SIGTERM."""
    settings = _settings()
    _serve(
        settings,
        host=host,
        port=port,
        duration=None,
        generate=False,
        rate=0,
        truth=None,
        bad_fraction=0,
    )


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

    _settings()
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

        def on_progress(stats: Any) -> None:
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


# -- sql -------------------------------------------------------------------------------------


def _query_running(settings: Settings, sql: str) -> tuple[list[str], list[list[Any]]]:
    from shopstream.runtime import read_runtime

    runtime = read_runtime(settings)
    if runtime is None:
        raise _fail(
            f"{settings.warehouse_path} is locked by another process, but no running shopstream "
            f"left its address in {settings.data_dir}/runtime.json. Stop that process and retry."
        )
    try:
        response = httpx.post(
            f"{runtime['url']}/v1/admin/sql",
            json={"sql": sql},
            headers={"Authorization": f"Bearer {runtime['token']}"},
            timeout=120,
        )
    except httpx.HTTPError as exc:
        raise _fail(f"the running platform at {runtime['url']} did not answer: {exc}") from exc
    try:
        data = response.json()
    except ValueError:
        data = {"error": f"HTTP {response.status_code}: {response.text[:500]}"}
    if response.status_code != 200:
        raise _fail(data.get("error", response.text))
    return data["columns"], data["rows"]


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A read-only SQL query.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
) -> None:
    """Query the warehouse; works while the platform runs (it answers for you)."""
    from shopstream.warehouse import WarehouseError
    from shopstream.warehouse.duckdb import DuckDBWarehouse, WarehouseLocked

    settings = _settings()
    path = settings.warehouse_path
    if not path.exists():
        raise _fail(f"no warehouse at {path} yet: run `shopstream run` (or `make run`) first")
    try:
        warehouse = DuckDBWarehouse(path, read_only=True)
    except WarehouseLocked:
        columns, rows = _query_running(settings, query)
    else:
        try:
            result = warehouse.query(query)
        except WarehouseError as exc:
            raise _fail(str(exc)) from exc
        finally:
            warehouse.close()
        columns = result.column_names
        rows = [list(r.values()) for r in result.to_pylist()]
    if as_json:
        sys.stdout.write(
            orjson.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str).decode()
            + "\n"
        )
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    out.print(table)
    console.print(f"{len(rows):,} rows")


# -- schema ----------------------------------------------------------------------------------


@schema_app.command("events")
def schema_events() -> None:
    """The behaviour-event JSON Schema (what the collector accepts on /v1/events)."""
    from shopstream.events.schema import event_json_schema

    sys.stdout.write(json.dumps(event_json_schema(), indent=2) + "\n")


if __name__ == "__main__":  # pragma: no cover
    app()
