"""Fuzzing the query endpoint: no body, token or SQL text gets a 5xx; bad SQL gets a 400 with
DuckDB's message.

Schema-driven requests (schemathesis, from the endpoint's own OpenAPI) go in-process to the
endpoint's app around a real DuckDB writer process; SQL text and tokens go over the real Unix
socket of a running collector process.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shopstream.config import QuerySettings
from shopstream.runtime import read_runtime
from shopstream.warehouse.duckdb.query_endpoint import ROUTE, create_query_app
from shopstream.warehouse.duckdb.writer_process import WarehouseProcess
from tests.support.collector import CollectorProcess
from tests.support.rows import events_table

TOKEN = "fuzz-token"


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarehouseProcess]:
    path: Path = tmp_path_factory.mktemp("query-fuzz") / "shopstream.duckdb"
    process = WarehouseProcess(path)
    process.ensure_layers()
    process.append({"events": events_table("a", "b", "c")})
    yield process
    process.close()


def test_no_request_makes_the_endpoint_fail(warehouse: WarehouseProcess) -> None:
    app = create_query_app(warehouse, TOKEN, QuerySettings(max_body_bytes=4096))
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in api.get_all_operations()]
    assert [op.path for op in operations] == [ROUTE]
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    statuses: set[int] = set()
    messages: list[str] = []

    def exercise(case: schemathesis.Case, with_token: bool) -> None:
        if with_token:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
        response = case.call_and_validate(checks=checks)
        statuses.add(response.status_code)
        if response.status_code == 400:
            messages.append(response.json()["error"])

    for operation, mode, with_token in product(
        operations, schemathesis.GenerationMode, (True, False)
    ):

        @given(case=operation.as_strategy(mode), token=st.just(with_token))
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case, token: bool) -> None:
            exercise(case, token)

        run()
    app.state.workers.shutdown()
    # The fuzzing reached DuckDB (its parser answered), not only the gatekeeping.
    assert {400, 401} <= statuses
    assert any("Parser Error" in m or "syntax error" in m for m in messages)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path_factory.mktemp("query-fuzz-socket"))
    process.start()
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log(), process.log()


@pytest.fixture(scope="module")
def client(running: CollectorProcess) -> Iterator[tuple[httpx.Client, str]]:
    runtime = read_runtime(running.data_dir)
    assert runtime is not None
    transport = httpx.HTTPTransport(uds=runtime["socket"])
    with httpx.Client(transport=transport, base_url="http://shopstream", timeout=60) as http:
        yield http, runtime["token"]


_WORDS = [
    "SELECT", "FROM", "WHERE", "WITH", "EXPLAIN", "ANALYZE", "DESCRIBE", "SHOW", "SUMMARIZE",
    "COPY", "ATTACH", "PRAGMA", "IMPORT", "DATABASE", "INSERT", "DELETE", "DROP", "CREATE",
    "SET", "CALL", "LOAD", "INSTALL", "TO", "AS", "(", ")", ",", ";", "*", "'", '"', "--",
    "/*", "*/", "raw.events", "raw.dead_letter", "staging.stg_events", "range(10)",
    "read_csv('/etc/passwd')", "glob('/*')", "count(*)", "1", "NULL", "'x'", "?", "$1",
    "event_id", "::INT", "::HUGEINT", "::UHUGEINT", "::BLOB", "::TIMESTAMP",
    "9999999999999999999999",
    "'294247-01-10'", "1e308", "'nan'::DOUBLE", "[1,2]", "{'a': 1}", "map([1],[2])",
]  # fmt: skip
sql_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(_WORDS), max_size=12).map(" ".join),
    st.lists(st.sampled_from(_WORDS), max_size=6).map(lambda w: "SELECT " + " ".join(w)),
)


@given(sql=sql_text, limit=st.one_of(st.none(), st.integers(min_value=-5, max_value=10**7)))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_sql_text_makes_the_endpoint_fail(
    client: tuple[httpx.Client, str], sql: str, limit: int | None
) -> None:
    http, token = client
    body: dict[str, Any] = {"sql": sql} if limit is None else {"sql": sql, "limit": limit}
    response = http.post(ROUTE, json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 400), response.text
    data = response.json()
    if response.status_code == 200:
        assert len(data["rows"]) == data["row_count"] <= data["limit"]
    else:
        assert data["error"].strip()


@given(
    token=st.one_of(st.text(max_size=60), st.text(string.printable, max_size=60)),
    body=st.binary(max_size=300),
)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_token_or_body_makes_the_endpoint_fail(
    client: tuple[httpx.Client, str], token: str, body: bytes
) -> None:
    http, real = client
    # Any bytes HTTP can carry in a header value (UTF-8 included), none of the control ones.
    value = bytes(b for b in f"Bearer {token}".encode() if b >= 0x20 and b != 0x7F).strip()
    response = http.post(
        ROUTE, content=body, headers={"Authorization": value, "content-type": "application/json"}
    )
    assert response.status_code == 401
    assert "token" in response.json()["error"]
    # The same bodies with the right token: answered or refused with a reason, never a 5xx.
    response = http.post(
        ROUTE,
        content=body,
        headers={"Authorization": f"Bearer {real}", "content-type": "application/json"},
    )
    assert response.status_code in (200, 400), response.text


def test_bad_sql_is_answered_with_duckdbs_own_message(client: tuple[httpx.Client, str]) -> None:
    http, token = client
    cases = {
        "SELECT FROM WHERE": "Parser Error",
        "SELECT * FROM raw.missing": "Catalog Error",
        "SELECT 'a'::INTEGER": "Conversion Error",
        "SELECT event_id + 1 FROM raw.events": "Binder Error",
    }
    for sql, duckdb_says in cases.items():
        response = http.post(ROUTE, json={"sql": sql}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 400
        assert duckdb_says in response.json()["error"], response.text


def test_values_json_has_no_word_for_arrive_exact(client: tuple[httpx.Client, str]) -> None:
    http, token = client
    sql = (
        "SELECT 340282366920938463463374607431768211455::UHUGEINT AS u, "
        "-170141183460469231731687303715884105727::HUGEINT AS h, '\\xAA'::BLOB AS b, "
        "INTERVAL 3 DAY AS i, '101'::BIT AS bits, 'infinity'::TIMESTAMP AS t, "
        "'nan'::DOUBLE AS d, 1 AS same, 2 AS same"
    )
    response = http.post(ROUTE, json={"sql": sql}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["columns"] == ["u", "h", "b", "i", "bits", "t", "d", "same", "same"]
    (row,) = data["rows"]
    assert row[:2] == [
        "340282366920938463463374607431768211455",
        "-170141183460469231731687303715884105727",
    ]
    assert row[7:] == [1, 2]  # duplicate names keep both values
