"""Warehouse backends behind one protocol; raw-layer table definitions."""

from __future__ import annotations

from pathlib import Path

from shopstream.warehouse.base import LAYERS, Warehouse, WarehouseError

__all__ = ["LAYERS", "Warehouse", "WarehouseError", "open_warehouse"]


def open_warehouse(
    path: Path, *, read_only: bool = False, checkpoint_wal_mb: int = 128
) -> Warehouse:
    """Open the embedded DuckDB warehouse (the only backend wired into settings so far)."""
    from shopstream.warehouse.duckdb import DuckDBWarehouse

    return DuckDBWarehouse(path, read_only=read_only, checkpoint_wal_mb=checkpoint_wal_mb)
