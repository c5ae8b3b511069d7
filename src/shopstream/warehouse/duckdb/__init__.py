"""The DuckDB backend: one embedded DuckDB file, ``duckdb:///path/to/file.duckdb``.

Everything DuckDB-specific lives in this package:

- :mod:`.database`: :class:`~.database.DuckDBWarehouse`, the Warehouse protocol on one
  DuckDB connection, with the raw tables' DDL and the read-only query checks;
- :mod:`.writer_process`: :class:`~.writer_process.WarehouseProcess`, the same protocol with
  DuckDB in a writer process of its own (off the collector's GIL), restarted if it dies;
- :mod:`.files`: the file modes (the warehouse holds personal data: 0600 / 0700);
- :mod:`.query_endpoint`: DuckDB lets one process open the file, so the running platform
  answers other processes' queries on a local socket.

Modules that load the duckdb library are imported only when a warehouse is opened: a writer
process's parent never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shopstream.warehouse import WarehouseBackend
from shopstream.warehouse.base import Capabilities, Warehouse, WarehouseError

if TYPE_CHECKING:
    from shopstream.config import Settings

SCHEME = "duckdb:///"

CAPABILITIES = Capabilities(
    single_writer_process=True,
    atomic_multi_table_append=True,
    checkpoints=True,
    dry_run_cost=False,
)


def duckdb_path(url: str) -> Path:
    """The file a ``duckdb:///`` URL names (``duckdb:////srv/w.duckdb``: absolute)."""
    if not url.startswith(SCHEME):
        raise ValueError(f"{url!r} is not a DuckDB URL: use duckdb:///path/to/file.duckdb")
    return Path(url.removeprefix(SCHEME))


def open_duckdb(
    path: Path,
    *,
    read_only: bool = False,
    checkpoint_wal_mb: int = 128,
    memory_limit_mb: int | None = None,
    own_process: bool = False,
    writer_restarts: int = 5,
) -> Warehouse:
    """Open the DuckDB file at ``path``.

    ``own_process``: run DuckDB in a writer process of its own (see :mod:`.writer_process`),
    so its work does not compete for this process's GIL; it is restarted up to
    ``writer_restarts`` times in a row if it dies. ``memory_limit_mb``: DuckDB's memory limit
    (none: DuckDB's default, 80% of the machine's RAM).
    """
    if own_process:
        from shopstream.warehouse.duckdb.writer_process import WarehouseProcess

        return WarehouseProcess(
            path,
            read_only=read_only,
            checkpoint_wal_mb=checkpoint_wal_mb,
            memory_limit_mb=memory_limit_mb,
            max_restarts=writer_restarts,
        )
    from shopstream.warehouse.duckdb.database import DuckDBWarehouse

    return DuckDBWarehouse(
        path,
        read_only=read_only,
        checkpoint_wal_mb=checkpoint_wal_mb,
        memory_limit_mb=memory_limit_mb,
    )


def _open(url: str, settings: Settings, read_only: bool) -> Warehouse:
    path = duckdb_path(url)
    if read_only:
        # A reader (``shopstream sql``) opens the file in its own process, briefly: no writer
        # process, and nothing to read until the platform has created the file.
        if not path.exists():
            raise WarehouseError(
                f"no warehouse at {path} yet: run `shopstream run` (or `make run`) first"
            )
        return open_duckdb(path, read_only=True)
    return open_duckdb(
        path,
        checkpoint_wal_mb=settings.sink.checkpoint_wal_mb,
        memory_limit_mb=settings.sink.memory_limit_mb,
        own_process=settings.sink.writer_process,
        writer_restarts=settings.sink.writer_restarts,
    )


BACKEND = WarehouseBackend("duckdb", CAPABILITIES, _open)

__all__ = ["BACKEND", "CAPABILITIES", "duckdb_path", "open_duckdb"]
