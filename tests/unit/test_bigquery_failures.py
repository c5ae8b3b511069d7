"""What a BigQuery client error means for the rows it was sending: refused (never sent again)
or unavailable (sent again later). Google's errors are built here as the client raises them;
no service is involved."""

from __future__ import annotations

from google.api_core import exceptions as google_errors

from shopstream.warehouse.base import WarehouseError, WarehouseUnavailable
from shopstream.warehouse.bigquery.appends import failure


def test_an_invalid_argument_refuses_the_rows() -> None:
    error = failure(google_errors.BadRequest("bad value in column total"), "raw.events")
    assert type(error) is WarehouseError
    assert "refused the rows for raw.events" in str(error)


def test_unknown_from_google_is_a_connection_failure_not_a_refusal() -> None:
    """gRPC reports connection-level failures ("Stream removed") as UNKNOWN: taking them as
    refusals would dead-letter every valid row of the batch."""
    error = failure(google_errors.Unknown("Stream removed"), "raw.events")
    assert isinstance(error, WarehouseUnavailable)


def test_unknown_from_the_emulator_refuses_the_rows() -> None:
    """bqemulator answers UNKNOWN for a value its DuckDB cannot store."""
    error = failure(google_errors.Unknown("Conversion Error"), "raw.events", emulated=True)
    assert type(error) is WarehouseError


def test_a_service_error_leaves_the_rows_for_later() -> None:
    error = failure(google_errors.ServiceUnavailable("try again"), "raw.events")
    assert isinstance(error, WarehouseUnavailable)
