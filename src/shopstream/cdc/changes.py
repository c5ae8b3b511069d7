"""Decoded pgoutput changes → columns of ``raw.cdc_<table>`` (the change envelope, flattened).

The hot path of CDC. Changes are appended column by column (no dict per row, no
``Table.from_pylist``): JSON comes from orjson as bytes that Arrow takes as strings, the
``source`` block from a per-relation template, timestamps as integers cast once per batch.
Reading the envelope back: ``before``/``after``/``source``/``op`` are its JSON as Debezium
writes it (value without schema).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shopstream.cdc.pgoutput import PG_EPOCH_OFFSET_US, Relation
from shopstream.cdc.values import RowDecoder
from shopstream.events.change import change_id_prefix
from shopstream.events.raw import RAW_CDC, TS, cdc_table_name

_dumps = orjson.dumps


class Transaction:
    """What every change of one transaction shares."""

    __slots__ = ("commit_lsn", "commit_us", "id_prefix", "position", "snapshot", "ts_ms", "xid")

    def __init__(
        self, commit_lsn: int, commit_us: int, xid: int | None, snapshot: str = "false"
    ) -> None:
        """``commit_us``: commit time in µs since the Unix epoch."""
        self.commit_lsn = commit_lsn
        self.commit_us = commit_us
        self.ts_ms = commit_us // 1000
        self.xid = xid
        self.position = 0
        self.snapshot = snapshot
        # change_id = commit LSN (hex) + position; snapshot reads get an "r" position.
        self.id_prefix = change_id_prefix(commit_lsn, snapshot=snapshot != "false")

    @classmethod
    def from_pg(cls, commit_lsn: int, pg_commit_ts: int, xid: int | None) -> Transaction:
        return cls(commit_lsn, pg_commit_ts + PG_EPOCH_OFFSET_US, xid)


class TableBatch:
    """Columns of one raw CDC table, filled change by change."""

    __slots__ = (
        "after",
        "before",
        "change_id",
        "commit_us",
        "key",
        "lsn",
        "op",
        "source",
        "tx_id",
    )

    def __init__(self) -> None:
        self.change_id: list[str] = []
        self.op: list[str] = []
        self.lsn: list[int | None] = []
        self.tx_id: list[int | None] = []
        self.commit_us: list[int] = []
        self.key: list[str | None] = []
        self.before: list[str | None] = []
        self.after: list[str | None] = []
        self.source: list[str] = []

    def __len__(self) -> int:
        return len(self.change_id)

    def to_arrow(self, ingested_at: datetime) -> pa.Table:
        commit_ts = pa.array(self.commit_us, pa.int64()).cast(TS)
        n = len(self.change_id)
        return pa.Table.from_arrays(
            [
                pa.array(self.change_id, pa.string()),
                pa.array(self.op, pa.string()),
                pa.array(self.lsn, pa.int64()),
                pa.array(self.tx_id, pa.int64()),
                commit_ts,
                pc.cast(commit_ts, pa.date32()),
                pa.array(self.key, pa.string()),
                pa.array(self.before, pa.string()),
                pa.array(self.after, pa.string()),
                pa.array(self.source, pa.string()),
                pa.array([ingested_at] * n, TS) if n else pa.array([], TS),
            ],
            schema=RAW_CDC,
        )


class ChangeColumns:
    """Builds the raw CDC columns for one source database, table by table."""

    def __init__(self, db: str, connector_name: str = "shopstream") -> None:
        self.db = db
        self.connector_name = connector_name
        self.tables: dict[str, TableBatch] = {}
        self.count = 0
        self._source_prefix: dict[int, str] = {}
        self._names: dict[int, str] = {}

    def table_for(self, relation: Relation) -> str:
        name = self._names.get(relation.id)
        if name is None:
            name = self._names[relation.id] = cdc_table_name(relation.name, relation.namespace)
        return name

    def forget(self, relation: Relation) -> None:
        """A new Relation message (after DDL) replaces the cached fragments."""
        self._source_prefix.pop(relation.id, None)
        self._names.pop(relation.id, None)

    def take(self) -> dict[str, TableBatch]:
        """Hand over what was gathered and start afresh."""
        tables, self.tables, self.count = self.tables, {}, 0
        return tables

    def _batch(self, relation: Relation) -> TableBatch:
        name = self.table_for(relation)
        batch = self.tables.get(name)
        if batch is None:
            batch = self.tables[name] = TableBatch()
        return batch

    def _prefix(self, relation: Relation) -> str:
        prefix = self._source_prefix.get(relation.id)
        if prefix is None:
            names = _dumps(
                {
                    "version": "shopstream",
                    "connector": "postgresql",
                    "name": self.connector_name,
                    "db": self.db,
                    "schema": relation.namespace or "pg_catalog",
                    "table": relation.name,
                }
            ).decode()
            prefix = self._source_prefix[relation.id] = names[:-1]  # fields follow
        return prefix

    def add(
        self,
        relation: Relation,
        decoder: RowDecoder | None,
        tx: Transaction,
        op: str,
        lsn: int | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        tx.position += 1
        batch = self._batch(relation)
        key_source = after if after is not None else before
        key = decoder.key(key_source) if decoder is not None and key_source is not None else None
        xid = tx.xid
        batch.change_id.append(f"{tx.id_prefix}{tx.position:08d}")
        batch.op.append(op)
        batch.lsn.append(lsn)
        batch.tx_id.append(xid)
        batch.commit_us.append(tx.commit_us)
        # str, not orjson's bytes: each bytes result keeps a 4 kB allocation alive while the
        # batch holds it (50k changes: ~600 MB), the decoded str only its length.
        batch.key.append(None if key is None else _dumps(key).decode())
        batch.before.append(None if before is None else _dumps(before).decode())
        batch.after.append(None if after is None else _dumps(after).decode())
        batch.source.append(
            f'{self._prefix(relation)},"ts_ms":{tx.ts_ms},"snapshot":"{tx.snapshot}",'
            f'"txId":{"null" if xid is None else xid},"lsn":{"null" if lsn is None else lsn}}}'
        )
        self.count += 1
