"""What the structural, business-rule and pipeline kinds share: the window a check looks at,
a verdict from two thresholds, quoting and evidence.

Windows here are not baselines (those live with the statistical kinds): ``hour`` and ``day``
are the last 60 minutes and the last 24 hours up to ``ctx.now``, ``all`` the whole table.

>>> grade(0.02, warn=0.0, fail=0.01)
'fail'
>>> grade(0, warn=0, fail=0)
'pass'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from shopstream.quality.checks import CheckContext
from shopstream.quality.redact import redact_rows
from shopstream.quality.spec import PlannedCheck

Window = Literal["hour", "day", "all"]
WINDOW_LENGTH: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
#: The start of an ``all`` window in SQL (rows before 1970 are not the shop's).
EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def window_bounds(ctx: CheckContext, window: Window) -> tuple[datetime | None, datetime]:
    """(start, end) of the window ending at ``ctx.now``; start None for ``all``."""
    if window == "all":
        return None, ctx.now
    return ctx.now - WINDOW_LENGTH[window], ctx.now


def grade(value: float, *, warn: float, fail: float) -> Literal["pass", "warn", "fail"]:
    """``fail`` above ``fail``, ``warn`` above ``warn``, else ``pass`` (strictly above: a
    threshold of 0 means any)."""
    if value > fail:
        return "fail"
    if value > warn:
        return "warn"
    return "pass"


def ident(name: str) -> str:
    """A column or table name quoted for SQL."""
    return '"' + name.replace('"', '""') + '"'


def relation(table: str) -> str:
    """``layer.table`` quoted for SQL."""
    schema, _, name = table.partition(".")
    return f"{ident(schema)}.{ident(name)}"


def sql_timestamp(moment: datetime) -> str:
    """A TIMESTAMPTZ literal (UTC) for SQL text where parameters cannot go."""
    return f"TIMESTAMPTZ '{moment.isoformat()}'"


def time_column(check: PlannedCheck, override: str | None, *, landed: bool = False) -> str | None:
    """The option ``time_column``, else the table's ``time_column`` (``landed_column``)."""
    if override:
        return override
    spec = check.table_spec
    if landed:
        return spec.landed_column or spec.time_column
    return spec.time_column or spec.landed_column


def window_filter(
    check: PlannedCheck,
    ctx: CheckContext,
    window: Window,
    column: str | None,
    where: str | None,
) -> tuple[str, list[Any], datetime | None, datetime]:
    """The WHERE clause (``TRUE`` when nothing filters), its parameters and the window.

    A windowed check on a table without a time column is a configuration error: say which
    option fixes it."""
    start, end = window_bounds(ctx, window)
    clauses: list[str] = []
    params: list[Any] = []
    if start is not None:
        if not column:
            raise ValueError(
                f"{check.name}: window {window!r} needs a time column: set `time_column:` on "
                f"the table {check.table} or on the check, or use `window: all`"
            )
        clauses.append(f"{ident(column)} >= ? AND {ident(column)} < ?")
        params += [start, end]
    if where:
        clauses.append(f"({where})")
    return (" AND ".join(clauses) or "TRUE"), params, start, end


def evidence(ctx: CheckContext, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """At most ``ctx.evidence_rows`` rows, personal data redacted."""
    return redact_rows(rows, ctx.evidence_rows)


def plural(count: float, word: str) -> str:
    return f"{count:g} {word}" + ("" if count == 1 else "s")


__all__ = [
    "EPOCH",
    "Window",
    "evidence",
    "grade",
    "ident",
    "plural",
    "relation",
    "sql_timestamp",
    "time_column",
    "window_bounds",
    "window_filter",
]
