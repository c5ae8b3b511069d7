"""The whole dbt project compiles for BigQuery, offline, into SQL that BigQuery's grammar accepts.

dbt-bigquery renders every model (`dbt compile --no-introspect`, the `compile_as` var answers
is_incremental() without a warehouse; the token is fake and never used) with the CDC models of
the shop's tables and of an odd table generated; each compiled model is parsed with sqlglot's
BigQuery dialect, and constructs sqlglot knows BigQuery lacks are refused too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from shopstream.transform.cdc_models import CapturedTable, SourceColumn
from tests.support.dbt_project import captured_vars, make_workspace, run_dbt, write_profile

BIGQUERY = {
    "type": "bigquery",
    "method": "oauth-secrets",
    "token": "fake",
    "project": "some-project",
    "dataset": "staging",
    "threads": 1,
}


def table(
    raw: str, schema: str, name: str, columns: list[tuple[str, str]], key: tuple[str, ...]
) -> CapturedTable:
    return CapturedTable(
        raw,
        schema,
        name,
        1,
        tuple(SourceColumn(n, t, t, n in key, n not in key) for n, t in columns),
        key,
    )


TS = "timestamp with time zone"
SHOP = [
    table("cdc_users", "public", "users", [("user_id", "text"), ("email", "text"),
          ("name", "text"), ("grade", "text"), ("created_at", TS), ("updated_at", TS)],
          ("user_id",)),
    table("cdc_products", "public", "products", [("product_id", "text"), ("name", "text"),
          ("category", "text"), ("storage_type", "text"), ("price", "numeric(12,2)"),
          ("stock", "integer"), ("updated_at", TS)], ("product_id",)),
    table("cdc_orders", "public", "orders", [("order_id", "text"), ("user_id", "text"),
          ("status", "text"), ("delivery_type", "text"), ("total_amount", "numeric(14,2)"),
          ("created_at", TS), ("updated_at", TS)], ("order_id",)),
    table("cdc_order_items", "public", "order_items", [("order_id", "text"),
          ("line_no", "integer"), ("product_id", "text"), ("quantity", "integer"),
          ("unit_price", "numeric(12,2)")], ("order_id", "line_no")),
    table("cdc_payments", "public", "payments", [("payment_id", "text"), ("order_id", "text"),
          ("method", "text"), ("amount", "numeric(14,2)"), ("status", "text"),
          ("paid_at", TS), ("refunded_at", TS)], ("payment_id",)),
]  # fmt: skip
ODD = [
    # Every kind of type, an odd column name, a key of three columns, another schema.
    table("cdc_sales__ledger", "sales", "ledger", [
        ("id", "bigint"), ("part", "character varying(8)"), ("at", "date"),
        ("plain", "numeric"), ("wide", "numeric(40,10)"), ("huge", "numeric(80,2)"),
        ("cash", "money"), ("ratio", "double precision"), ("ok", "boolean"),
        ("tags", "text[]"), ("grid", "integer[]"), ("blob", "bytea"), ("doc", "jsonb"),
        ("at_utc", TS), ("at_wall", "timestamp(3) without time zone"), ("clock", "time"),
        ("span", "interval"), ("uid", "uuid"), ("odd name", "text"), ("Mixed", "smallint"),
        ("tz_clock", "time with time zone"), ("neg_scale", "numeric(5,-2)")],
        ("id", "part", "at")),
    # No primary key: a history only.
    table("cdc_audit", "public", "audit", [("id", "integer"), ("note", "text")], ()),
]  # fmt: skip


def compile_for_bigquery(workspace: Path, compile_as: str, names: list[str]) -> dict[str, str]:
    """Every compiled model's SQL by model name."""
    variables: dict[str, Any] = {**captured_vars(names), "compile_as": compile_as}
    shutil.rmtree(workspace / "target" / "compiled", ignore_errors=True)  # no stale models
    run_dbt(
        workspace,
        "compile",
        "--target",
        "bigquery",
        "--no-introspect",
        "--no-populate-cache",
        variables=variables,
    )
    compiled = workspace / "target" / "compiled" / "shopstream" / "models"
    return {path.stem: path.read_text() for path in compiled.rglob("*.sql")}


#: sqlglot parses these in any dialect, but BigQuery has no such type or function.
DUCKDB_ONLY_TYPES = {exp.DataType.Type.INT128, exp.DataType.Type.UINT128}
DUCKDB_ONLY_FUNCTIONS = (exp.RegexpFullMatch, exp.ConcatWs)


def check_bigquery(sql: str) -> None:
    """Raise unless ``sql`` is BigQuery SQL as far as sqlglot can tell.

    Beyond the grammar: a function sqlglot knows in no dialect (exp.Anonymous; BigQuery's own
    are all known to it, e.g. SAFE.PARSE_JSON) is most likely a DuckDB function that slipped
    through a macro without a bigquery__ version, and so are the few listed above.
    """
    tree = sqlglot.parse_one(sql, read="bigquery", error_level=ErrorLevel.RAISE)
    # Generating BigQuery SQL again refuses what sqlglot knows BigQuery does not support.
    tree.sql(dialect="bigquery", unsupported_level=ErrorLevel.RAISE)
    for node in tree.find_all(exp.DataType):
        if node.this in DUCKDB_ONLY_TYPES:
            raise ValueError(f"{node.sql('bigquery')} is not a BigQuery type")
    for function in tree.find_all(exp.Anonymous, *DUCKDB_ONLY_FUNCTIONS):
        # BigQuery's NET.* functions (IP prefixes in stg_events) are known to sqlglot only as
        # a namespace: what it calls in there is BigQuery's own.
        if isinstance(function.parent, exp.NetFunc):
            continue
        raise ValueError(f"{function.sql('bigquery')}: not a BigQuery function")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    directory = tmp_path_factory.mktemp("bigquery") / "transform"
    names = make_workspace(directory, [*SHOP, *ODD])
    write_profile(directory, {"bigquery": BIGQUERY}, "bigquery")
    return directory, names


@pytest.mark.parametrize("compile_as", ["incremental", "full"])
def test_every_model_compiles_to_bigquery_sql(
    workspace: tuple[Path, list[str]], compile_as: str
) -> None:
    directory, names = workspace
    compiled = compile_for_bigquery(directory, compile_as, names)
    expected = {*names, "daily_sales", "customer_rfm", "cohort_retention"}
    assert expected <= set(compiled)
    assert "stg_audit" not in compiled and "stg_audit_history" in compiled
    for name, sql in sorted(compiled.items()):
        try:
            check_bigquery(sql)
        except Exception as exc:
            raise AssertionError(f"model {name} is not BigQuery SQL: {exc}\n{sql}") from exc
    # Incremental runs read a window of raw and merge against the staged rows.
    assert ("cdc_merged" in compiled["stg_orders"]) == (compile_as == "incremental")
    ledger = compiled["stg_sales__ledger"]
    # The typing picked BigQuery's types (and not DuckDB's) for the odd table.
    for fragment in ("AS BIGNUMERIC(40, 10)", "AS NUMERIC)", "SAFE.FROM_BASE64", "INT64",
                     "SAFE.PARSE_DATETIME", "JSON_QUERY", "`odd name`"):  # fmt: skip
        assert fragment in ledger, fragment


def test_a_duckdb_only_construct_fails_the_check(workspace: tuple[Path, list[str]]) -> None:
    """The check is not blind: DuckDB's integer division (`//`), HUGEINT, and the DuckDB
    version of a macro called where the dispatched one belongs all fail it."""
    directory, names = workspace
    models = directory / "models" / "marts"
    broken = {
        "duckdb_division": "select 7 // 2 as halves",
        "duckdb_type": "select cast(1 as hugeint) as big",
        "duckdb_json": "select {{ default__cdc_json_text('x') }} as t from (select 1 as x)",
        "duckdb_decimal": "select {{ default__cdc_typed('x', 'numeric(14,2)') }} as d "
        "from (select 1 as x)",
    }
    for name, sql in broken.items():
        (models / f"{name}.sql").write_text(sql + "\n")
    try:
        compiled = compile_for_bigquery(directory, "full", names)
    finally:
        for name in broken:
            (models / f"{name}.sql").unlink()
    with pytest.raises(sqlglot.errors.ParseError):
        check_bigquery(compiled["duckdb_division"])
    with pytest.raises(ValueError, match="not a BigQuery type"):
        check_bigquery(compiled["duckdb_type"])
    with pytest.raises(ValueError, match=r"json_extract_string.*not a BigQuery function"):
        check_bigquery(compiled["duckdb_json"])
    with pytest.raises(ValueError, match="not a BigQuery function"):
        check_bigquery(compiled["duckdb_decimal"])
