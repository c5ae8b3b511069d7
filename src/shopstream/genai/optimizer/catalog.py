"""The warehouse's tables as the optimizer's rules see them.

A :class:`Catalog` maps ``layer.table`` names (``raw.events``, ``mart.daily_sales``) to a
:class:`TableInfo`: columns with their types and logical sizes, row count, the partition column
and the cluster columns (what BigQuery prunes by; the DuckDB shape keeps the same layout so the
advice holds in both), and the key that makes a row unique when one is known.

>>> events = TableInfo("raw.events", (Column("event_id", "VARCHAR"), Column("event_date", "DATE")),
...                    partition_by="event_date")
>>> catalog = Catalog({"raw.events": events})
>>> catalog.find(["my-project", "raw", "events"]).name
'raw.events'
>>> catalog.sqlglot_schema()
{'raw': {'events': {'event_id': 'VARCHAR', 'event_date': 'DATE'}}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    name: str
    #: The warehouse's type name, as the warehouse spells it (DuckDB: VARCHAR, DECIMAL(18,2)).
    type: str
    nullable: bool = True
    #: Logical bytes of the whole column (what BigQuery bills for reading it); None: unknown.
    bytes: int | None = None


@dataclass(frozen=True)
class TableInfo:
    #: ``layer.table``, lower case.
    name: str
    columns: tuple[Column, ...]
    rows: int | None = None
    #: The column the table is partitioned by (by day), if any.
    partition_by: str | None = None
    cluster_by: tuple[str, ...] = ()
    #: Columns whose values are unique per row (a primary key, a model's grain), if known.
    unique_key: tuple[str, ...] = ()
    #: Rows per partition value (ISO date -> rows), when known: how much a filter prunes.
    partition_rows: Mapping[str, int] = field(default_factory=dict)

    def column(self, name: str) -> Column | None:
        lowered = name.lower()
        return next((c for c in self.columns if c.name.lower() == lowered), None)

    @property
    def bytes(self) -> int | None:
        sizes = [c.bytes for c in self.columns]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)


@dataclass(frozen=True)
class Catalog:
    tables: Mapping[str, TableInfo]

    def find(self, parts: Sequence[str]) -> TableInfo | None:
        """The table a reference names: ``events`` (if only one layer has it), ``raw.events``,
        or ``project.raw.events`` (BigQuery's project prefix is ignored)."""
        names = [p.lower() for p in parts if p]
        if len(names) >= 2:
            return self.tables.get(f"{names[-2]}.{names[-1]}")
        if len(names) == 1:
            found = [t for key, t in self.tables.items() if key.split(".", 1)[1] == names[0]]
            return found[0] if len(found) == 1 else None
        return None

    def sqlglot_schema(self) -> dict[str, dict[str, dict[str, str]]]:
        """``{layer: {table: {column: type}}}``, what sqlglot's ``qualify`` takes."""
        schema: dict[str, dict[str, dict[str, str]]] = {}
        for name, table in sorted(self.tables.items()):
            layer, _, short = name.partition(".")
            schema.setdefault(layer, {})[short] = {c.name: c.type for c in table.columns}
        return schema
