"""cdc_models: rows of raw.source_schemas -> captured tables -> the files of their models."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from shopstream.transform.cdc_models import (
    CapturedTable,
    SchemaRecordError,
    assign_model_names,
    captured_tables,
    hand_written_models,
    write_models,
)


def record(raw_table: str, version: int, columns: list[dict[str, Any]], key: list[str]) -> dict:
    return {
        "raw_table": raw_table,
        "source_schema": "public",
        "source_table": raw_table.removeprefix("cdc_"),
        "version": version,
        "fingerprint": f"f{version}",
        "columns": json.dumps(columns),
        "primary_key": json.dumps(key),
    }


def column(name: str, type_: str = "text", key: bool = False, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "base_type": type_, "key": key, "nullable": not key,
            **extra}  # fmt: skip


ORDERS_V1 = [column("order_id", key=True), column("total_amount", "numeric(14,2)")]
ORDERS_V2 = [*ORDERS_V1, column("status")]


def test_newest_version_wins_and_resent_versions_count_once() -> None:
    rows = [
        record("cdc_orders", 2, ORDERS_V2, ["order_id"]),
        record("cdc_orders", 1, ORDERS_V1, ["order_id"]),
        record("cdc_orders", 2, ORDERS_V2, ["order_id"]),  # at-least-once: sent again
        record("cdc_audit", 1, [column("id", "integer"), column("note")], []),
    ]
    tables = captured_tables(rows)
    assert [(t.raw_table, t.version) for t in tables] == [("cdc_audit", 1), ("cdc_orders", 2)]
    orders = tables[1]
    assert orders.model_name == "stg_orders" and orders.primary_key == ("order_id",)
    assert [(c.name, c.base_type, c.key) for c in orders.columns] == [
        ("order_id", "text", True),
        ("total_amount", "numeric(14,2)", False),
        ("status", "text", False),
    ]
    assert not tables[0].has_current_state


def test_parsed_json_is_accepted_too() -> None:
    # BigQuery's client hands JSON columns over parsed.
    row = record("cdc_orders", 1, ORDERS_V1, ["order_id"])
    row["columns"], row["primary_key"] = ORDERS_V1, ["order_id"]
    assert captured_tables([row])[0].columns[1].type == "numeric(14,2)"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"raw_table": "orders"}, "is not a cdc_ table"),
        ({"columns": "[{"}, "columns is not JSON"),
        ({"columns": "[]"}, "columns must be a non-empty list"),
        ({"primary_key": '["nope"]'}, r"primary key columns \['nope'\] are not columns"),
        ({"columns": json.dumps([column("a"), column("a")])}, "appears twice"),
        ({"columns": json.dumps([{"name": "a"}])}, "has no 'type'"),
        ({"version": "two"}, "version must be an integer"),
    ],
)
def test_bad_rows_are_named(change: dict[str, Any], message: str) -> None:
    row = {**record("cdc_orders", 1, ORDERS_V1, []), **change}
    with pytest.raises(SchemaRecordError, match=message):
        captured_tables([row])


def test_one_version_with_two_schemas_is_an_error() -> None:
    rows = [
        record("cdc_orders", 1, ORDERS_V1, ["order_id"]),
        record("cdc_orders", 1, ORDERS_V2, ["order_id"]),
    ]
    with pytest.raises(SchemaRecordError, match="version 1 is recorded twice"):
        captured_tables(rows)


def shop_table(name: str, columns: list[dict[str, Any]], key: list[str]) -> CapturedTable:
    return captured_tables([record(f"cdc_{name}", 1, columns, key)])[0]


def test_written_models_and_their_yml(tmp_path: Path) -> None:
    orders = shop_table(
        "orders",
        [column("order_id", key=True), column("user_id"), column("status"), column("odd")],
        ["order_id"],
    )
    items = shop_table(
        "order_items",
        [column("order_id", key=True), column("line_no", "integer", key=True)],
        ["order_id", "line_no"],
    )
    audit = shop_table("audit", [column("id", "integer")], [])
    (tmp_path / "stg_gone.sql").write_text("-- a table no longer captured")
    names = write_models([orders, items, audit], tmp_path)
    assert names == [
        "stg_orders", "stg_orders_history", "stg_order_items", "stg_order_items_history",
        "stg_audit_history", "pipeline_freshness",
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{n}.sql" for n in names] + ["cdc_staging.yml"]
    )
    sql = (tmp_path / "stg_order_items.sql").read_text()
    assert "cdc_current(source('cdc', 'cdc_order_items')" in sql
    assert 'primary_key=["order_id", "line_no"]' in sql
    history = (tmp_path / "stg_audit_history.sql").read_text()
    assert "cdc_history(source('cdc', 'cdc_audit')" in history

    document = yaml.safe_load((tmp_path / "cdc_staging.yml").read_text())
    assert document["sources"][0]["name"] == "cdc" and document["sources"][0]["schema"] == "raw"
    models = {m["name"]: m for m in document["models"]}
    columns = {c["name"]: c for c in models["stg_orders"]["columns"]}
    # The shop's hand-written documentation and tests, for the columns the table has.
    assert columns["status"]["description"].startswith("Current status")
    assert {"accepted_values"} <= {next(iter(t)) for t in columns["status"]["data_tests"]
                                   if isinstance(t, dict)}  # fmt: skip
    # stg_users is not generated: no relationship test points at it.
    assert columns["user_id"]["data_tests"] == ["not_null"]
    assert columns["odd"]["description"] == "Source column odd (text)."
    item_columns = {c["name"]: c for c in models["stg_order_items"]["columns"]}
    assert {"relationships": {"arguments": {"to": "ref('stg_orders')", "field": "order_id"}}} in (
        item_columns["order_id"]["data_tests"]
    )
    assert models["stg_order_items"]["data_tests"] == [
        {"cdc_unique_key": {"arguments": {"columns": ["order_id", "line_no"]}}}
    ]
    assert all(c.get("description") for m in models.values() for c in m["columns"])


# -- model names that would clash ---------------------------------------------------------------

KEYED = [column("id", "integer", key=True), column("note")]


def names_of(rows: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {t.raw_table: (t.model_name, t.history_model_name) for t in captured_tables(rows)}


def test_a_table_named_like_another_ones_history_gets_another_name(tmp_path: Path) -> None:
    expected = {
        "cdc_orders": ("stg_orders", "stg_orders_history"),
        "cdc_orders_history": ("stg_orders_history_cdc", "stg_orders_history_cdc_history"),
    }
    rows = [record("cdc_orders_history", 1, KEYED, ["id"]), record("cdc_orders", 1, KEYED, ["id"])]
    assert names_of(rows) == expected
    assert names_of(rows[::-1]) == expected  # the order they come in changes nothing
    # Written, the four models are four files, each its own table's.
    written = write_models(captured_tables(rows), tmp_path)
    assert sorted(written) == sorted([*(n for pair in expected.values() for n in pair),
                                      "pipeline_freshness"])  # fmt: skip
    assert "cdc_orders_history" in (tmp_path / "stg_orders_history_cdc.sql").read_text()
    assert "'cdc_orders'" in (tmp_path / "stg_orders_history.sql").read_text()


def test_hand_written_model_names_are_not_taken(tmp_path: Path) -> None:
    handwritten = {"stg_events", "stg_identities", "stg_event_items", "stg_events_rejected"}
    assert handwritten <= hand_written_models()
    assert {"daily_sales", "customer_rfm", "pipeline_freshness"} <= hand_written_models()
    rows = [
        record("cdc_events", 1, KEYED, ["id"]),
        record("cdc_identities", 1, KEYED, []),
        record("cdc_events_cdc", 1, KEYED, ["id"]),  # the first rename's own name: kept
        record("cdc_daily_sales", 1, KEYED, ["id"]),  # no stg_ prefix: no clash
    ]
    assert names_of(rows) == {
        "cdc_daily_sales": ("stg_daily_sales", "stg_daily_sales_history"),
        "cdc_events": ("stg_events_cdc2", "stg_events_cdc2_history"),
        "cdc_events_cdc": ("stg_events_cdc", "stg_events_cdc_history"),
        "cdc_identities": ("stg_identities_cdc", "stg_identities_cdc_history"),
    }
    names = write_models(captured_tables(rows), tmp_path)
    assert not set(names) & (hand_written_models() - {"pipeline_freshness"})
    assert len(names) == len(set(names)) == len(list(tmp_path.glob("*.sql")))


def test_no_free_name_is_an_error_naming_both_tables() -> None:
    reserved = frozenset({"stg_x"} | {f"stg_x_cdc{n if n > 1 else ''}" for n in range(1, 10)})
    table = captured_tables([record("cdc_x", 1, KEYED, ["id"])])[0]
    with pytest.raises(SchemaRecordError, match=r"cdc_x: stg_x is a hand-written model"):
        assign_model_names([table], reserved)
    other = captured_tables([record("cdc_y", 1, KEYED, ["id"])])[0]
    history = replace(other, raw_table="cdc_x_history")
    renames = frozenset(f"stg_x_history_cdc{n if n > 1 else ''}" for n in range(1, 10))
    with pytest.raises(SchemaRecordError, match="for cdc_x_history: stg_x_history is cdc_x's"):
        assign_model_names([table, history], renames)
