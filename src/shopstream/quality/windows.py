"""What the column and statistical checks share: the windows they judge (complete hours and days
in the shop's time zone), the SQL pieces they build queries from, and how a result is written.

Baseline checks judge the last COMPLETE hour or day in ``ctx.timezone`` (the partial current hour
is never judged: it would always look like a drop). Hour-of-week and day-of-week are counted on
the wall clock, so "Tuesday 14:00" stays Tuesday 14:00 across a daylight-saving change.

Queries group rows by UTC hour (quarter-hour in zones whose offset is not whole hours) and
Python folds the few thousand slots into local hours or days (:func:`seasonal_buckets`): every
time zone's offset is a multiple of 15 minutes, so this is exact without the database knowing
time zones, and the per-row work stays in the database.

>>> from zoneinfo import ZoneInfo
>>> w = last_complete(datetime(2026, 12, 1, 14, 20, tzinfo=UTC), ZoneInfo("Asia/Seoul"), "hour")
>>> w.label, w.start.isoformat()
('22:00-23:00 Tue 1 Dec', '2026-12-01T13:00:00+00:00')
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from shopstream.quality.checks import CheckContext
from shopstream.quality.redact import redact_rows
from shopstream.quality.results import CheckResult, Status
from shopstream.quality.spec import PlannedCheck

Granularity = Literal["hour", "day"]
#: Microseconds in a quarter of an hour: the unit queries group time by.
QUARTER_US = 900_000_000
HOUR_US = 4 * QUARTER_US
#: Buckets in a week: hour-of-week and day-of-week seasonality.
PERIOD = {"hour": 168, "day": 7}
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
_TIMESTAMP_TYPES = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS")


class CheckOptionError(ValueError):
    """A check's options do not fit its table; the message names the option and what to do."""


def ident(name: str) -> str:
    """One column (or schema, table) name quoted for SQL, whatever characters it holds: every
    kind quotes names this way, so a name one kind accepts every kind accepts."""
    return '"' + name.replace('"', '""') + '"'


def relation(table: str) -> str:
    """``layer.table`` quoted for SQL (``raw.events`` -> ``"raw"."events"``)."""
    schema, _, name = table.partition(".")
    return f"{ident(schema)}.{ident(name)}" if name else ident(schema)


def where_sql(where: str | None) -> str:
    """The check's ``where`` option as an extra condition (``""`` when there is none)."""
    return f" AND ({where})" if where and where.strip() else ""


# --- windows -------------------------------------------------------------------------------


def to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant a local wall-clock time names (the earlier one when the clock repeats it)."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def to_wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def floor_wall(wall: datetime, granularity: Granularity) -> datetime:
    wall = wall.replace(minute=0, second=0, microsecond=0)
    return wall.replace(hour=0) if granularity == "day" else wall


def step(granularity: Granularity) -> timedelta:
    return _STEP[granularity]


@dataclass(frozen=True)
class Window:
    """One local hour or day: its wall-clock start and its instants (UTC)."""

    granularity: Granularity
    wall: datetime
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        if self.granularity == "day":
            return f"{self.wall:%a} {self.wall.day} {self.wall:%b}"
        end = self.wall + _STEP["hour"]
        return f"{self.wall:%H:%M}-{end:%H:%M} {self.wall:%a} {self.wall.day} {self.wall:%b}"

    @property
    def hours(self) -> float:
        """Its real length in hours (23 or 25 for a day the clocks change)."""
        return (self.end - self.start).total_seconds() / 3600


def window_at(wall: datetime, tz: ZoneInfo, granularity: Granularity) -> Window:
    return Window(granularity, wall, to_utc(wall, tz), to_utc(wall + _STEP[granularity], tz))


def last_complete(now: datetime, tz: ZoneInfo, granularity: Granularity) -> Window:
    """The last hour (day) in ``tz`` that ended at or before ``now``."""
    current = floor_wall(to_wall(now, tz), granularity)
    return window_at(current - _STEP[granularity], tz, granularity)


#: A rule-like check's window: the last 60 minutes, the last 24 hours, or the whole table.
TrailingWindow = Literal["hour", "day", "all"]


def trailing(now: datetime, window: str) -> tuple[datetime | None, datetime]:
    """A rate check's window ending at ``now``: the last hour, the last 24 hours or everything
    (start None)."""
    if window == "hour":
        return now - timedelta(hours=1), now
    if window == "day":
        return now - timedelta(days=1), now
    return None, now


#: How a message names a trailing window.
TRAILING_WORDS = {"hour": "in the last hour", "day": "in the last 24 hours", "all": "in the table"}


def trailing_condition(
    ctx: CheckContext, check: PlannedCheck, window: str, time_override: str | None
) -> tuple[list[str], list[Any], datetime | None, datetime]:
    """The trailing window ending at ``ctx.now`` as SQL: conditions on the check's time column
    (none for ``all``), their parameters, and the window's start (None for ``all``) and end."""
    start, end = trailing(ctx.now, window)
    if start is None:
        return [], [], start, end
    column, sql_type = time_column(ctx, check, time_override)
    col = ident(column)
    return [f"{col} >= ? AND {col} < ?"], [bound(start, sql_type), bound(end, sql_type)], start, end


def _epoch_us(instant: datetime) -> int:
    return round(instant.timestamp() * 1_000_000)


def _at(epoch_us: int) -> datetime:
    return datetime.fromtimestamp(epoch_us / 1_000_000, UTC)


# --- time columns ---------------------------------------------------------------------------


def time_column_name(
    check: PlannedCheck, override: str | None, *, landed: bool = False
) -> str | None:
    """The column a check counts time in, the one rule for every kind: the check's
    ``time_column`` option; else, for freshness (``landed``), the table's ``landed_column``
    then its ``time_column``; for every other kind the table's ``time_column`` then its
    ``landed_column`` (a table with one time column uses it for everything). None: neither."""
    if override:
        return override
    spec = check.table_spec
    if landed:
        return spec.landed_column or spec.time_column
    return spec.time_column or spec.landed_column


def time_column(
    ctx: CheckContext,
    check: PlannedCheck,
    override: str | None,
    *,
    landed: bool = False,
) -> tuple[str, str]:
    """:func:`time_column_name`, which must be a TIMESTAMP column of the table, and its SQL type."""
    name = time_column_name(check, override, landed=landed)
    if not name:
        raise CheckOptionError(
            f"{check.table} has no time_column or landed_column: set `time_column:` on the "
            "table in the checks file or the check's `time_column:` option"
        )
    columns = ctx.columns(check.table)
    if name not in columns:
        raise CheckOptionError(
            f"time column {name!r} is not a column of {check.table} "
            f"(it has {', '.join(columns) or 'no columns'}): fix `time_column`"
        )
    sql_type = columns[name].upper()
    if not sql_type.startswith(_TIMESTAMP_TYPES):
        raise CheckOptionError(
            f"time column {name!r} of {check.table} is {sql_type}, not a "
            "timestamp: point `time_column` at a TIMESTAMP column"
        )
    return name, sql_type


def bound(instant: datetime, sql_type: str) -> datetime:
    """A query parameter comparable with a column of ``sql_type`` (naive TIMESTAMPs hold UTC)."""
    if "TIME ZONE" in sql_type:
        return instant
    return instant.astimezone(UTC).replace(tzinfo=None)


def require_column(ctx: CheckContext, check: PlannedCheck, column: str | None, what: str) -> str:
    """The check's column, which must exist on its table."""
    if not column:
        raise CheckOptionError(f"{what} needs `column:` (the column to judge)")
    columns = ctx.columns(check.table)
    if column not in columns:
        raise CheckOptionError(
            f"column {column!r} is not in {check.table} (it has {', '.join(columns)}): fix `column`"
        )
    return column


# --- seasonal buckets -------------------------------------------------------------------------


@dataclass
class Buckets:
    """Rows per local bucket (hour or day), index 0 = the window under test, then back in time.

    ``rows[i]`` is None where there is no data to learn from: before the table's history began,
    or a wall-clock hour that did not exist (the spring clock change). Counts are scaled to a
    nominal bucket, so a 25-hour day counts as 24 hours' worth. ``sums[i]`` are the sums of the
    query's extra columns in the same bucket (null counts, say).
    """

    window: Window
    rows: list[float | None]
    sums: list[list[float]]

    def label(self, i: int) -> str:
        g = self.window.granularity
        return Window(g, self.window.wall - i * _STEP[g], self.window.start, self.window.end).label


def seasonal_buckets(
    ctx: CheckContext,
    check: PlannedCheck,
    *,
    time_override: str | None,
    where: str | None,
    granularity: Granularity,
    weeks: int,
    sums_sql: Sequence[str] = (),
) -> Buckets:
    """One query: rows (and the sums of ``sums_sql``) per UTC quarter-hour of the last ``weeks``
    weeks before the last complete bucket and of that bucket, folded into local buckets."""
    column, sql_type = time_column(ctx, check, time_override)
    window = last_complete(ctx.now, ctx.timezone, granularity)
    unit = _STEP[granularity]
    size = (weeks + 1) * PERIOD[granularity]
    # Each local bucket's first instant, oldest first (microseconds since the epoch); a slot
    # belongs to the last bucket that starts at or before it. Buckets the clock skipped (the
    # spring change) start where the next one does and stay empty.
    walls = [window.wall - i * unit for i in range(size - 1, -1, -1)]
    starts = [_epoch_us(to_utc(wall, ctx.timezone)) for wall in walls]
    starts.append(_epoch_us(window.end))
    # Whole UTC hours when every bucket starts on one (most zones), else quarters (India, ...).
    slot = HOUR_US if all(start % HOUR_US == 0 for start in starts) else QUARTER_US
    col = ident(column)
    extra = "".join(f", CAST(sum({expr}) AS DOUBLE) AS s{i}" for i, expr in enumerate(sums_sql))
    sql = (
        f"SELECT epoch_us({col}) // {slot} AS slot, count(*) AS n{extra} "
        f"FROM {relation(check.table)} WHERE {col} >= ? AND {col} < ?{where_sql(where)} GROUP BY 1"
    )
    found = ctx.query(sql, [bound(_at(starts[0]), sql_type), bound(window.end, sql_type)])
    slots = found.column("slot").to_pylist()
    columns = [found.column("n").to_pylist()]
    columns += [found.column(f"s{k}").to_pylist() for k in range(len(sums_sql))]
    width = len(columns)
    totals: dict[int, list[float]] = {}
    for r, at in enumerate(slots):
        j = bisect_right(starts, at * slot) - 1
        if 0 <= j < size:
            acc = totals.setdefault(size - 1 - j, [0.0] * width)
            for k in range(width):
                acc[k] += columns[k][r] or 0
    oldest = max(totals, default=-1)
    rows: list[float | None] = []
    sums: list[list[float]] = []
    nominal_us = unit.total_seconds() * 1_000_000
    for i in range(size):
        j = size - 1 - i
        length = starts[j + 1] - starts[j]
        if i > oldest or length <= 0:
            rows.append(None)
            sums.append([])
            continue
        scale = nominal_us / length
        acc = totals.get(i, [0.0] * width)
        rows.append(acc[0] * scale)
        sums.append([v * scale for v in acc[1:]])
    return Buckets(window, rows, sums)


# --- words ------------------------------------------------------------------------------------


def count_words(value: float) -> str:
    """A count as a person reads it: 1,020; 3.5 only when it is small and not whole."""
    if abs(value) >= 10 or abs(value - round(value)) < 0.05:
        return f"{round(value):,}"
    return f"{value:,.1f}"


def pct(value: float, digits: int = 1) -> str:
    """A share as a percentage: 0.0312 -> 3.1%."""
    return f"{value * 100:.{digits}f}%"


def minutes_words(minutes: float) -> str:
    if minutes < 120:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} days"


def result(
    check: PlannedCheck,
    kind: str,
    severity: str,
    status: Status,
    *,
    observed: float | None,
    expected: float | None,
    threshold: str,
    message: str,
    unit: str,
    column: str | None = None,
    evidence: list[dict[str, Any]] | None = None,
    evidence_rows: int = 5,
    details: dict[str, Any] | None = None,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
) -> CheckResult:
    """A result of ``check``, its evidence redacted (shopstream.quality.redact)."""
    return CheckResult(
        check=check.name,
        kind=kind,
        table=check.table,
        column=column if column is not None else check.spec.column,
        status=status,
        observed=observed,
        expected=expected,
        threshold=threshold,
        severity=(check.spec.severity or severity),  # type: ignore[arg-type]
        message=message,
        evidence=redact_rows(evidence or [], evidence_rows),
        details=details or {},
        window_start=window_start,
        window_end=window_end,
        unit=unit,
    )


__all__ = [
    "PERIOD",
    "QUARTER_US",
    "TRAILING_WORDS",
    "Buckets",
    "CheckOptionError",
    "Granularity",
    "TrailingWindow",
    "Window",
    "bound",
    "count_words",
    "floor_wall",
    "ident",
    "last_complete",
    "minutes_words",
    "pct",
    "relation",
    "require_column",
    "result",
    "seasonal_buckets",
    "step",
    "time_column",
    "time_column_name",
    "to_utc",
    "to_wall",
    "trailing",
    "trailing_condition",
    "where_sql",
    "window_at",
]
