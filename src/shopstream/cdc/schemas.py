"""The schema record of captured tables: one row of ``raw.source_schemas`` per version.

Pure: a :class:`TableSchema` is built from a pgoutput Relation plus what the catalogue adds
(:func:`shopstream.cdc.catalog.describe_relation`: type names, base types, nullability, the
primary key); its fingerprint says whether it is a new version. :class:`SchemaVersions`
keeps the last version per raw table and decides when a Relation makes a new one: PostgreSQL
re-sends an unchanged Relation after every reconnect and before a table's first change in a
session, and those must not make versions.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

import orjson

__all__ = [
    "REPLICA_IDENTITY",
    "ColumnSchema",
    "SchemaChange",
    "SchemaVersion",
    "SchemaVersions",
    "TableSchema",
    "diff",
]

log = logging.getLogger(__name__)

#: pg_class.relreplident (as pgoutput sends it) → the record's word for it.
REPLICA_IDENTITY = {"d": "default", "f": "full", "i": "index", "n": "nothing"}


@dataclass(frozen=True)
class ColumnSchema:
    """One column as the record holds it (the JSON's keys, in this order)."""

    name: str
    type: str  # format_type(oid, typmod)
    base_type: str  # what staging types by: a domain's base type, 'text' for enums
    type_oid: int
    type_modifier: int
    key: bool  # part of the primary key
    nullable: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "base_type": self.base_type,
            "type_oid": self.type_oid,
            "type_modifier": self.type_modifier,
            "key": self.key,
            "nullable": self.nullable,
        }


@dataclass(frozen=True)
class TableSchema:
    """A captured table's shape: what one version of its record says."""

    raw_table: str
    source_schema: str
    source_table: str
    columns: tuple[ColumnSchema, ...]
    primary_key: tuple[str, ...]
    replica_identity: str | None

    @property
    def fingerprint(self) -> str:
        """sha256 of the columns (in order, every field) and the primary key, as canonical
        JSON (sorted keys, no spaces): equal exactly when the shape is the same. The replica
        identity is left out: it changes what a change carries, not the table's columns."""
        canonical = orjson.dumps(
            {"columns": [c.as_json() for c in self.columns], "primary_key": self.primary_key},
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(canonical).hexdigest()

    def row(self, version: int, first_lsn: int | None, recorded_at: datetime) -> dict[str, Any]:
        """The ``raw.source_schemas`` row of this shape as ``version``."""
        return {
            "raw_table": self.raw_table,
            "source_schema": self.source_schema,
            "source_table": self.source_table,
            "version": version,
            "fingerprint": self.fingerprint,
            "columns": orjson.dumps([c.as_json() for c in self.columns]).decode(),
            "primary_key": orjson.dumps(list(self.primary_key)).decode(),
            "replica_identity": self.replica_identity,
            "first_lsn": first_lsn,
            "recorded_at": recorded_at,
        }


class SchemaVersion(NamedTuple):
    version: int
    fingerprint: str


@dataclass(frozen=True)
class SchemaChange:
    """What differs between two versions of a table, for the log."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    retyped: tuple[tuple[str, str, str], ...]  # (column, old type, new type)
    primary_key: tuple[tuple[str, ...], tuple[str, ...]] | None  # (old, new) when it changed
    other: tuple[str, ...]  # same type name, but nullability, key flag or oid changed

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append("added " + ", ".join(self.added))
        if self.removed:
            parts.append("removed " + ", ".join(self.removed))
        if self.retyped:
            parts.append(
                "retyped " + ", ".join(f"{name} {old} -> {new}" for name, old, new in self.retyped)
            )
        if self.primary_key is not None:
            old, new = self.primary_key
            parts.append(f"primary key ({', '.join(old)}) -> ({', '.join(new)})")
        if self.other:
            parts.append("changed " + ", ".join(self.other))
        return "; ".join(parts) or "no column difference"


def diff(old: TableSchema | None, new: TableSchema) -> SchemaChange:
    """Columns added, removed, retyped; the key; anything else that moved the fingerprint."""
    before = {c.name: c for c in old.columns} if old is not None else {}
    after = {c.name: c for c in new.columns}
    added = tuple(f"{c.name} {c.type}" for c in new.columns if c.name not in before)
    removed = tuple(name for name in before if name not in after)
    retyped = tuple(
        (name, before[name].type, column.type)
        for name, column in after.items()
        if name in before and before[name].type != column.type
    )
    key = None
    if old is not None and old.primary_key != new.primary_key:
        key = (old.primary_key, new.primary_key)
    order_before = [n for n in before if n in after]
    order_after = [n for n in after if n in before]
    other = tuple(
        name
        for name, column in after.items()
        if name in before
        and before[name].type == column.type
        and replace(before[name], key=column.key) != column  # the key is said above
    )
    if order_before != order_after:
        other += ("column order",)
    return SchemaChange(added, removed, retyped, key, other)


class SchemaVersions:
    """The last recorded version per raw table, and the shapes seen in this session.

    ``recorded``: what is known to be durable (from the state file); the session starts from
    it and moves ahead as it emits rows (which are durable only later: the reader tells the
    state file then, see :class:`shopstream.cdc.state.SchemaStore`).
    """

    def __init__(self, recorded: Mapping[str, SchemaVersion] | None = None) -> None:
        self.last: dict[str, SchemaVersion] = dict(recorded or {})
        #: The shape behind each version emitted in this session (for the log's diff).
        self._shapes: dict[str, TableSchema] = {}

    def observe(
        self, schema: TableSchema, first_lsn: int | None, recorded_at: datetime
    ) -> dict[str, Any] | None:
        """A Relation (or a snapshot's table) was seen: the new version's row, or None when
        its shape is the last recorded one (a re-sent Relation)."""
        fingerprint = schema.fingerprint
        last = self.last.get(schema.raw_table)
        if last is not None and last.fingerprint == fingerprint:
            self._shapes[schema.raw_table] = schema
            return None
        version = (last.version if last is not None else 0) + 1
        previous = self._shapes.get(schema.raw_table)
        self.last[schema.raw_table] = SchemaVersion(version, fingerprint)
        self._shapes[schema.raw_table] = schema
        source = f"{schema.source_schema}.{schema.source_table}"
        if last is None:
            log.info(
                "schema of %s recorded as raw.%s version 1 (%d columns, key %s)",
                source,
                schema.raw_table,
                len(schema.columns),
                list(schema.primary_key),
            )
        else:
            # Without the previous shape (recorded before a restart) the log names what the
            # table has now; raw.source_schemas has both versions to compare.
            change = (
                diff(previous, schema).describe()
                if previous is not None
                else "now " + ", ".join(f"{c.name} {c.type}" for c in schema.columns)
            )
            log.info(
                "schema of %s changed: raw.%s version %d from LSN %s: %s",
                source,
                schema.raw_table,
                version,
                "?" if first_lsn is None else f"{first_lsn >> 32:X}/{first_lsn & 0xFFFFFFFF:X}",
                change,
            )
        return schema.row(version, first_lsn, recorded_at)
