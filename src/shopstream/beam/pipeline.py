"""The pipeline's transforms: decode → raw (+ dead letters) and the real-time aggregates.

``messages`` (a PCollection of :class:`~shopstream.loader.base.Received`, from Pub/Sub or a
test's TestStream) go through :func:`build`:

- :class:`DecodeMessages`: :func:`shopstream.events.messages.decode`, the loader's own
  validation; a poison message leaves on the tagged output ``dead_letter`` as a
  ``raw.dead_letter`` row (:func:`~shopstream.events.messages.dead_letter_for`, with the
  reason), a tombstone is dropped (nothing to load).
- :class:`AppendRaw`: rows and dead letters, batched per bundle, appended through the
  Warehouse protocol (``open_warehouse(settings)``: DuckDB locally, BigQuery on Dataflow). A
  failed append fails the bundle, so the runner retries it (at least once into raw; staging
  removes the duplicates by event and change id). A batch the warehouse refuses as bad
  (not unavailable) is appended row by row, and a row it refuses alone becomes a dead letter:
  a schema error is reported, not retried forever.
- :class:`ActivityOf`: events per fixed window of ``received_at`` (the collector's clock:
  clients' clocks cannot be trusted to order a stream), by event type and device type, with
  the revenue of purchases as an exact decimal, appended to ``mart.realtime_activity``. The
  window fires when the watermark passes its end, and again for each late event up to
  ``beam.allowed_lateness_seconds`` later (accumulating: the highest ``pane_index`` of a
  window holds its totals); later events are in raw but in no aggregate.
"""

from __future__ import annotations

import atexit
import json
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms import trigger, window
from apache_beam.utils.windowed_value import PaneInfoTiming

from shopstream.beam import ACTIVITY_TABLE
from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.messages import (
    Topics,
    dead_letter_for,
    dead_letter_id,
    decode_or_reason,
)
from shopstream.events.raw import TS, schema_for
from shopstream.loader.base import Received
from shopstream.warehouse import Warehouse, WarehouseError, WarehouseUnavailable, open_warehouse
from shopstream.warehouse.base import ROLE_LAYERS

if TYPE_CHECKING:
    from shopstream.config import Settings

DEAD_LETTER = "dead_letter"

#: ``mart.realtime_activity``: one row per window, event type, device type and pane.
ACTIVITY_SCHEMA = pa.schema(
    [
        pa.field("window_start", TS, nullable=False),
        pa.field("window_end", TS, nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("device_type", pa.string()),
        pa.field("events", pa.int64(), nullable=False),
        # Sums of purchases' revenue (18 digits, 4 places each): exact, never a float.
        pa.field("revenue", pa.decimal128(38, 4), nullable=False),
        # 0 for the on-time firing, 1, 2, ... for each late one (each holds the totals so far).
        pa.field("pane_index", pa.int64(), nullable=False),
        pa.field("timing", pa.string(), nullable=False),  # EARLY, ON_TIME, LATE
        pa.field("computed_at", TS, nullable=False),
    ]
)

#: The settings a worker needs to open the warehouse: never the secrets (write keys, salts,
#: model keys), which would travel in the pipeline's serialised graph.
WAREHOUSE_SETTINGS = {"data_dir", "warehouse_url", "sink", "bigquery"}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def warehouse_settings(settings: Settings) -> dict[str, Any]:
    """What :class:`AppendRaw` and :class:`AppendActivity` carry to the workers."""
    dumped: dict[str, Any] = settings.model_dump(mode="json", include=WAREHOUSE_SETTINGS)
    return dumped


# -- the warehouse, shared within a worker process ---------------------------------------------


class _SharedWarehouse:
    """One warehouse per worker process and settings, however many DoFns write to it, open
    until the process ends: runners may set a DoFn up and tear it down for every bundle (the
    DirectRunner does), and opening a warehouse per bundle would cost more than the bundle
    (DuckDB: a writer process; BigQuery: a client). DuckDB also lets one connection set
    hold the file."""

    _lock = threading.Lock()
    _open: dict[str, Warehouse] = {}  # noqa: RUF012 (process-wide on purpose)

    @classmethod
    def get(cls, settings: Mapping[str, Any]) -> Warehouse:
        from shopstream.config import Settings

        key = json.dumps(settings, sort_keys=True)
        with cls._lock:
            if key not in cls._open:
                if not cls._open:
                    atexit.register(cls.close_all)
                warehouse = open_warehouse(Settings.model_validate(settings))
                # Only what the workers write (Dataflow's account sees raw and mart alone).
                warehouse.ensure_layers(ROLE_LAYERS["beam"])
                cls._open[key] = warehouse
            return cls._open[key]

    @classmethod
    def opened(cls) -> list[Warehouse]:
        with cls._lock:
            return list(cls._open.values())

    @classmethod
    def close_all(cls) -> None:
        with cls._lock:
            opened, cls._open = cls._open, {}
        for warehouse in opened.values():
            warehouse.close()


def opened_warehouses() -> list[Warehouse]:
    """The warehouses this process's DoFns write to (for a local run's progress)."""
    return _SharedWarehouse.opened()


def close_warehouses() -> None:
    """Close this process's warehouses now (they are closed at exit otherwise)."""
    _SharedWarehouse.close_all()


class _BatchedAppend(beam.DoFn):
    """Collects a bundle's elements and appends them in batches of at most ``batch_rows``;
    the bundle is done only when its last batch is durable."""

    def __init__(self, settings: Mapping[str, Any], batch_rows: int) -> None:
        self._settings = dict(settings)
        self._batch_rows = batch_rows
        self._warehouse: Warehouse | None = None
        self._pending: list[Any] = []

    def setup(self) -> None:
        self._warehouse = _SharedWarehouse.get(self._settings)

    def start_bundle(self) -> None:
        self._pending = []

    def process(self, element: Any) -> None:
        self._pending.append(element)
        if len(self._pending) >= self._batch_rows:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._pending:
            assert self._warehouse is not None, "setup opens the warehouse"
            self._append(self._warehouse, self._pending)
            self._pending = []

    def _append(self, warehouse: Warehouse, elements: list[Any]) -> None:
        raise NotImplementedError


# -- decode → raw --------------------------------------------------------------------------------


class DecodeMessages(beam.DoFn):
    """A message → ``(raw table, row)``; a poison one → ``("dead_letter", row)`` on the
    tagged output :data:`DEAD_LETTER`; a tombstone → nothing."""

    def __init__(self, topics: Topics) -> None:
        self._topics = topics

    def process(self, message: Received) -> Iterator[Any]:
        # Never raises: an error here would fail the bundle and Beam would retry it for ever.
        decoded, reason = decode_or_reason(
            message.topic, message.key, message.value, message.headers, self._topics
        )
        if reason is not None:
            row = dead_letter_for(
                message.topic,
                message.key,
                message.value,
                reason,
                pipeline="beam",
                **message.position,
            )
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, (DEAD_LETTER, row))
            return
        if decoded is not None:
            yield decoded


class AppendRaw(_BatchedAppend):
    """``(table, row)`` pairs → the raw tables, each batch in one append (all tables of it
    together: atomic where the backend is)."""

    def _append(self, warehouse: Warehouse, elements: list[Any]) -> None:
        by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for table, row in elements:
            by_table[table].append(row)
        for table in by_table:
            warehouse.ensure_raw_table(table)
        try:
            warehouse.append(_arrow(by_table))
        except WarehouseUnavailable:
            raise  # nothing was refused: the bundle fails and is retried
        except WarehouseError as exc:
            self._one_by_one(warehouse, elements, exc)

    def _one_by_one(
        self, warehouse: Warehouse, elements: list[Any], batch_error: WarehouseError
    ) -> None:
        """The warehouse refused the batch as bad: find the rows it refuses alone and
        dead-letter them, so that one bad row neither blocks the stream nor loses the rest."""
        for table, row in elements:
            try:
                warehouse.append(_arrow({table: [row]}))
            except WarehouseUnavailable:
                raise
            except WarehouseError as exc:
                if table == DEAD_LETTER:
                    raise batch_error from exc  # nowhere further to put it: fail loudly
                reason = f"the warehouse refused the row: {exc}"
                dead = dead_letter_row(
                    "loader",
                    reason,
                    json.dumps(row, default=str),
                    {"table": f"raw.{table}", "pipeline": "beam"},
                )
                # Its id from the row (less the load time decode stamps on a change) and the
                # reason: a bundle retried or a message redelivered makes the same letter.
                same = {name: value for name, value in row.items() if name != "ingested_at"}
                dead["dead_letter_id"] = dead_letter_id(f"raw.{table}", same, reason)
                warehouse.append(_arrow({DEAD_LETTER: [dead]}))


def _arrow(by_table: Mapping[str, list[dict[str, Any]]]) -> dict[str, pa.Table]:
    return {
        table: pa.Table.from_pylist(rows, schema_for(table)) for table, rows in by_table.items()
    }


# -- real-time aggregates -----------------------------------------------------------------------


def revenue_of(row: Mapping[str, Any]) -> Decimal:
    """A purchase's revenue, exactly (JSON numbers parsed as decimals, never floats); 0 for
    any other event. ``decode`` has validated it already."""
    if row["event_type"] != "purchase":
        return Decimal(0)
    properties = json.loads(row["properties"] or "{}", parse_float=Decimal)
    return Decimal(str(properties.get("revenue") or 0))


class SumActivity(beam.CombineFn):
    """(events, revenue) pairs summed: counts as integers, revenue as exact decimals."""

    def create_accumulator(self) -> tuple[int, Decimal]:
        return 0, Decimal(0)

    def add_input(
        self, accumulator: tuple[int, Decimal], value: tuple[int, Decimal]
    ) -> tuple[int, Decimal]:
        return accumulator[0] + value[0], accumulator[1] + value[1]

    def merge_accumulators(
        self, accumulators: Iterable[tuple[int, Decimal]]
    ) -> tuple[int, Decimal]:
        events, revenue = 0, Decimal(0)
        for count, amount in accumulators:
            events, revenue = events + count, revenue + amount
        return events, revenue

    def extract_output(self, accumulator: tuple[int, Decimal]) -> tuple[int, Decimal]:
        return accumulator


def _utc(moment: Any) -> datetime:
    """A Beam timestamp as an aware UTC datetime (to the microsecond)."""
    return _EPOCH + timedelta(microseconds=moment.micros)


class ActivityRow(beam.DoFn):
    """A window's sums for one (event type, device type) → a ``mart.realtime_activity`` row."""

    def process(
        self,
        element: tuple[tuple[str, str | None], tuple[int, Decimal]],
        window: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ) -> Iterator[dict[str, Any]]:
        (event_type, device_type), (events, revenue) = element
        yield {
            "window_start": _utc(window.start),
            "window_end": _utc(window.end),
            "event_type": event_type,
            "device_type": device_type,
            "events": events,
            "revenue": revenue,
            "pane_index": pane.index,
            "timing": PaneInfoTiming.to_string(pane.timing),
            "computed_at": datetime.now(UTC),
        }


class ActivityOf(beam.PTransform):
    """``raw.events`` rows → ``mart.realtime_activity`` rows (see the module's docstring)."""

    def __init__(self, window_seconds: int, allowed_lateness_seconds: int) -> None:
        super().__init__()
        self._window_seconds = window_seconds
        self._lateness = allowed_lateness_seconds

    def expand(self, events: Any) -> Any:
        return (
            events
            | "By received_at"
            >> beam.Map(lambda row: window.TimestampedValue(row, row["received_at"].timestamp()))
            | "Fixed windows"
            >> beam.WindowInto(
                window.FixedWindows(self._window_seconds),
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=self._lateness,
            )
            | "By type and device"
            >> beam.Map(lambda row: ((row["event_type"], row["device_type"]), (1, revenue_of(row))))
            | "Sum" >> beam.CombinePerKey(SumActivity())
            | "As mart rows" >> beam.ParDo(ActivityRow())
        )


class AppendActivity(_BatchedAppend):
    """Mart rows → ``mart.realtime_activity``, a batch per append."""

    def _append(self, warehouse: Warehouse, elements: list[Any]) -> None:
        warehouse.append_mart(ACTIVITY_TABLE, pa.Table.from_pylist(elements, ACTIVITY_SCHEMA))


# -- the whole ------------------------------------------------------------------------------------


def build(messages: Any, settings: Settings) -> dict[str, Any]:
    """Attach the pipeline to ``messages`` (Received); the PCollections it made, by name."""
    topics = Topics(settings.transport.topic_prefix)
    target = warehouse_settings(settings)
    batch_rows = settings.beam.batch_rows
    decoded = messages | "Decode" >> beam.ParDo(DecodeMessages(topics)).with_outputs(
        DEAD_LETTER, main="rows"
    )
    rows, dead_letters = decoded.rows, decoded[DEAD_LETTER]
    _ = (
        (rows, dead_letters)
        | "Rows and dead letters" >> beam.Flatten()
        | "Append to raw" >> beam.ParDo(AppendRaw(target, batch_rows))
    )
    activity = (
        rows
        | "Events" >> beam.Filter(lambda decoded_row: decoded_row[0] == "events")
        | "Event rows" >> beam.Map(lambda decoded_row: decoded_row[1])
        | "Activity"
        >> ActivityOf(settings.beam.window_seconds, settings.beam.allowed_lateness_seconds)
    )
    _ = activity | "Append to mart" >> beam.ParDo(AppendActivity(target, batch_rows))
    return {"rows": rows, DEAD_LETTER: dead_letters, "activity": activity}


def received(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    attributes: Mapping[str, str],
    message_id: str | None = None,
) -> Received:
    """A transport's message as the loader's :class:`Received` (what :func:`build` takes)."""
    position = {"message_id": message_id} if message_id else {}
    return Received(topic, key, value, dict(attributes), position)
