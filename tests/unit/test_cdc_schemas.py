"""The schema record's fingerprint, versions and diff (shopstream.cdc.schemas), and where the
versions are kept (state.SchemaStore, acks' in-order on_durable)."""

from __future__ import annotations

import json
from concurrent.futures import Future
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from shopstream.cdc.acks import AckTracker
from shopstream.cdc.handler import ChangeHandler
from shopstream.cdc.pgoutput import Relation
from shopstream.cdc.schemas import ColumnSchema, SchemaVersion, SchemaVersions, TableSchema, diff
from shopstream.cdc.state import SchemaStore
from shopstream.events.raw import json_columns, schema_for
from tests.support.pgoutput import begin_msg, commit_msg, insert_msg, relation_msg, truncate_msg

NOW = datetime(2026, 1, 1, tzinfo=UTC)
INT4, TEXT = 23, 25


def col(name: str, type_: str = "integer", oid: int = 23, **kw: object) -> ColumnSchema:
    fields: dict[str, object] = {
        "name": name,
        "type": type_,
        "base_type": type_,
        "type_oid": oid,
        "type_modifier": -1,
        "key": False,
        "nullable": True,
    }
    fields.update(kw)
    return ColumnSchema(**fields)  # type: ignore[arg-type]


def table(*columns: ColumnSchema, key: tuple[str, ...] = ("id",)) -> TableSchema:
    return TableSchema("cdc_orders", "public", "orders", columns, key, "default")


ORDERS = table(col("id", key=True, nullable=False), col("note", "text", 25))


def test_the_fingerprint_is_the_shape_and_nothing_else() -> None:
    assert ORDERS.fingerprint == table(*ORDERS.columns).fingerprint
    assert len(ORDERS.fingerprint) == 64 and int(ORDERS.fingerprint, 16) >= 0
    # Where the table lives and its replica identity are not its shape.
    assert replace(ORDERS, replica_identity="full").fingerprint == ORDERS.fingerprint
    changed = [
        table(*ORDERS.columns, col("extra")),  # a column added
        table(ORDERS.columns[0]),  # removed
        table(ORDERS.columns[0], col("note", "character varying(20)", 1043)),  # retyped
        table(ORDERS.columns[0], replace(ORDERS.columns[1], nullable=False)),
        table(ORDERS.columns[0], replace(ORDERS.columns[1], type_modifier=24)),
        table(ORDERS.columns[1], ORDERS.columns[0]),  # order
        table(*ORDERS.columns, key=("id", "note")),  # key
        table(*ORDERS.columns, key=()),
    ]
    fingerprints = {t.fingerprint for t in changed} | {ORDERS.fingerprint}
    assert len(fingerprints) == len(changed) + 1


def test_the_row_matches_the_raw_table() -> None:
    row = ORDERS.row(3, 1234, NOW)
    pa.Table.from_pylist([row], schema=schema_for("source_schemas"))  # converts as it is
    assert json_columns("source_schemas") == {"columns", "primary_key"}
    assert orjson.loads(row["columns"])[0] == {
        "name": "id",
        "type": "integer",
        "base_type": "integer",
        "type_oid": 23,
        "type_modifier": -1,
        "key": True,
        "nullable": False,
    }
    assert (row["version"], row["first_lsn"], orjson.loads(row["primary_key"])) == (3, 1234, ["id"])
    assert row["fingerprint"] == ORDERS.fingerprint


def test_a_new_version_only_when_the_shape_differs_from_the_last() -> None:
    versions = SchemaVersions()
    first = versions.observe(ORDERS, 10, NOW)
    assert first is not None and first["version"] == 1
    assert versions.observe(ORDERS, 20, NOW) is None  # a re-sent Relation
    wider = table(*ORDERS.columns, col("extra"))
    second = versions.observe(wider, 30, NOW)
    assert second is not None and (second["version"], second["first_lsn"]) == (2, 30)
    # Back to the first shape: a version of its own (the latest version is the shape now).
    third = versions.observe(ORDERS, 40, NOW)
    assert third is not None and third["version"] == 3
    assert third["fingerprint"] == first["fingerprint"]
    # Other tables count on their own.
    other = replace(ORDERS, raw_table="cdc_sales__orders", source_schema="sales")
    assert (versions.observe(other, 50, NOW) or {})["version"] == 1


def test_versions_continue_from_what_was_recorded() -> None:
    versions = SchemaVersions({"cdc_orders": SchemaVersion(4, ORDERS.fingerprint)})
    assert versions.observe(ORDERS, 1, NOW) is None
    row = versions.observe(table(ORDERS.columns[0]), 2, NOW)
    assert row is not None and row["version"] == 5


def test_the_diff_names_what_changed() -> None:
    new = table(
        col("id", "bigint", 20, key=True, nullable=False),
        col("note", "text", 25, nullable=False),
        col("paid", "boolean", 16),
        key=("id", "paid"),
    )
    change = diff(table(*ORDERS.columns, col("gone")), new)
    assert change.added == ("paid boolean",)
    assert change.removed == ("gone",)
    assert change.retyped == (("id", "integer", "bigint"),)
    assert change.primary_key == (("id",), ("id", "paid"))
    assert change.other == ("note",)  # now NOT NULL
    assert change.describe() == (
        "added paid boolean; removed gone; retyped id integer -> bigint; "
        "primary key (id) -> (id, paid); changed note"
    )
    assert diff(ORDERS, table(ORDERS.columns[1], ORDERS.columns[0])).other == ("column order",)
    assert diff(ORDERS, ORDERS).describe() == "no column difference"


def test_the_schema_store_round_trips_and_refuses_garbage(tmp_path: Path) -> None:
    store = SchemaStore(tmp_path / "data", "slot")
    assert store.load() == {}
    store.save({"cdc_orders": SchemaVersion(2, "ab"), "cdc_x": SchemaVersion(1, "cd")})
    assert SchemaStore(tmp_path / "data", "slot").load() == {
        "cdc_orders": SchemaVersion(2, "ab"),
        "cdc_x": SchemaVersion(1, "cd"),
    }
    assert json.loads(store.path.read_text()) == {"cdc_orders": [2, "ab"], "cdc_x": [1, "cd"]}
    assert store.path.stat().st_mode & 0o777 == 0o600
    store.path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a schema version file"):
        store.load()


def test_on_durable_runs_in_submission_order_and_not_for_a_failed_batch() -> None:
    acks = AckTracker(max_in_flight=3)
    told: list[str] = []
    first: Future[None] = Future()
    second: Future[None] = Future()
    third: Future[None] = Future()
    acks.submitted(first, 10, lambda: told.append("first"))
    acks.submitted(second, 20, lambda: told.append("second"))
    acks.submitted(third, 30, lambda: told.append("third"))
    second.set_result(None)  # lands before the first: tells nothing yet
    assert acks.settle(block=False) is None and told == []
    first.set_result(None)
    assert acks.settle(block=False) == 20 and told == ["first", "second"]
    third.set_exception(RuntimeError("lost"))
    with pytest.raises(RuntimeError):
        acks.settle(block=False)
    assert told == ["first", "second"]


def _describe(relation: Relation) -> TableSchema:
    """What the catalogue would add, made up from the Relation alone (the catalogue's own
    part is tested against PostgreSQL in tests/integration/test_cdc_schemas.py)."""
    key = tuple(c.name for c in relation.columns if c.is_key)
    names = {INT4: "integer", TEXT: "text"}
    columns = tuple(
        col(c.name, names[c.type_oid], c.type_oid, key=c.name in key) for c in relation.columns
    )
    return TableSchema(
        f"cdc_{relation.name}", relation.namespace, relation.name, columns, key, "default"
    )


def test_the_handler_records_at_the_first_change_and_not_for_resent_relations() -> None:
    stock = relation_msg(7, "public", "stock", [(1, "id", INT4, -1), (0, "qty", INT4, -1)])
    wider = relation_msg(
        7, "public", "stock", [(1, "id", INT4, -1), (0, "qty", INT4, -1), (0, "note", TEXT, -1)]
    )
    handler = ChangeHandler("shop", dict, describe=_describe)
    messages = [
        (0, begin_msg(0x5000, 901)),
        (0, stock),  # pgoutput sends a Relation with no LSN of its own
        (0x4100, insert_msg(7, ["1", "10"])),
        (0x4200, insert_msg(7, ["2", "10"])),
        (0, stock),  # the same shape again (as after a reconnect): no version
        (0x4300, insert_msg(7, ["3", "10"])),
        (0, wider),
        (0x4400, truncate_msg(7)),  # a truncate is a change under the new shape too
        (0x4500, commit_msg(0x4400, 0x4500)),
    ]
    for lsn, payload in messages:
        handler.handle(payload, lsn)
    batch = handler.take()
    assert batch is not None
    rows = batch.rows["source_schemas"]
    assert [(r["raw_table"], r["version"], r["first_lsn"]) for r in rows] == [
        ("cdc_stock", 1, 0x4100),
        ("cdc_stock", 2, 0x4400),
    ]
    assert batch.schemas == {"cdc_stock": SchemaVersion(2, rows[1]["fingerprint"])}
    assert batch.count == 4 + 2  # changes and records: nothing is pending after the take
    assert handler.pending == 0 and handler.take() is None
    # A new session starting from the recorded versions makes none for the same shape.
    again = ChangeHandler("shop", dict, describe=_describe, recorded=batch.schemas)
    for lsn, payload in [(0, begin_msg(0x6000, 902)), (0, wider), (0x5100, truncate_msg(7))]:
        again.handle(payload, lsn)
    taken = again.take()
    assert taken is not None and "source_schemas" not in taken.rows
    assert taken.rows["cdc_stock"].column("op").to_pylist() == ["t"]
