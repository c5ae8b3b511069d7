"""The kinds of check, one module each.

A kind's module defines ``Params`` (a Pydantic model of its YAML options, every option with a
default), ``SEVERITY`` (its default severity) and::

    def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]

``run`` reads the warehouse through ``ctx.query`` only (read-only SQL in DuckDB's dialect,
translated for a warehouse that speaks another: :mod:`shopstream.quality.dialect`) and judges
relative to ``ctx.now``. Most kinds return one result; one per column or window is
fine (each with the check's name, or ``<name>.<part>`` when there are several). An exception
becomes an ``error`` result naming it (see :mod:`shopstream.quality.engine`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pyarrow as pa

if TYPE_CHECKING:
    from shopstream.quality.results import CheckResult, Severity
    from shopstream.quality.spec import PlannedCheck

#: kind -> the module that implements it.
KINDS: dict[str, str] = {
    "freshness": "shopstream.quality.checks.freshness",
    "volume": "shopstream.quality.checks.volume",
    "null_rate": "shopstream.quality.checks.nulls",
    "duplicates": "shopstream.quality.checks.duplicates",
    "accepted_values": "shopstream.quality.checks.accepted_values",
    "distribution": "shopstream.quality.checks.distribution",
    "schema_drift": "shopstream.quality.checks.schema_drift",
    "relationships": "shopstream.quality.checks.relationships",
    "rule": "shopstream.quality.checks.rules",
    "replication": "shopstream.quality.checks.replication",
    "dead_letters": "shopstream.quality.checks.dead_letters",
    "tracking_coverage": "shopstream.quality.checks.tracking_coverage",
}

Query = Callable[..., pa.Table]


@dataclass
class CheckContext:
    """What a check may use."""

    #: ``query(sql, parameters=None) -> pyarrow.Table``: one read-only statement.
    query: Query
    #: The run's "now" (aware, UTC): windows end at it. Tests and benchmarks pin it.
    now: datetime
    #: The shop's business time zone: hour-of-week and day-of-week baselines count in it.
    timezone: ZoneInfo
    #: Offending keys or rows kept per result.
    evidence_rows: int = 5
    #: The shop's PostgreSQL (replication checks), when CDC is configured.
    source_dsn: str | None = None
    slot_name: str = "shopstream"
    #: Facts the platform knows that the warehouse does not (CDC reader state, say).
    pipeline: dict[str, Any] = field(default_factory=dict)
    #: ``describe(layer.table) -> {column: type}`` from the warehouse's own catalogue (a
    #: warehouse of another dialect: :class:`shopstream.quality.dialect.WarehouseReader`);
    #: None: DuckDB's information_schema through ``query``.
    describe: Callable[[str], dict[str, str]] | None = None
    _columns: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    def columns(self, table: str) -> dict[str, str]:
        """``layer.table``'s columns and their types ({} when it does not exist)."""
        if table not in self._columns and self.describe is not None:
            self._columns[table] = self.describe(table)
        if table not in self._columns:
            schema, _, name = table.partition(".")
            rows = self.query(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [schema, name],
            ).to_pylist()
            self._columns[table] = {row["column_name"]: row["data_type"] for row in rows}
        return self._columns[table]

    def exists(self, table: str) -> bool:
        return bool(self.columns(table))


@dataclass(frozen=True)
class Kind:
    name: str
    module: ModuleType

    @property
    def params(self) -> type[Any]:
        params: type[Any] = self.module.Params
        return params

    @property
    def severity(self) -> Severity:
        severity: Severity = self.module.SEVERITY
        return severity

    #: Kinds that never read their table (pipeline checks) set READS_TABLE = False.
    @property
    def reads_table(self) -> bool:
        return bool(getattr(self.module, "READS_TABLE", True))

    def run(self, ctx: CheckContext, check: PlannedCheck, params: Any) -> list[CheckResult]:
        results: list[CheckResult] = self.module.run(ctx, check, params)
        return results


def kind(name: str) -> Kind:
    """The kind called ``name``; ValueError naming the known ones otherwise."""
    if name not in KINDS:
        raise ValueError(f"unknown check kind {name!r}: use one of {', '.join(sorted(KINDS))}")
    return Kind(name, importlib.import_module(KINDS[name]))


__all__ = ["KINDS", "CheckContext", "Kind", "Query", "kind"]
