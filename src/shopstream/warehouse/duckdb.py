"""The embedded warehouse: one DuckDB file.

DuckDB allows one writer process per file, so a running platform owns the file and answers
queries for others (see :mod:`shopstream.runtime`). Within the process, each thread uses its
own cursor: the writer thread appends, request handlers read.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from itertools import count
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from shopstream.warehouse.base import LAYERS, WarehouseError, WarehouseHealth
from shopstream.warehouse.files import private_directory, private_umask, tighten, warehouse_files
from shopstream.warehouse.raw import json_columns, schema_for

_SQL_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.date32(): "DATE",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}

_SLOTS = ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7")

#: Statement types a query may contain; the warehouse's own writers are the only writers.
_READ_ONLY = {
    duckdb.StatementType.SELECT,
    duckdb.StatementType.EXPLAIN,
    duckdb.StatementType.PRAGMA,
}


def raw_table_ddl(table: str) -> str:
    schema = schema_for(table)
    as_json = json_columns(table)
    columns = []
    for field in schema:
        sql_type = "JSON" if field.name in as_json else _SQL_TYPES[field.type]
        null = "" if field.nullable else " NOT NULL"
        columns.append(f"    {field.name} {sql_type}{null}")
    body = ",\n".join(columns)
    return f"CREATE TABLE IF NOT EXISTS raw.{table} (\n{body}\n)"


def check_read_only(sql: str) -> None:
    """Refuse anything but reads: the query path must never change the warehouse."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise WarehouseError(f"cannot parse query: {exc}") from exc
    if not statements:
        raise WarehouseError("empty query")
    for statement in statements:
        if statement.type not in _READ_ONLY:
            raise WarehouseError(
                f"only read queries are allowed here, not {statement.type.name}: "
                "the warehouse is written by the pipeline alone"
            )


class DuckDBWarehouse:
    def __init__(
        self,
        path: Path,
        *,
        read_only: bool = False,
        checkpoint_wal_mb: int = 128,
        memory_limit_mb: int | None = None,
        check_modes: bool = True,
    ):
        """``check_modes``: make the directory and files private (see
        :mod:`shopstream.warehouse.files`); a writer process's parent has done it already."""
        self.path = path
        self.read_only = read_only
        temp_directory = path.with_name(path.name + ".tmp")
        if not read_only and check_modes:
            private_directory(path.parent)
            for existing in warehouse_files(path):
                tighten(existing)
        if not read_only:
            # Where DuckDB spills beyond its memory limit (its default place, made private
            # before DuckDB creates it with the process's umask).
            with private_umask():
                temp_directory.mkdir(exist_ok=True)
        config: dict[str, str | bool | int | float | list[str]] = {}
        if memory_limit_mb is not None:
            # Unset, DuckDB takes up to 80% of the machine's RAM (not the container's), and
            # keeps the blocks it wrote cached up to that: the writer's memory would follow
            # the size of the file. Given at connect, so even opening a large WAL obeys it.
            config["memory_limit"] = f"{int(memory_limit_mb)}MB"
        try:
            with private_umask():
                self._con = duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise WarehouseLocked(path, str(exc)) from exc
            raise WarehouseError(f"cannot open warehouse {path}: {exc}") from exc
        self._con.execute("SET TimeZone = 'UTC'")
        if not read_only:
            quoted = str(temp_directory).replace("'", "''")
            self._con.execute(f"SET temp_directory = '{quoted}'")
            # Automatic checkpoints stall commits for ~150 ms every 16 MB of WAL (the default);
            # the writer checkpoints when idle instead, and this bounds memory under load.
            self._con.execute(f"SET checkpoint_threshold = '{int(checkpoint_wal_mb)}MB'")
        self._local = threading.local()
        self._known_tables: set[str] = set()
        self._names = count()
        self._lock = threading.Lock()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._con.cursor()
            cursor.execute("SET TimeZone = 'UTC'")
            self._local.cursor = cursor
        return cursor

    def ensure_layers(self) -> None:
        with private_umask():  # DDL may create the WAL
            self._ensure_layers()

    def _ensure_layers(self) -> None:
        cursor = self._cursor()
        for layer in LAYERS:
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
        for table in ("events", "dead_letter"):
            self.ensure_raw_table(table)
        # A first staging view so re-sent events count once; the dbt project replaces it.
        cursor.execute(
            "CREATE VIEW IF NOT EXISTS staging.stg_events AS SELECT * FROM raw.events "
            "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY received_at) = 1"
        )

    def ensure_raw_table(self, table: str) -> None:
        if table in self._known_tables:
            return
        with self._lock, private_umask():
            self._cursor().execute(raw_table_ddl(table))
            self._known_tables.add(table)

    def append(self, batches: Mapping[str, pa.Table]) -> None:
        for table in batches:
            self.ensure_raw_table(table)
        parts = [(table, batch) for table, batch in batches.items() if batch.num_rows]
        if not parts:
            return
        if len(parts) > len(_SLOTS):
            self._append_registered(parts)
            return
        # One call into DuckDB per commit, its Arrow inputs found by name among these locals
        # (DuckDB's replacement scan): each call must win the GIL back from the event loop,
        # and five calls per commit (BEGIN, register, INSERT, COMMIT, unregister) took ~10 ms
        # where one takes ~6 (1,000 rows).
        b0, b1, b2, b3, b4, b5, b6, b7 = [batch for _, batch in parts] + [None] * (
            len(_SLOTS) - len(parts)
        )
        inserts = "; ".join(
            f"INSERT INTO raw.{table} SELECT * FROM {slot}"
            for (table, _), slot in zip(parts, _SLOTS, strict=False)
        )
        sql = inserts if len(parts) == 1 else f"BEGIN; {inserts}; COMMIT"
        cursor = self._cursor()
        try:
            with private_umask():  # the commit may create the WAL
                cursor.execute(sql)
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")  # may already have ended with the failure
            raise WarehouseError(f"append to raw failed: {exc}") from exc
        del b0, b1, b2, b3, b4, b5, b6, b7

    def _append_registered(self, parts: list[tuple[str, pa.Table]]) -> None:
        cursor = self._cursor()
        registered: list[str] = []
        try:
            cursor.execute("BEGIN TRANSACTION")
            for table, batch in parts:
                name = f"_append_{next(self._names)}"
                cursor.register(name, batch)
                registered.append(name)
                cursor.execute(f"INSERT INTO raw.{table} SELECT * FROM {name}")
            with private_umask():  # the commit may create the WAL
                cursor.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")  # may already have ended with the failure
            raise WarehouseError(f"append to raw failed: {exc}") from exc
        finally:
            for name in registered:
                cursor.unregister(name)

    def query(self, sql: str, parameters: list[Any] | None = None) -> pa.Table:
        check_read_only(sql)
        try:
            relation = self._cursor().sql(sql, params=parameters or None)
        except duckdb.Error as exc:
            raise WarehouseError(str(exc)) from exc
        if relation is None:
            return pa.table({})
        try:
            return relation.to_arrow_table()
        except duckdb.Error as exc:
            raise WarehouseError(str(exc)) from exc

    def table_counts(self) -> dict[str, int]:
        cursor = self._cursor()
        tables = cursor.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() ORDER BY 1, 2"
        ).fetchall()
        counts: dict[str, int] = {}
        for schema, table in tables:
            row = cursor.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()
            counts[f"{schema}.{table}"] = int(row[0]) if row else 0
        return counts

    def checkpoint(self) -> None:
        if not self.read_only:
            with private_umask():
                self._cursor().execute("CHECKPOINT")

    def health(self) -> WarehouseHealth:
        return WarehouseHealth()  # in this process: if it is down, so is the caller

    def close(self) -> None:
        with private_umask():
            self._con.close()


class WarehouseLocked(WarehouseError):
    """Another process (a running platform) holds the DuckDB file."""

    def __init__(self, path: Path, detail: str = "", *, message: str | None = None) -> None:
        super().__init__(
            message
            or f"{path} is open in another process (a running `shopstream run` or collector). "
            f"Query through it, or stop it first. ({detail})"
        )
        self.path = path


__all__ = ["DuckDBWarehouse", "WarehouseLocked", "check_read_only"]
