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
from datetime import datetime
from typing import Any, Literal

from shopstream.quality.checks import CheckContext
from shopstream.quality.redact import redact_rows
from shopstream.quality.spec import PlannedCheck
from shopstream.quality.windows import TrailingWindow, ident, trailing

#: The start of an ``all`` window in SQL (rows before 1970 are not the shop's).
EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def window_bounds(ctx: CheckContext, window: TrailingWindow) -> tuple[datetime | None, datetime]:
    """(start, end) of the window ending at ``ctx.now``; start None for ``all``."""
    return trailing(ctx.now, window)


def grade(value: float, *, warn: float, fail: float) -> Literal["pass", "warn", "fail"]:
    """``fail`` above ``fail``, ``warn`` above ``warn``, else ``pass`` (strictly above: a
    threshold of 0 means any)."""
    if value > fail:
        return "fail"
    if value > warn:
        return "warn"
    return "pass"


def sql_timestamp(moment: datetime) -> str:
    """A TIMESTAMPTZ literal (UTC) for SQL text where parameters cannot go."""
    return f"TIMESTAMPTZ '{moment.isoformat()}'"


def window_filter(
    check: PlannedCheck,
    ctx: CheckContext,
    window: TrailingWindow,
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
    "evidence",
    "grade",
    "plural",
    "sql_timestamp",
    "window_bounds",
    "window_filter",
]
