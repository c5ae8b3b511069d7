"""The two ways rows are appended to a BigQuery table, and what a failure means.

- :class:`StorageWrite` (the default, ``bigquery.append = storage_write``): the Storage Write
  API. Each table's batch goes to a PENDING write stream as Arrow record batches (up to ~8 MB
  per request; BigQuery's limit is 10 MB), the stream is finalized and committed at once: the
  batch becomes visible whole or, if anything failed before the commit, not at all.
- :class:`StreamingInsert` (``streaming_insert``): legacy ``tabledata.insertAll``, JSON rows with
  an insert id (the row's own id, so BigQuery's best-effort dedupe can drop a resend). Each
  request (≤ 5,000 rows) lands whole or not at all; a bigger batch is several requests, so a
  failure can leave the first ones landed: a resend then adds copies that staging removes (it
  keeps the first copy of each event_id / change_id).

A failure is either a refusal of the rows (:class:`WarehouseError`: a bad value, a schema
mismatch; sending them again cannot help, so it is never retried) or the service being
unreachable or overloaded (:class:`WarehouseUnavailable`: nothing was refused, send again
later). Neither is retried here: the caller (the sink's group commit, the loader) decides.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from google.api_core import exceptions as google_errors
from google.api_core import retry as retries

from shopstream.warehouse.base import WarehouseError, WarehouseUnavailable
from shopstream.warehouse.bigquery.tables import Column

if TYPE_CHECKING:
    from google.cloud import bigquery
    from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

#: Bytes of Arrow data per AppendRows request (BigQuery refuses requests over 10 MB).
REQUEST_BYTES = 8 * 1024 * 1024
#: Rows per insertAll request (BigQuery allows 50,000 and 10 MB; it advises about 500).
INSERT_ROWS = 5_000
#: Seconds one call may take before it counts as the service being unavailable.
CALL_TIMEOUT = 60.0

#: The Arrow type BigQuery takes for each of its types (Storage Write's Arrow format).
_WIRE_TYPES: dict[str, pa.DataType] = {
    "STRING": pa.string(),
    "JSON": pa.string(),
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "BOOL": pa.bool_(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATETIME": pa.timestamp("us"),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "BYTES": pa.binary(),
}


def bounded_retry() -> retries.Retry:
    """Transient failures retried for ``CALL_TIMEOUT`` seconds in all (the libraries' defaults
    go on for 10 to 20 minutes, while a collector's client waits for its answer)."""
    return retries.Retry(
        predicate=retries.if_transient_error, initial=0.2, maximum=5.0, timeout=CALL_TIMEOUT
    )


def failure(exc: Exception, where: str, *, emulated: bool = False) -> WarehouseError:
    """What a client library's error means for the rows sent to ``where``."""
    refused: tuple[type[Exception], ...] = (google_errors.BadRequest,)
    if emulated:
        # bqemulator answers UNKNOWN for a value its DuckDB cannot store. From Google's
        # service UNKNOWN is what gRPC reports for a connection-level failure ("Stream
        # removed"): taking it as a refusal would dead-letter a whole batch of valid rows.
        refused += (google_errors.Unknown,)
    if isinstance(exc, refused):
        # 400s (InvalidArgument, FailedPrecondition, OutOfRange) refuse the request's rows:
        # sending the same rows again cannot help.
        return WarehouseError(f"BigQuery refused the rows for {where}: {exc.message}")  # type: ignore[attr-defined]
    if isinstance(exc, google_errors.NotFound):
        return WarehouseUnavailable(f"{where} does not exist (deleted?): {exc.message}")
    if isinstance(exc, google_errors.GoogleAPIError):
        return WarehouseUnavailable(f"BigQuery did not take the rows for {where}: {exc}")
    return WarehouseUnavailable(f"BigQuery could not be reached for {where}: {exc}")


def wire_batch(batch: pa.Table, columns: tuple[Column, ...]) -> pa.Table:
    """``batch`` with the table's columns in order, each of the Arrow type BigQuery takes."""
    present = set(batch.column_names)
    fields, arrays = [], []
    for column in columns:
        if column.name not in present:
            continue
        kind = _WIRE_TYPES[column.type]
        values = batch.column(column.name)
        arrays.append(values if values.type == kind else values.cast(kind))
        fields.append(pa.field(column.name, kind, nullable=not column.required))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class StorageWrite:
    """Appends through the Storage Write API: one pending stream per table and batch."""

    def __init__(self, client: BigQueryWriteClient, project: str, *, emulated: bool) -> None:
        self.client = client
        self.project = project
        self.emulated = emulated

    def append(
        self, dataset: str, table: str, batch: pa.Table, columns: tuple[Column, ...]
    ) -> None:
        from google.cloud.bigquery_storage_v1 import types

        where = f"{dataset}.{table}"
        rows = wire_batch(batch, columns)
        parent = self.client.table_path(self.project, dataset, table)
        try:
            stream = self.client.create_write_stream(
                parent=parent,
                write_stream=types.WriteStream(type_=types.WriteStream.Type.PENDING),
                retry=bounded_retry(),
                timeout=CALL_TIMEOUT,
            )
            # The routing header Google's own writer sends: the service finds the stream's
            # region by it. The stream is named on every request (bqemulator needs it).
            responses = self.client.append_rows(
                iter(list(self._requests(stream.name, rows))),
                metadata=(("x-goog-request-params", f"write_stream={stream.name}"),),
                timeout=CALL_TIMEOUT,
            )
            for response in responses:
                _check_append(response, where, emulated=self.emulated)
            self.client.finalize_write_stream(
                name=stream.name, retry=bounded_retry(), timeout=CALL_TIMEOUT
            )
            committed = self.client.batch_commit_write_streams(
                types.BatchCommitWriteStreamsRequest(parent=parent, write_streams=[stream.name]),
                retry=bounded_retry(),
                timeout=CALL_TIMEOUT,
            )
        except google_errors.GoogleAPIError as exc:
            # The stream was not committed: none of its rows will ever be visible.
            raise failure(exc, where, emulated=self.emulated) from exc
        if committed.stream_errors:
            detail = "; ".join(error.error_message for error in committed.stream_errors)
            raise WarehouseUnavailable(f"BigQuery did not commit the rows for {where}: {detail}")

    def _requests(self, stream: str, rows: pa.Table) -> Iterator[Any]:
        from google.cloud.bigquery_storage_v1 import types

        schema = types.ArrowSchema(serialized_schema=rows.schema.serialize().to_pybytes())
        per_request = max(1, rows.num_rows * REQUEST_BYTES // max(rows.nbytes, 1))
        offset = 0
        for start in range(0, rows.num_rows, per_request):
            for batch in rows.slice(start, per_request).combine_chunks().to_batches():
                data = types.AppendRowsRequest.ArrowData(
                    rows=types.ArrowRecordBatch(
                        serialized_record_batch=batch.serialize().to_pybytes(),
                        row_count=batch.num_rows,
                    )
                )
                if offset == 0:
                    data.writer_schema = schema
                # The offset makes a resent request a no-op instead of a copy.
                yield types.AppendRowsRequest(write_stream=stream, offset=offset, arrow_rows=data)
                offset += batch.num_rows


def _check_append(response: Any, where: str, *, emulated: bool) -> None:
    if response.row_errors:
        first = response.row_errors[0]
        raise WarehouseError(
            f"BigQuery refused row {first.index} for {where}: {first.message} "
            f"({len(response.row_errors)} row(s) refused)"
        )
    if response.error.code:
        raise failure(
            google_errors.from_grpc_status(response.error.code, response.error.message),
            where,
            emulated=emulated,
        )


class StreamingInsert:
    """Appends through legacy streaming inserts (``tabledata.insertAll``)."""

    def __init__(self, client: bigquery.Client, project: str) -> None:
        self.client = client
        self.project = project

    def append(
        self,
        dataset: str,
        table: str,
        batch: pa.Table,
        columns: tuple[Column, ...],
        row_id: str | None = None,
    ) -> None:
        from google.cloud.bigquery import AutoRowIDs

        where = f"{dataset}.{table}"
        rows = [_json_row(row) for row in batch.to_pylist()]
        ids = [str(row[row_id]) for row in rows] if row_id else None
        reference = f"{self.project}.{dataset}.{table}"
        for start in range(0, len(rows), INSERT_ROWS):
            part = rows[start : start + INSERT_ROWS]
            try:
                # retry=None: the library would retry a 5xx for minutes (bqemulator answers
                # 500 for a bad value); the caller decides what to do with a failure.
                errors = self.client.insert_rows_json(
                    reference,
                    part,
                    row_ids=ids[start : start + INSERT_ROWS] if ids else AutoRowIDs.GENERATE_UUID,
                    skip_invalid_rows=False,
                    retry=None,  # type: ignore[arg-type]
                    timeout=CALL_TIMEOUT,
                )
            except google_errors.GoogleAPIError as exc:
                raise failure(exc, where) from exc
            if errors:
                raise WarehouseError(
                    f"BigQuery refused rows for {where}: {_insert_errors(errors, start)}"
                )


def _insert_errors(errors: Sequence[Mapping[str, Any]], start: int) -> str:
    """insertAll's per-row errors, the refused ones first (the others were only stopped)."""
    described = []
    for entry in errors:
        for error in entry.get("errors", []):
            if error.get("reason") == "stopped":
                continue
            column = f" column {error['location']}" if error.get("location") else ""
            described.append(f"row {start + entry['index']}{column}: {error.get('message')}")
    return "; ".join(described[:5]) or "the request was stopped"


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {name: _json_value(value) for name, value in row.items()}


def _json_value(value: Any) -> Any:
    """A value as insertAll takes it: times in ISO 8601, exact decimals as text."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value
