"""`shopstream optimize-sql` as a user runs it (a fresh process): on a file and on stdin, in the
three formats, on the generated shop; its exit statuses; and against a running platform that
holds the warehouse, through the local socket's POST /v1/optimize."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shopstream.config import QuerySettings
from shopstream.genai.optimizer.findings import OptimizationReport
from shopstream.genai.optimizer.query import SqlSyntaxError
from shopstream.runtime import read_runtime
from shopstream.warehouse.base import Warehouse
from shopstream.warehouse.duckdb.query_endpoint import (
    OPTIMIZE_ROUTE,
    OptimizeCall,
    create_query_app,
)
from tests.support.collector import CollectorProcess
from tests.support.shop_warehouse import ShopWarehouse, shopstream

QUERY = """with sales as (select * from mart.daily_sales)
select category, sum(net_revenue) as revenue
from sales
group by category
"""


@pytest.fixture(scope="module")
def query_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("queries") / "sales.sql"
    path.write_text(QUERY, encoding="utf-8")
    return path


def test_a_file_as_a_table(shop_warehouse: ShopWarehouse, query_file: Path) -> None:
    done = shopstream(shop_warehouse.env, "optimize-sql", str(query_file))
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert " finding" in first and "; scans " in first, done.stdout
    assert "cost: estimate from column sizes" in done.stdout


def test_stdin_as_json_is_the_report(shop_warehouse: ShopWarehouse) -> None:
    done = shopstream(shop_warehouse.env, "optimize-sql", "-", "--format", "json", input=QUERY)
    assert done.returncode == 0, done.stderr
    report = OptimizationReport.model_validate(json.loads(done.stdout))
    assert report.sql == QUERY and report.dialect == "duckdb"
    assert report.warehouse == f"duckdb:///{shop_warehouse.data_dir}/shopstream.duckdb"
    assert report.cost_before is not None and report.cost_before.bytes > 0
    assert report.verified, report.rewrites
    for rewrite in report.verified:
        assert rewrite.cost_after is not None
        assert rewrite.verification.compared_on.startswith("full data")


def test_markdown_and_the_bigquery_dialect(shop_warehouse: ShopWarehouse) -> None:
    bigquery = (
        "SELECT category, SUM(net_revenue) AS revenue FROM `shop-prod.mart.daily_sales` "
        "GROUP BY category"
    )
    done = shopstream(
        shop_warehouse.env,
        "optimize-sql",
        "-",
        "-f",
        "markdown",
        "--dialect",
        "bigquery",
        input=bigquery,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# SQL optimizer: ")
    assert "```sql\n" + bigquery + "\n```" in done.stdout
    assert "Cost measured by estimate from column sizes" in done.stdout


def test_usage_errors_exit_2_with_the_reason(shop_warehouse: ShopWarehouse, tmp_path: Path) -> None:
    env = shop_warehouse.env
    done = shopstream(env, "optimize-sql", "-", input="select event_id, from where raw.events")
    assert done.returncode == 2
    assert "the query is not valid duckdb SQL at line 1" in done.stderr
    done = shopstream(env, "optimize-sql", str(tmp_path / "missing.sql"))
    assert done.returncode == 2 and "cannot read" in done.stderr and "missing.sql" in done.stderr
    done = shopstream(env, "optimize-sql", "-", input="  \n")
    assert done.returncode == 2 and "standard input holds no query" in done.stderr
    done = shopstream(env, "optimize-sql", "-", "--format", "yaml", input=QUERY)
    assert done.returncode == 2 and "use one of table, json, markdown" in done.stderr
    done = shopstream(env, "optimize-sql", "-", "--dialect", "postgres", input=QUERY)
    assert done.returncode == 2 and "use one of duckdb, bigquery" in done.stderr


def test_no_warehouse_exits_1(tmp_path: Path, shop_warehouse: ShopWarehouse) -> None:
    env = {**shop_warehouse.env, "SHOPSTREAM_DATA_DIR": str(tmp_path)}
    done = shopstream(env, "optimize-sql", "-", input=QUERY)
    assert done.returncode == 1
    assert "no warehouse at" in done.stderr


# -- a running platform answers for the file it holds ------------------------------------------


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, shop_warehouse: ShopWarehouse
) -> Iterator[CollectorProcess]:
    """A platform holding a copy of the generated shop (rows to verify rewrites on)."""
    data_dir = tmp_path_factory.mktemp("optimize-running")
    shutil.copy(shop_warehouse.data_dir / "shopstream.duckdb", data_dir / "shopstream.duckdb")
    process = CollectorProcess(data_dir)
    process.start()
    yield process
    assert process.stop() == 0, process.log()


def endpoint(process: CollectorProcess) -> tuple[httpx.Client, str]:
    runtime = read_runtime(process.data_dir)
    assert runtime is not None
    transport = httpx.HTTPTransport(uds=runtime["socket"])
    client = httpx.Client(transport=transport, base_url="http://shopstream", timeout=120)
    return client, runtime["token"]


def test_the_route_refuses_without_the_token(running: CollectorProcess) -> None:
    client, token = endpoint(running)
    with client:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            response = client.post(OPTIMIZE_ROUTE, json={"sql": "select 1"}, headers=headers)
            assert response.status_code == 401, response.text
            assert "missing or wrong token" in response.json()["error"]
        # The same limits as /v1/sql: an unknown field is refused before anything runs.
        response = client.post(
            OPTIMIZE_ROUTE,
            json={"sql": "select 1", "limit": 3},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 400 and "limit" in response.json()["error"]


def test_the_running_platform_optimizes_over_its_socket(running: CollectorProcess) -> None:
    client, token = endpoint(running)
    auth = {"Authorization": f"Bearer {token}"}
    sql = "select event_id, event_type from raw.events where event_date = '2026-11-28'"
    with client:
        response = client.post(OPTIMIZE_ROUTE, json={"sql": QUERY}, headers=auth)
        assert response.status_code == 200, response.text
        report = OptimizationReport.model_validate(response.json())
        assert report.sql == QUERY and report.cost_before is not None
        # Verified where the platform holds the shop: on its full data.
        assert report.verified, report.rewrites
        assert all(r.verification.compared_on.startswith("full data") for r in report.verified)
        # The body cap of /v1/sql: a larger request is refused unread.
        huge = "select 1 as x" + " " * 300_000
        response = client.post(OPTIMIZE_ROUTE, json={"sql": huge}, headers=auth)
        assert response.status_code == 413
        assert "over the limit of 262144 bytes" in response.json()["error"]
        response = client.post(OPTIMIZE_ROUTE, json={"sql": "select from where"}, headers=auth)
        assert response.status_code == 400
        assert response.json()["invalid_sql"] is True
        assert response.json()["error"].startswith("the query is not valid duckdb SQL")
    # The command, while the platform holds the file: it asks the platform.
    done = shopstream(running.env(), "optimize-sql", "-", "--format", "json", input=sql)
    assert done.returncode == 0, done.stderr
    report = OptimizationReport.model_validate(json.loads(done.stdout))
    assert report.warehouse == f"duckdb:///{running.data_dir}/shopstream.duckdb"
    assert report.cost_before is not None


# -- the route in process: what a busy or failing optimizer answers ---------------------------


def _app(shop_reader: Warehouse, optimize: OptimizeCall) -> FastAPI:
    return create_query_app(shop_reader, "the-token", QuerySettings(), optimize=optimize)


async def _post(app: FastAPI, sql: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shopstream") as client:
        return await client.post(
            OPTIMIZE_ROUTE, json={"sql": sql}, headers={"Authorization": "Bearer the-token"}
        )


def test_a_busy_optimizer_answers_503_instead_of_queueing(shop_reader: Warehouse) -> None:
    """The optimizer is a stand-in that holds its worker until told (the real one would take
    as long only with a slow LLM); what is tested is the route's refusal meanwhile."""
    release = threading.Event()
    started = threading.Event()

    def slow(body: dict[str, Any]) -> dict[str, Any]:
        started.set()
        release.wait(30)
        return {"sql": body["sql"]}

    app = _app(shop_reader, slow)

    async def both() -> tuple[httpx.Response, httpx.Response]:
        first = asyncio.ensure_future(_post(app, "select 1"))
        while not started.is_set():
            await asyncio.sleep(0.01)
        second = await _post(app, "select 2")
        release.set()
        return await first, second

    first, second = asyncio.run(both())
    assert first.status_code == 200 and first.json() == {"sql": "select 1"}
    assert second.status_code == 503, second.text
    assert second.headers["Retry-After"] == "5"
    assert "busy with another query" in second.json()["error"]
    # Once free, it answers again.
    assert asyncio.run(_post(app, "select 3")).status_code == 200


def test_only_invalid_sql_is_a_400(shop_reader: Warehouse) -> None:
    def failing(body: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("a bug in a rule, not the caller's SQL")

    response = asyncio.run(_post(_app(shop_reader, failing), "select 1"))
    assert response.status_code == 500, response.text
    assert "invalid_sql" not in response.json()
    assert "ValueError: a bug in a rule" in response.json()["error"]

    def invalid(body: dict[str, Any]) -> dict[str, Any]:
        raise SqlSyntaxError("the query is not valid duckdb SQL at line 1")

    response = asyncio.run(_post(_app(shop_reader, invalid), "select from"))
    assert response.status_code == 400
    assert response.json() == {
        "error": "the query is not valid duckdb SQL at line 1",
        "invalid_sql": True,
    }
