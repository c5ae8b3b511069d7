"""The behaviour-event models compile for BigQuery, offline, into SQL BigQuery's grammar accepts.

dbt-bigquery compiles the project with a fake token and without asking the warehouse anything
(the project's is_incremental() answers from var('compile_as')), both as a first build and as
an incremental run; sqlglot's BigQuery dialect then parses every compiled events model. What
differs between the warehouses goes through dispatched macros, so a DuckDB-only function left in
a model shows up here as a parse error or as DuckDB spelling.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlglot

from tests.support.transform import DbtProject

pytest.importorskip("dbt.adapters.bigquery", reason="dbt-bigquery is in the dev dependencies")

EVENTS_MODELS = (
    "staging/events/stg_events.sql",
    "staging/events/stg_events_rejected.sql",
    "staging/events/stg_event_items.sql",
    "staging/events/stg_identities.sql",
    "marts/events/sessions.sql",
    "marts/events/daily_funnel.sql",
    "marts/events/product_performance.sql",
    "marts/events/cart_abandonment.sql",
    "marts/events/session_id_agreement.sql",
    "marts/events/tracking_coverage.sql",
)
# Spellings only DuckDB knows; none may reach BigQuery SQL.
DUCKDB_ONLY = ("json_extract_string", "try_cast", "epoch_us(", "regexp_matches", "lambda ")


@pytest.mark.parametrize("compile_as", ["full", "incremental"])
def test_events_models_compile_to_bigquery_sql(tmp_path: Path, compile_as: str) -> None:
    project = DbtProject(
        tmp_path / "project",
        tmp_path / "unused.duckdb",
        {"compile_as": compile_as, "captured_tables": ["stg_orders", "stg_order_items"]},
    )
    profile = {
        "shopstream": {
            "target": "bigquery",
            "outputs": {
                "bigquery": {
                    "type": "bigquery",
                    "method": "oauth-secrets",
                    "token": "fake-token",
                    "project": "shop-test",
                    "dataset": "staging",
                    "threads": 1,
                }
            },
        }
    }
    (project.directory / "profiles.yml").write_text(json.dumps(profile), encoding="utf-8")
    for name in ("orders", "order_items"):  # what the CDC generator writes for the shop
        project.add_model(f"staging/shop/stg_{name}.sql", "select 1 as order_id")

    result = project.invoke(
        "compile", "--target", "bigquery", "--no-introspect", "--no-populate-cache"
    )

    assert result.success, "\n".join(result.failures)
    compiled = project.directory / "target" / "compiled" / "shopstream" / "models"
    for model in EVENTS_MODELS:
        sql = (compiled / model).read_text(encoding="utf-8")
        sqlglot.parse(sql, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
        assert not [word for word in DUCKDB_ONLY if word in sql.lower()], model
