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
    own_process: bool = False,
) -> Warehouse:
    """Open the embedded DuckDB warehouse (the only backend wired into settings so far).

    ``own_process``: run DuckDB in a writer process of its own (see
    :mod:`shopstream.warehouse.writer`), so its work does not compete for this process's GIL.
    """
    if own_process:
        from shopstream.warehouse.writer import WarehouseProcess

        return WarehouseProcess(path, read_only=read_only, checkpoint_wal_mb=checkpoint_wal_mb)
    from shopstream.warehouse.duckdb import DuckDBWarehouse

    return DuckDBWarehouse(path, read_only=read_only, checkpoint_wal_mb=checkpoint_wal_mb)
