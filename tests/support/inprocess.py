"""The collector in-process, over httpx.ASGITransport, writing to a real DuckDB file.

For what does not need a process of its own (durability across crashes does: see
:mod:`tests.support.collector`). The sink is the real group-commit WarehouseSink, so an answer
still comes only after its rows are committed. Every entry point the collector has can be
driven: ``fast_path`` (IntakeFastPath, what ``shopstream run`` serves) and ``fastapi`` (the
FastAPI app alone, the routes as the OpenAPI document describes them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shopstream.collector.app import IntakeFastPath, create_app
from shopstream.collector.handlers import IntakeHandlers
from shopstream.sinks.warehouse import WarehouseSink
from shopstream.warehouse.duckdb.database import DuckDBWarehouse

ENTRY_POINTS = ("fast_path", "fastapi")
#: Where the in-process requests come from (raw.events records it).
CLIENT = ("203.0.113.7", 5555)


class RawTables:
    """A real DuckDB warehouse file with the raw layer, and what tests read back from it."""

    def __init__(self, path: Path) -> None:
        self.warehouse = DuckDBWarehouse(path)
        self.warehouse.ensure_layers()

    def event_ids(self) -> set[str]:
        table = self.warehouse.query("SELECT event_id FROM raw.events")
        return set(table.column("event_id").to_pylist())

    def dead_letters(self) -> list[dict[str, Any]]:
        table = self.warehouse.query(
            "SELECT reason, payload, context FROM raw.dead_letter ORDER BY received_at, payload"
        )
        return list(table.to_pylist())


@pytest.fixture
def raw_tables(tmp_path: Path) -> Iterator[RawTables]:
    store = RawTables(tmp_path / "inprocess.duckdb")
    yield store
    store.warehouse.close()


@pytest.fixture
def warehouse_sink(raw_tables: RawTables) -> Iterator[WarehouseSink]:
    running = WarehouseSink(raw_tables.warehouse, linger_ms=1)
    running.start()
    yield running
    running.close()


def entry_point(intake: IntakeHandlers, entry: str) -> Any:
    """The ASGI app that serves ``intake`` through ``entry`` (one of :data:`ENTRY_POINTS`)."""
    app = create_app(intake)
    return IntakeFastPath(intake, app) if entry == "fast_path" else app


def call(
    app: Any,
    method: str,
    route: str,
    *,
    content: bytes | AsyncIterator[bytes] = b"",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=CLIENT)
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
            return await client.request(method, route, content=content, headers=headers)

    return asyncio.run(go())


class Watched:
    """A request body that records whether the server read any of it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.read = True
        yield self.data
