"""The embedded warehouse: one DuckDB file.

DuckDB allows one writer process per file, so a running platform owns the file and answers
queries for others (see :mod:`shopstream.runtime`). Within the process, each thread uses its
own cursor: the writer thread appends, request handlers read.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable, Collection, Mapping
from itertools import count, pairwise
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from shopstream.events.raw import SOURCE_SCHEMAS, json_columns, schema_for
from shopstream.warehouse.base import (
    LAYERS,
    QueryError,
    QueryTimeout,
    WarehouseError,
    WarehouseHealth,
    WarehouseInUse,
)
from shopstream.warehouse.duckdb import CAPABILITIES
from shopstream.warehouse.duckdb.files import (
    private_directory,
    private_umask,
    tighten,
    warehouse_files,
)
from shopstream.warehouse.duckdb.owner_jobs import owner_job

_SQL_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.date32(): "DATE",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}
#: Monitoring and mart tables made from their rows' Arrow schema (``append_monitoring``,
#: ``append_mart``): these types, the raw ones and exact decimals (see :func:`_made_sql_type`).
_MADE_TYPES = {
    **_SQL_TYPES,
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.int32(): "INTEGER",
}
#: Names a made table or column may have (they are written into DDL).
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: What a query may be: one statement DuckDB's parser calls SELECT (which covers WITH,
#: FROM-first, VALUES, TABLE, DESCRIBE, SHOW and SUMMARIZE) or an EXPLAIN of one.
_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}

#: Types a query answers as DuckDB's text for them: Arrow cannot carry UHUGEINT (its maximum
#: came out as -1), and BIT, BIGNUM, INTERVAL and BLOB arrive as bytes or objects JSON has
#: no word for.
_AS_TEXT = {"UHUGEINT", "BIT", "BIGNUM", "VARINT", "INTERVAL", "BLOB"}

#: Rows DuckDB hands over at a time while a capped result is read.
_FETCH_BATCH_ROWS = 2048


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


def made_table_ddl(
    layer: str, table: str, schema: pa.Schema, json_columns: Collection[str] = ()
) -> str:
    """``CREATE TABLE IF NOT EXISTS <layer>.<table>`` with ``schema``'s columns (a monitoring
    or mart table that the platform writes itself, not dbt).

    >>> print(made_table_ddl("monitoring", "checks", pa.schema([pa.field("run_id", pa.string(),
    ...     nullable=False), pa.field("observed", pa.float64()), pa.field("details", pa.string()),
    ...     pa.field("revenue", pa.decimal128(38, 4))]), json_columns={"details"}))
    CREATE TABLE IF NOT EXISTS monitoring.checks (
        run_id VARCHAR NOT NULL,
        observed DOUBLE,
        details JSON,
        revenue DECIMAL(38, 4)
    )
    """
    names = [table, *schema.names]
    bad = [name for name in names if not _PLAIN_NAME.fullmatch(name)]
    if bad:
        raise WarehouseError(
            f"{layer}.{table}: {bad[0]!r} is not a plain name (lower-case letters, digits, _)"
        )
    columns = []
    for field in schema:
        sql_type = "JSON" if field.name in json_columns else _made_sql_type(field.type)
        if sql_type is None:
            raise WarehouseError(
                f"{layer}.{table}.{field.name}: no warehouse type for Arrow type {field.type}"
            )
        null = "" if field.nullable else " NOT NULL"
        columns.append(f"    {field.name} {sql_type}{null}")
    body = ",\n".join(columns)
    return f"CREATE TABLE IF NOT EXISTS {layer}.{table} (\n{body}\n)"


def _made_sql_type(arrow_type: pa.DataType) -> str | None:
    """Money stays exact: an Arrow decimal becomes DuckDB's DECIMAL of the same digits."""
    if pa.types.is_decimal128(arrow_type):
        return f"DECIMAL({arrow_type.precision}, {arrow_type.scale})"
    return _MADE_TYPES.get(arrow_type)


def check_read_only(sql: str) -> None:
    """Refuse anything but one read, judged by DuckDB's own parser.

    This is the first of three locks (see :meth:`DuckDBWarehouse.query`): a statement DuckDB
    calls SELECT can still write (``WITH x AS (DELETE ... RETURNING *) SELECT ...``) or read
    files (``read_csv``), which the read-only transaction and the closed file system stop.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse query: {exc}") from exc
    if len(statements) != 1:
        raise QueryError(
            f"send exactly one statement (this query has {len(statements)})"
            if statements
            else "empty query: send one SELECT statement"
        )
    statement = statements[0]
    _refuse_acting_functions(sql)
    if statement.type not in _READ_ONLY:
        raise QueryError(
            "only read queries are allowed here (SELECT, WITH, EXPLAIN, DESCRIBE, SHOW, "
            f"SUMMARIZE), not {statement.type.name}: the warehouse is written by the pipeline "
            "alone"
        )
    if statement.type == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs what it explains: only a read may be explained.
        explained = _explained(statement.query)
        try:
            inner = duckdb.extract_statements(explained) if explained else []
        except duckdb.Error:
            inner = []
        if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
            raise QueryError("EXPLAIN may only explain a read (one SELECT statement)")


#: Table functions a read may call. Others act while they are read (``checkpoint()`` writes the
#: file, ``enable_logging()``, ``query('...')`` runs a string the checks never saw): refused.
_READ_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "repeat_row",
        "json_each",
        "json_tree",
        "show",
        "show_tables",
        "show_tables_expanded",
        "show_databases",
        "summary",
        "table_info",
        "pragma_table_info",
        "pragma_show",
        "database_size",
        "pragma_database_size",
        "storage_info",
        "pragma_storage_info",
        "metadata_info",
        "pragma_metadata_info",
        "version",
        "pragma_version",
        "platform",
        "pragma_platform",
        "collations",
        "pragma_collations",
        "functions",
        "test_all_types",
        "test_vector_types",
        "pg_timezone_names",
        "icu_calendar_names",
        "database_list",
    }
)


@functools.cache
def _table_functions() -> frozenset[str]:
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
            "WHERE function_type IN ('table', 'table_macro', 'pragma')"
        ).fetchall()
    return frozenset(name for (name,) in rows)


def _refuse_acting_functions(sql: str) -> None:
    """Refuse calls of table functions that are not plain reads, wherever they stand.

    Judged on DuckDB's tokens (a name followed by ``(``), so it also covers statements that
    DuckDB cannot serialise (PIVOT) and a function named in quotes or with a schema.
    """
    known = _table_functions()
    for (_, kind, text), (_, _, following) in pairwise(_tokens(sql)):
        if following != "(" or kind not in (
            duckdb.token_type.identifier,
            duckdb.token_type.keyword,
        ):
            continue
        name = text.strip('"').lower()
        if (name.startswith("duckdb_") and name != "duckdb_secrets") or name not in known:
            continue
        if name not in _READ_TABLE_FUNCTIONS:
            raise QueryError(
                f"{name}() is not allowed here: it reads files or acts beyond a plain read "
                "of the warehouse's tables"
            )


def _tokens(sql: str) -> list[tuple[int, Any, str]]:
    """DuckDB's own tokens of ``sql`` (position, kind, text), comments left out."""
    found = duckdb.tokenize(sql)
    ends = [position for position, _ in found[1:]] + [len(sql)]
    return [
        (position, kind, sql[position:end].strip())
        for (position, kind), end in zip(found, ends, strict=True)
        if kind != duckdb.token_type.comment
    ]


def _explained(sql: str) -> str:
    """The statement after ``EXPLAIN [ANALYZE] [(options)]``, found with DuckDB's tokenizer."""
    tokens = [(position, text) for position, _, text in _tokens(sql)]
    if not tokens or tokens[0][1].upper() != "EXPLAIN":
        return ""
    index = 1
    if index < len(tokens) and tokens[index][1].upper() in ("ANALYZE", "ANALYSE"):
        index += 1
    if index < len(tokens) and tokens[index][1].startswith("("):
        depth = 0
        while index < len(tokens):
            text = tokens[index][1]
            depth += text.count("(") - text.count(")")
            index += 1
            if depth <= 0:
                break
    return sql[tokens[index][0] :] if index < len(tokens) else ""


def _as_text_where_lossy(relation: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    lossy = [str(kind) in _AS_TEXT for kind in relation.types]
    if not any(lossy):
        return relation
    # Columns by position (#n): a result may have two columns of the same name.
    columns = []
    for position, (name, text) in enumerate(zip(relation.columns, lossy, strict=True), 1):
        alias = '"' + name.replace('"', '""') + '"'
        columns.append(f"#{position}::VARCHAR AS {alias}" if text else f"#{position} AS {alias}")
    return relation.project(", ".join(columns))


class DuckDBWarehouse:
    capabilities = CAPABILITIES

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
        :mod:`shopstream.warehouse.duckdb.files`); a writer process's parent has done it already."""
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
        #: What duckdb.connect was given: a second connect in this process (dbt's) gets this
        #: same DuckDB instance only when its config equals it exactly.
        self.connect_config: dict[str, Any] = dict(config)
        try:
            with private_umask():
                self._con = duckdb.connect(str(path), read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise WarehouseLocked(path, str(exc)) from exc
            raise WarehouseError(f"cannot open warehouse {path}: {exc}") from exc
        self._con.execute("SET GLOBAL TimeZone = 'UTC'")
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
        self._close_the_outside()

    def _close_the_outside(self) -> None:
        """No file outside the warehouse, no extension, no setting change from here on.

        Both settings are per DuckDB instance, so they hold for the pipeline's own writes too:
        it needs only its file, its WAL and spilling (which stay allowed). Python replacement
        scans count as external access, so appends register their Arrow batches by name.
        Every other setting must be made before this (the lock refuses later ones).
        """
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._con.cursor()  # inherits the global TimeZone set at open
            self._local.cursor = cursor
        return cursor

    def ensure_layers(self, layers: Collection[str] = LAYERS) -> None:
        """All four layers whatever ``layers`` says: one file, no permissions per layer."""
        with private_umask():  # DDL may create the WAL
            self._ensure_layers()

    def _ensure_layers(self) -> None:
        cursor = self._cursor()
        for layer in LAYERS:
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
        for table in ("events", "dead_letter", SOURCE_SCHEMAS):
            self.ensure_raw_table(table)

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
        cursor = self._cursor()
        registered: list[str] = []
        several = len(parts) > 1
        try:
            with private_umask():  # the commit may create the WAL
                if several:
                    cursor.execute("BEGIN TRANSACTION")
                for table, batch in parts:
                    name = f"_append_{next(self._names)}"
                    cursor.register(name, batch)
                    registered.append(name)
                    cursor.execute(f"INSERT INTO raw.{table} SELECT * FROM {name}")
                if several:
                    cursor.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")  # may already have ended with the failure
            raise WarehouseError(f"append to raw failed: {exc}") from exc
        finally:
            for name in registered:
                cursor.unregister(name)

    def append_monitoring(
        self, table: str, batch: pa.Table, *, json_columns: Collection[str] = ()
    ) -> None:
        """Append ``batch`` to ``monitoring.<table>`` (made from its schema if missing), in
        one transaction with the DDL: the rows land whole or not at all."""
        self._append_made("monitoring", table, batch, json_columns)

    def append_mart(self, table: str, batch: pa.Table) -> None:
        """Append ``batch`` to ``mart.<table>`` (made from its schema if missing), in one
        transaction with the DDL, as :meth:`append_monitoring` does."""
        self._append_made("mart", table, batch, ())

    def _append_made(
        self, layer: str, table: str, batch: pa.Table, json_columns: Collection[str]
    ) -> None:
        ddl = made_table_ddl(layer, table, batch.schema, json_columns)
        if not batch.num_rows:
            return
        cursor = self._cursor()
        name = f"_{layer}_{next(self._names)}"
        try:
            with self._lock, private_umask():  # the commit may create the WAL
                cursor.execute("BEGIN TRANSACTION")
                cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
                cursor.execute(ddl)
                cursor.register(name, batch)
                # By name: the table's column order is its own once it exists.
                cursor.execute(f"INSERT INTO {layer}.{table} BY NAME SELECT * FROM {name}")
                cursor.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
            raise WarehouseError(f"append to {layer}.{table} failed: {exc}") from exc
        finally:
            with contextlib.suppress(duckdb.Error):
                cursor.unregister(name)

    def query(
        self,
        sql: str,
        parameters: list[Any] | None = None,
        *,
        max_rows: int | None = None,
        timeout_seconds: float | None = None,
    ) -> pa.Table:
        """Run one read. With ``max_rows``, at most ``max_rows + 1`` rows come back (the extra
        one tells the caller there were more), read from DuckDB in batches as they stream,
        so a huge result is never held whole. With ``timeout_seconds``, a timer interrupts it
        (DuckDB's ``interrupt()`` of its connection) and :class:`QueryTimeout` says so.

        Three locks keep it a read: the statement allow-list (:func:`check_read_only`), a
        READ ONLY transaction that is always rolled back, and an instance that cannot touch
        files or change its settings (:meth:`_close_the_outside`).
        """
        check_read_only(sql)
        # A connection of its own per query: nothing a previous query left open carries over.
        cursor = self._con.cursor()
        timer = None
        if timeout_seconds is not None:
            timer = threading.Timer(timeout_seconds, cursor.interrupt)
            timer.daemon = True
            timer.start()
        try:
            cursor.execute("BEGIN TRANSACTION READ ONLY")
            relation = cursor.sql(sql, params=parameters or None)
            if relation is None:
                return pa.table({})
            reader = _as_text_where_lossy(relation).to_arrow_reader(_FETCH_BATCH_ROWS)
            try:
                schema = reader.schema
                batches = []
                rows = 0
                for batch in reader:
                    batches.append(batch)
                    rows += batch.num_rows
                    if max_rows is not None and rows > max_rows:
                        break
            finally:
                reader.close()
            table = pa.Table.from_batches(batches, schema=schema)
            return table if max_rows is None else table.slice(0, max_rows + 1)
        except (duckdb.Error, pa.ArrowException) as exc:
            if timer is not None and timer.finished.is_set():
                raise QueryTimeout(
                    f"the query took longer than {timeout_seconds:g} s and was stopped"
                ) from exc
            raise QueryError(str(exc)) from exc
        finally:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
            cursor.close()

    def dry_run_bytes(self, sql: str, parameters: list[Any] | None = None) -> int:
        """DuckDB has no dry run (``capabilities.dry_run_cost`` is false): callers estimate."""
        raise QueryError("no dry run: ask capabilities.dry_run_cost")

    def table_counts(self) -> dict[str, int]:
        cursor = self._cursor()
        tables = cursor.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() ORDER BY 1, 2"
        ).fetchall()
        counts: dict[str, int] = {}
        for schema, table in tables:
            # fetchall, not fetchone: DuckDB 2 keeps a result open until a fetch comes back
            # empty, and the cursor's next statement would fail on it.
            rows = cursor.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchall()
            counts[f"{schema}.{table}"] = int(rows[0][0]) if rows else 0
        return counts

    def checkpoint(self) -> None:
        if not self.read_only:
            with private_umask():
                self._cursor().execute("CHECKPOINT")

    def run_in_owner(self, target: str, argument: Any, on_message: Callable[[Any], None]) -> Any:
        """Run ``target`` (``"module:function"``, called as ``function(warehouse, argument,
        emit)``) here, in the process that holds the file (see :mod:`.owner_jobs`)."""
        return owner_job(target)(self, argument, on_message)

    def health(self) -> WarehouseHealth:
        return WarehouseHealth()  # in this process: if it is down, so is the caller

    def close(self) -> None:
        with private_umask():
            self._con.close()


class WarehouseLocked(WarehouseInUse):
    """Another process (a running platform) holds the DuckDB file."""

    def __init__(self, path: Path, detail: str = "", *, message: str | None = None) -> None:
        super().__init__(
            message
            or f"{path} is open in another process (a running `shopstream run` or collector). "
            f"Query through it, or stop it first. ({detail})"
        )
        self.path = path


__all__ = ["DuckDBWarehouse", "WarehouseLocked", "check_read_only", "made_table_ddl"]
