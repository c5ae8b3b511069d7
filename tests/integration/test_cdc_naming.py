"""Raw table names of captured tables: one raw table per source table, across schemas.

``raw.cdc_<table>`` for the default schema (public), ``raw.cdc_<schema>__<table>`` for the
others, and a name with a hash of the exact source name for anything that is not plain lower-case
words joined by single underscores (so ``public.sales__orders`` cannot meet ``sales.orders``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shopstream.cdc import catalog
from shopstream.events.raw import cdc_table_name
from tests.support.cdc import ReaderThread

_VALID = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@pytest.mark.parametrize(
    ("schema", "table", "expected"),
    [
        ("public", "orders", "cdc_orders"),  # as before: the default schema keeps its names
        ("public", "order_items", "cdc_order_items"),
        ("sales", "orders", "cdc_sales__orders"),
        ("sales_eu", "order_items", "cdc_sales_eu__order_items"),
        ("public", "2024_orders", "cdc_2024_orders"),
    ],
)
def test_plain_names(schema: str, table: str, expected: str) -> None:
    assert cdc_table_name(table, schema) == expected


# Pairs that a plain mapping would fold together (and did: the schema was dropped, case and
# punctuation were folded to "_"), each pair must get two raw tables.
COLLIDING = [
    (("public", "orders"), ("sales", "orders")),
    (("public", "sales__orders"), ("sales", "orders")),
    (("sales__eu", "orders"), ("sales", "eu__orders")),
    (("public", "Orders"), ("public", "orders")),
    (("public", "order-items"), ("public", "order_items")),
    (("public", "order items"), ("public", "order_items")),
    (("Sales", "orders"), ("sales", "orders")),
    (("public", "_orders"), ("public", "orders")),
    (("public", "orders_"), ("public", "orders")),
    (("public", "x" * 63), ("public", "x" * 62 + "y")),  # long names are shortened
]


@pytest.mark.parametrize(("first", "second"), COLLIDING)
def test_names_that_a_plain_mapping_folds_together_stay_apart(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    a, b = cdc_table_name(first[1], first[0]), cdc_table_name(second[1], second[0])
    assert a != b
    assert _VALID.fullmatch(a) and _VALID.fullmatch(b), (a, b)
    assert cdc_table_name(first[1], first[0]) == a  # deterministic: the same table, same name


_names = st.text(
    alphabet=st.sampled_from("abcAB_-. 0ü"), min_size=1, max_size=70
) | st.sampled_from(["public", "sales", "orders", "sales__orders", "eu__orders", "sales__eu"])


@given(st.sets(st.tuples(_names, _names), min_size=2, max_size=30))
def test_every_source_table_gets_its_own_valid_name(tables: set[tuple[str, str]]) -> None:
    names = {cdc_table_name(table, schema) for schema, table in tables}
    assert len(names) == len(tables)
    assert all(_VALID.fullmatch(name) for name in names), names


def _execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _rows(reader: ReaderThread, table: str) -> list[dict[str, Any]]:
    return [
        {"op": r["op"], "after": orjson.loads(r["after"]), "source": orjson.loads(r["source"])}
        for r in reader.query(f"SELECT op, after, source FROM raw.{table} ORDER BY change_id")
    ]


def test_same_named_tables_in_two_schemas_land_in_two_raw_tables(
    postgres: Any, tmp_path: Path
) -> None:
    dsn = postgres.dsn
    _execute(
        dsn,
        "CREATE SCHEMA sales",
        "CREATE TABLE public.orders (id int PRIMARY KEY, note text)",
        "CREATE TABLE sales.orders (id int PRIMARY KEY, note text)",
        'CREATE TABLE public."sales__orders" (id int PRIMARY KEY, note text)',
        "INSERT INTO public.orders VALUES (1, 'public snapshot')",
        "INSERT INTO sales.orders VALUES (1, 'sales snapshot')",
        "INSERT INTO public.sales__orders VALUES (1, 'public sales__orders snapshot')",
    )
    # One reader captures both schemas: the table list names them (schema.table).
    tables = ["orders", "sales.orders", "public.sales__orders"]
    reader = ReaderThread(dsn, tmp_path, snapshot_mode="initial", tables=tables).start()
    raw = {
        "public.orders": cdc_table_name("orders"),
        "sales.orders": cdc_table_name("orders", "sales"),
        "public.sales__orders": cdc_table_name("sales__orders"),
    }
    assert raw["public.orders"] == "cdc_orders"
    assert raw["sales.orders"] == "cdc_sales__orders"
    assert len(set(raw.values())) == 3
    try:
        _execute(
            dsn,
            "INSERT INTO public.orders VALUES (2, 'public change')",
            "INSERT INTO sales.orders VALUES (2, 'sales change')",
            "INSERT INTO public.sales__orders VALUES (2, 'public sales__orders change')",
        )
        for table in raw.values():
            reader.wait_until(lambda t=table: reader.count(t) == 2, table)
        got = {source: _rows(reader, table) for source, table in raw.items()}
    finally:
        reader.stop()
    for source, changes in got.items():
        schema, table = source.split(".")
        assert [(c["op"], c["after"]["id"]) for c in changes] == [("r", 1), ("c", 2)], source
        assert {(c["source"]["schema"], c["source"]["table"]) for c in changes} == {(schema, table)}
    assert got["sales.orders"][1]["after"]["note"] == "sales change"
    assert got["public.orders"][1]["after"]["note"] == "public change"


def test_a_table_list_spans_schemas(postgres: Any) -> None:
    dsn = postgres.dsn
    _execute(
        dsn,
        "CREATE SCHEMA sales",
        "CREATE TABLE public.orders (id int PRIMARY KEY)",
        "CREATE TABLE sales.orders (id int PRIMARY KEY)",
        'CREATE TABLE public."my.table" (id int PRIMARY KEY)',
    )
    conn = catalog.connect(dsn)
    try:
        catalog.ensure_publication(conn, "pub", "public", ["orders", "sales.orders"])
        assert catalog.publication_tables(conn, "pub") == [
            ("public", "orders"),
            ("sales", "orders"),
        ]
        # Changing the list alters the publication; a dotted table name is written qualified.
        catalog.ensure_publication(conn, "pub", "public", ["sales.orders", "public.my.table"])
        assert catalog.publication_tables(conn, "pub") == [
            ("public", "my.table"),
            ("sales", "orders"),
        ]
        with pytest.raises(catalog.CdcSetupError, match="empty schema or table"):
            catalog.ensure_publication(conn, "pub", "public", [".orders"])
    finally:
        conn.close()
