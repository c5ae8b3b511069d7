"""The Warehouse protocol on BigQuery (see the package's docstring for the URL forms)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import decimal
import logging
import threading
import time
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlglot
from google.api_core import exceptions as google_errors
from sqlglot import exp

from shopstream.events.raw import SOURCE_SCHEMAS
from shopstream.warehouse.base import (
    LAYERS,
    QueryError,
    QueryTimeout,
    WarehouseError,
    WarehouseHealth,
    WarehouseUnavailable,
)
from shopstream.warehouse.bigquery import CAPABILITIES, BigQueryLocation
from shopstream.warehouse.bigquery.appends import (
    CALL_TIMEOUT,
    StorageWrite,
    StreamingInsert,
    failure,
)
from shopstream.warehouse.bigquery.tables import TableLayout, check_rows, columns_of, raw_layout

if TYPE_CHECKING:
    from google.cloud import bigquery

    from shopstream.config import BigQuerySettings

log = logging.getLogger(__name__)

#: Seconds a health probe's answer is kept.
_HEALTH_SECONDS = 5.0

#: A raw table's own row id (insertAll's insert id: a resend is dropped, best effort).
_ROW_IDS = {"events": "event_id", "dead_letter": "dead_letter_id"}

#: Statements that change something; none may appear anywhere in a query.
_WRITES = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Command,
    exp.Transaction,
)


def check_read_only(sql: str) -> None:
    """Refuse anything but one SELECT (WITH ... SELECT, set operations of SELECTs), judged by
    sqlglot's BigQuery grammar. The second lock is BigQuery's own verdict: the dry run that
    precedes every query must call it a SELECT (see :meth:`BigQueryWarehouse.query`).

    >>> check_read_only("WITH t AS (SELECT 1 AS x) SELECT x FROM t")
    >>> check_read_only("DELETE FROM raw.events WHERE true")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    shopstream.warehouse.base.QueryError: only a read query ... not Delete: ...
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise QueryError(f"cannot parse query: {exc}") from exc
    if len(statements) != 1:
        raise QueryError(
            f"send exactly one statement (this query has {len(statements)})"
            if statements
            else "empty query: send one SELECT statement"
        )
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        raise QueryError(
            "only a read query (SELECT or WITH ... SELECT) is allowed here, not "
            f"{type(statement).__name__}: the warehouse is written by the pipeline alone"
        )
    for node in statement.walk():
        if isinstance(node, _WRITES):
            raise QueryError(f"a read query may not contain {type(node).__name__}")


class BigQueryWarehouse:
    capabilities = CAPABILITIES
    #: The SQL its ``query`` reads (callers that write DuckDB's translate: see
    #: :mod:`shopstream.quality.dialect`).
    sql_dialect = "bigquery"

    def __init__(
        self, where: BigQueryLocation, settings: BigQuerySettings, *, read_only: bool = False
    ) -> None:
        from google.cloud import bigquery

        self.where = where
        self.project = where.project
        self.settings = settings
        self.read_only = read_only
        options: dict[str, Any] = {"project": where.project, "location": where.location}
        if where.emulated:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials

            # An emulator only: Google's service never sees anonymous credentials from here.
            options["credentials"] = AnonymousCredentials()
            options["client_options"] = ClientOptions(api_endpoint=where.endpoint)
        # Otherwise application default credentials, as Google's libraries find them.
        self.client = bigquery.Client(**options)
        # The library's default retries a failing call for 10 minutes: nobody may wait that
        # long on a warehouse that is down (the sink's callers answer 503 and send again).
        self._retry = bigquery.DEFAULT_RETRY.with_timeout(CALL_TIMEOUT)
        self._storage_write: StorageWrite | None = None
        self._known: set[tuple[str, str]] = set()
        self._layouts: dict[tuple[str, str], TableLayout] = {}
        self._lock = threading.Lock()
        self._health = WarehouseHealth()
        self._health_at = -_HEALTH_SECONDS  # probe on the first call

    # -- tables --------------------------------------------------------------------------

    def ensure_layers(self, layers: Collection[str] = LAYERS) -> None:
        """Make sure of the datasets ``layers`` and, with ``raw``, the fixed raw tables: only
        what this role writes (:data:`~shopstream.warehouse.base.ROLE_LAYERS`). Under the
        least-privilege grants of deploy/terraform a role may not even see the other datasets,
        and BigQuery answers 403 for those, so they are never looked at."""
        from google.cloud import bigquery

        unknown = set(layers) - set(LAYERS)
        if unknown:
            raise ValueError(f"unknown layers {sorted(unknown)}: the layers are {list(LAYERS)}")
        for layer in LAYERS:
            if layer not in layers:
                continue
            dataset = bigquery.Dataset(f"{self.project}.{layer}")
            dataset.location = self.where.location
            self._call(
                lambda d=dataset, name=layer: self._made(
                    "dataset",
                    name,
                    lambda: self.client.get_dataset(d.reference, retry=self._retry),
                    lambda: self.client.create_dataset(d, exists_ok=True, retry=self._retry),
                ),
                layer,
            )
        if "raw" in layers:
            for table in ("events", "dead_letter", SOURCE_SCHEMAS):
                self.ensure_raw_table(table)

    def ensure_raw_table(self, table: str) -> None:
        self._ensure_table("raw", table, raw_layout(table))

    def _ensure_table(self, dataset: str, table: str, layout: TableLayout) -> None:
        from google.cloud import bigquery

        key = (dataset, table)
        if key in self._known:
            return
        definition = bigquery.Table(
            f"{self.project}.{dataset}.{table}",
            schema=[
                bigquery.SchemaField(c.name, c.type, mode="REQUIRED" if c.required else "NULLABLE")
                for c in layout.columns
            ],
        )
        if layout.partition_by:
            definition.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=layout.partition_by
            )
        if layout.cluster_by:
            definition.clustering_fields = list(layout.cluster_by)
        # exists_ok: a table made earlier (by this or another process) keeps its definition.
        self._call(
            lambda: self._made(
                "table",
                f"{dataset}.{table}",
                lambda: self.client.get_table(definition.reference, retry=self._retry),
                lambda: self.client.create_table(definition, exists_ok=True, retry=self._retry),
            ),
            f"{dataset}.{table}",
        )
        with self._lock:
            self._known.add(key)
            self._layouts[key] = layout

    def _made(self, kind: str, name: str, get: Any, create: Any) -> None:
        """Look before making: a role that only appends to a table (the loader, the quality
        checks) may not hold the right to create it, and BigQuery refuses a create without it
        even when the thing exists.

        A 403 on the look-up is not fatal: the operator provisions the datasets and raw tables
        (deploy/terraform), and BigQuery answers 403 ("Access Denied ... or it may not exist")
        to an account that may not read an object's metadata; the log says what was skipped,
        and an append to a table that is really missing fails then, naming it. A missing object
        that this account may not create is fatal, naming it and the permission it lacks."""
        dataset = name.split(".")[0]
        try:
            get()
            return
        except google_errors.NotFound:
            pass
        except google_errors.Forbidden as exc:
            log.warning(
                "skipped making sure of BigQuery %s %s.%s: this service account may not look it "
                "up (403 Forbidden: %s). It is expected to be provisioned by the operator "
                "(deploy/terraform); appends fail, naming it, if it is missing.",
                kind,
                self.project,
                name,
                exc.message,
            )
            return
        try:
            create()
        except google_errors.Forbidden as exc:
            if kind == "dataset":
                permission = "bigquery.datasets.create"
                grant = f"grant it {permission} on project {self.project}"
            else:
                permission = "bigquery.tables.create"
                grant = f"grant it roles/bigquery.dataEditor on dataset {dataset}"
            raise WarehouseUnavailable(
                f"BigQuery {kind} {self.project}.{name} does not exist and this service account "
                f"may not create it (403 Forbidden, missing {permission}: {exc.message}): "
                f"create it with deploy/terraform or {grant}"
            ) from exc

    def _layout(self, dataset: str, table: str) -> TableLayout:
        return self._layouts[(dataset, table)]

    def _forget(self, dataset: str, table: str) -> None:
        """A table that vanished: made again on the next append."""
        with self._lock:
            self._known.discard((dataset, table))

    # -- appends -------------------------------------------------------------------------

    def append(self, batches: Mapping[str, pa.Table]) -> None:
        """Append to raw tables one table at a time: each table's batch lands whole or not at
        all, but BigQuery cannot commit two tables together (``atomic_multi_table_append`` is
        false). A failure names the table; tables appended before it have landed."""
        self._writable()
        for table, batch in batches.items():
            self.ensure_raw_table(table)
            if batch.num_rows:
                self._append("raw", table, batch, _row_id(table))

    def _append(self, dataset: str, table: str, batch: pa.Table, row_id: str | None) -> None:
        columns = self._layout(dataset, table).columns
        check_rows(f"{dataset}.{table}", batch, columns)
        try:
            if self.settings.append == "streaming_insert":
                StreamingInsert(self.client, self.project).append(
                    dataset, table, batch, columns, row_id
                )
            else:
                self._writer().append(dataset, table, batch, columns)
        except WarehouseUnavailable:
            self._forget(dataset, table)  # it may have been dropped: made again next time
            raise

    def _writer(self) -> StorageWrite:
        if self._storage_write is None:
            from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

            if self.where.emulated:
                import grpc
                from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
                    BigQueryWriteGrpcTransport,
                )

                if not self.where.grpc:
                    raise WarehouseError(
                        "the Storage Write API of an emulator needs its gRPC address: add "
                        "&grpc=host:port to the warehouse URL (or set "
                        "SHOPSTREAM_BIGQUERY__APPEND=streaming_insert)"
                    )
                # An emulator's gRPC is plaintext, and it is only ever on this machine.
                channel = grpc.insecure_channel(self.where.grpc)
                transport = BigQueryWriteGrpcTransport(channel=channel)
                client = BigQueryWriteClient(transport=transport)
            else:
                client = BigQueryWriteClient()
            self._storage_write = StorageWrite(client, self.project, emulated=self.where.emulated)
        return self._storage_write

    def append_monitoring(
        self, table: str, batch: pa.Table, *, json_columns: Collection[str] = ()
    ) -> None:
        """Append to ``monitoring.<table>``, made from the batch's schema when missing. One
        table, so the rows land whole (one pending stream) or not at all."""
        self._append_made("monitoring", table, batch, json_columns)

    def append_mart(self, table: str, batch: pa.Table) -> None:
        """Append to ``mart.<table>`` (real-time aggregates), made from the batch's schema
        when missing; decimals become NUMERIC (or BIGNUMERIC when they do not fit)."""
        self._append_made("mart", table, batch, ())

    def _append_made(
        self, dataset: str, table: str, batch: pa.Table, json_columns: Collection[str]
    ) -> None:
        self._writable()
        layout = TableLayout(columns_of(batch.schema, json_columns, f"{dataset}.{table}"))
        self._ensure_table(dataset, table, layout)
        if batch.num_rows:
            self._append(dataset, table, batch, None)

    def _writable(self) -> None:
        if self.read_only:
            raise WarehouseError("this warehouse was opened read-only")

    # -- queries -------------------------------------------------------------------------

    def query(
        self,
        sql: str,
        parameters: list[Any] | None = None,
        *,
        max_rows: int | None = None,
        timeout_seconds: float | None = None,
    ) -> pa.Table:
        """Run one read. Two locks: :func:`check_read_only`, and BigQuery's dry run of the
        same query, which must call it a SELECT before it runs. ``bigquery.maximum_bytes_billed``
        makes a query that would scan more fail instead of costing it. ``timeout_seconds``:
        BigQuery stops the job after that long (``job_timeout_ms``) and we stop waiting."""
        check_read_only(sql)
        planned = self._dry_run(sql, parameters)
        if planned.statement_type not in (None, "SELECT"):
            raise QueryError(f"only a read query is allowed here, not {planned.statement_type}")
        job = self._job(sql, parameters, dry_run=False, timeout_seconds=timeout_seconds)
        try:
            rows = job.result(
                max_results=None if max_rows is None else max_rows + 1,
                timeout=CALL_TIMEOUT if timeout_seconds is None else timeout_seconds,
                retry=self._retry,
            )
            return rows.to_arrow(create_bqstorage_client=False)
        except (TimeoutError, concurrent.futures.TimeoutError) as exc:
            with contextlib.suppress(google_errors.GoogleAPIError):
                job.cancel()
            raise QueryTimeout(
                f"the query took longer than {timeout_seconds or CALL_TIMEOUT:g} s and was stopped"
            ) from exc
        except google_errors.BadRequest as exc:
            if timeout_seconds is not None and "timeout" in exc.message.lower():
                raise QueryTimeout(
                    f"the query took longer than {timeout_seconds:g} s and was stopped "
                    f"({exc.message})"
                ) from exc
            raise QueryError(exc.message) from exc
        except google_errors.GoogleAPIError as exc:
            raise WarehouseUnavailable(f"BigQuery did not answer the query: {exc}") from exc

    def dry_run_bytes(self, sql: str, parameters: list[Any] | None = None) -> int:
        """The bytes the read ``sql`` would scan (what on-demand pricing bills), from a dry run:
        nothing runs and nothing is billed. (bqemulator always answers 0.)"""
        check_read_only(sql)
        return int(self._dry_run(sql, parameters).total_bytes_processed or 0)

    def _dry_run(self, sql: str, parameters: list[Any] | None) -> bigquery.QueryJob:
        return self._job(sql, parameters, dry_run=True)

    def _job(
        self,
        sql: str,
        parameters: list[Any] | None,
        *,
        dry_run: bool,
        timeout_seconds: float | None = None,
    ) -> bigquery.QueryJob:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            dry_run=dry_run,
            job_timeout_ms=None if timeout_seconds is None else int(timeout_seconds * 1000),
            use_query_cache=not dry_run,
            query_parameters=[_parameter(value) for value in parameters or []],
            maximum_bytes_billed=self.settings.maximum_bytes_billed,
        )
        try:
            return self.client.query(
                sql, job_config=config, timeout=CALL_TIMEOUT, retry=self._retry, job_retry=None
            )
        except google_errors.BadRequest as exc:
            raise QueryError(exc.message) from exc
        except google_errors.GoogleAPIError as exc:
            raise WarehouseUnavailable(f"BigQuery did not take the query: {exc}") from exc

    def table_counts(self) -> dict[str, int]:
        """Rows per table, as ``dataset.table``, from the tables' metadata (free: no query)."""
        counts: dict[str, int] = {}
        for layer in LAYERS:
            try:
                tables = list(self.client.list_tables(f"{self.project}.{layer}", retry=self._retry))
            except google_errors.NotFound:
                continue
            except google_errors.GoogleAPIError as exc:
                raise WarehouseUnavailable(f"cannot list {layer}: {exc}") from exc
            for item in tables:
                table = self._call(
                    lambda t=item: self.client.get_table(t, retry=self._retry), item.table_id
                )
                counts[f"{layer}.{item.table_id}"] = int(table.num_rows or 0)
        return dict(sorted(counts.items()))

    def checkpoint(self) -> None:
        """Nothing to do: BigQuery keeps its own storage."""

    def health(self) -> WarehouseHealth:
        """``ok`` when the raw dataset answers; ``recovering`` when BigQuery cannot be reached
        now (a service: it comes back without us). Readiness and liveness probes call this
        often, from the collector's event loop: one probe (≤ 3 s) every 5 s, the answer kept
        in between."""
        now = time.monotonic()
        with self._lock:
            if now - self._health_at < _HEALTH_SECONDS:
                return self._health
        try:
            # One try: a probe answers now, and the next probe asks again.
            self.client.get_dataset(f"{self.project}.raw", timeout=3, retry=None)  # type: ignore[arg-type]
            health = WarehouseHealth()
        except google_errors.NotFound:
            health = WarehouseHealth()  # reachable; the layers are made at start
        except Exception as exc:
            health = WarehouseHealth("recovering", f"BigQuery does not answer: {exc}")
        with self._lock:
            self._health, self._health_at = health, time.monotonic()
        return health

    def close(self) -> None:
        self.client.close()
        if self._storage_write is not None:
            self._storage_write.client.transport.close()

    def _call(self, call: Any, where: str) -> Any:
        try:
            return call()
        except google_errors.GoogleAPIError as exc:
            raise failure(exc, where, emulated=self.where.emulated) from exc


def _row_id(table: str) -> str | None:
    return "change_id" if table.startswith("cdc_") else _ROW_IDS.get(table)


def _parameter(value: Any) -> Any:
    """A positional query parameter (``?`` in the SQL) of the type its Python value has; a list
    or tuple is an ARRAY of its first item's type (STRING when empty)."""
    from google.cloud import bigquery

    if isinstance(value, list | tuple):
        items = list(value)
        kind = _scalar_type(items[0]) if items else "STRING"
        return bigquery.ArrayQueryParameter(None, kind, items)
    return bigquery.ScalarQueryParameter(None, _scalar_type(value), value)


def _scalar_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, decimal.Decimal):
        return "NUMERIC"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, bytes):
        return "BYTES"
    return "STRING"


__all__ = ["BigQueryWarehouse", "check_read_only"]
