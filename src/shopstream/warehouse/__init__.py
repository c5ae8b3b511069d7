"""Warehouse backends behind one protocol; raw-layer table definitions."""

from __future__ import annotations

from pathlib import Path

from shopstream.warehouse.base import LAYERS, QueryError, Warehouse, WarehouseError

__all__ = ["LAYERS", "QueryError", "Warehouse", "WarehouseError", "open_warehouse"]


def open_warehouse(
    path: Path,
    *,
    read_only: bool = False,
    checkpoint_wal_mb: int = 128,
    memory_limit_mb: int | None = None,
    own_process: bool = False,
    writer_restarts: int = 5,
) -> Warehouse:
    """Open the embedded DuckDB warehouse (the only backend wired into settings so far).

    ``own_process``: run DuckDB in a writer process of its own (see
    :mod:`shopstream.warehouse.writer`), so its work does not compete for this process's GIL;
    it is restarted up to ``writer_restarts`` times in a row if it dies. ``memory_limit_mb``:
    DuckDB's memory limit (none: DuckDB's default, 80% of the machine's RAM).
    """
    if own_process:
        from shopstream.warehouse.writer import WarehouseProcess

        return WarehouseProcess(
            path,
            read_only=read_only,
            checkpoint_wal_mb=checkpoint_wal_mb,
            memory_limit_mb=memory_limit_mb,
            max_restarts=writer_restarts,
        )
    from shopstream.warehouse.duckdb import DuckDBWarehouse

    return DuckDBWarehouse(
        path,
        read_only=read_only,
        checkpoint_wal_mb=checkpoint_wal_mb,
        memory_limit_mb=memory_limit_mb,
    )
