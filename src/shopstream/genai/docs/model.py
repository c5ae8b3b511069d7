"""What the documentation generator's parts hand each other.

Tables are named ``layer.table`` in lower case (``raw.cdc_order_items``, ``staging.stg_orders``,
``mart.daily_sales``), whatever the warehouse calls its schemas or datasets.

>>> items = ColumnRef("mart.daily_sales", "items")
>>> quantity = ColumnRef("staging.stg_order_items", "quantity")
>>> lineage = Lineage(
...     tables={"mart.daily_sales": ("staging.stg_order_items",),
...             "staging.stg_order_items": ("raw.cdc_order_items",)},
...     columns={items: (quantity,), quantity: (ColumnRef("raw.cdc_order_items", "after"),)})
>>> sorted(lineage.upstream_tables("mart.daily_sales"))
['raw.cdc_order_items', 'staging.stg_order_items']
>>> sorted(f"{c.table}.{c.column}" for c in lineage.upstream_columns(items))
['raw.cdc_order_items.after', 'staging.stg_order_items.quantity']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, order=True)
class ColumnRef:
    table: str
    column: str


@dataclass(frozen=True)
class Lineage:
    #: table -> the tables it reads directly (sorted).
    tables: Mapping[str, tuple[str, ...]]
    #: column -> the columns it is computed from directly (sorted); a column computed from
    #: no column (a literal, ``count(*)``) maps to ``()``.
    columns: Mapping[ColumnRef, tuple[ColumnRef, ...]]

    def upstream_tables(self, table: str) -> set[str]:
        return _reach(table, self.tables)

    def upstream_columns(self, column: ColumnRef) -> set[ColumnRef]:
        return _reach(column, self.columns)

    def downstream_tables(self, table: str) -> set[str]:
        reverse: dict[str, list[str]] = {}
        for child, parents in self.tables.items():
            for parent in parents:
                reverse.setdefault(parent, []).append(child)
        return _reach(table, {k: tuple(v) for k, v in reverse.items()})


def _reach(start: T, edges: Mapping[T, tuple[T, ...]]) -> set[T]:
    seen: set[T] = set()
    todo = list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return seen


@dataclass(frozen=True)
class PipelineCode:
    """What one pipeline's code does, from its source text."""

    #: collector, cdc, loader, transform, quality.
    name: str
    #: The first paragraph of its package's docstring.
    summary: str
    #: Modules, as ``shopstream.collector.app`` (sorted).
    modules: tuple[str, ...]
    #: How it is started: CLI commands (``shopstream collector``), with their help line.
    entry_points: Mapping[str, str] = field(default_factory=dict)
    #: Settings it reads, as dotted paths (``collector.max_body_bytes``) (sorted).
    settings_read: tuple[str, ...] = ()
    #: Tables it writes (``raw.events``, ``raw.dead_letter``) (sorted).
    tables_written: tuple[str, ...] = ()
    #: Where its records go when not straight into the warehouse (kafka, pubsub) (sorted).
    sinks: tuple[str, ...] = ()
    #: Metrics it exports (``shopstream_collector_events_total``) (sorted).
    metrics: tuple[str, ...] = ()
    #: The transports it consumes records from (kafka, pubsub) (sorted).
    reads_from: tuple[str, ...] = ()
