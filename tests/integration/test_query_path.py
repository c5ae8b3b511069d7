"""`shopstream sql` against a running platform: the local query endpoint, as a real collector
process serves it (its Unix socket, its token), and the command as a user runs it."""

from __future__ import annotations

import contextlib
import json
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

from shopstream.runtime import read_runtime
from shopstream.warehouse.duckdb.query_endpoint import ROUTE
from tests.support.collector import CollectorProcess, free_port


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path_factory.mktemp("query"))
    process.start()
    yield process
    assert process.stop() == 0, process.log()
    assert "Traceback" not in process.log(), process.log()


def runtime_of(process: CollectorProcess) -> dict[str, Any]:
    runtime = read_runtime(process.data_dir)
    assert runtime is not None
    return runtime


def endpoint(process: CollectorProcess, timeout: float = 60) -> httpx.Client:
    """A client of the platform's query endpoint, wherever runtime.json says it is."""
    runtime = runtime_of(process)
    transport = httpx.HTTPTransport(uds=runtime["socket"])
    return httpx.Client(transport=transport, base_url="http://shopstream", timeout=timeout)


def bearer(process: CollectorProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {runtime_of(process)['token']}"}


def event() -> dict[str, Any]:
    return {
        "event_type": "page_view",
        "event_id": str(uuid.uuid4()),
        "anonymous_id": "a-1",
        "session_id": "s-1",
        "event_ts": "2026-11-27T10:00:00Z",
        "device_type": "web_desktop",
    }


def tree_rss(pid: int) -> int:
    """RSS of a process and its children (the DuckDB writer process is one)."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


class PeakRss:
    """Samples a process tree's RSS in the background while a block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = tree_rss(pid)
        self.peak = self.start
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._done.wait(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def test_the_collector_port_never_answers_queries(running: CollectorProcess) -> None:
    for path in ("/v1/admin/sql", ROUTE):
        for headers in ({}, bearer(running)):
            response = httpx.post(
                f"{running.url}{path}", json={"sql": "SELECT 1"}, headers=headers, timeout=10
            )
            assert response.status_code == 404, (path, response.text)
    document = httpx.get(f"{running.url}/openapi.json", timeout=10).json()
    assert not [p for p in document["paths"] if "sql" in p]


def test_the_socket_and_the_token_file_are_the_owners_alone(running: CollectorProcess) -> None:
    runtime = runtime_of(running)
    path = Path(runtime["socket"])
    assert path.parent == running.data_dir.resolve()
    info = path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE((running.data_dir / "runtime.json").stat().st_mode) == 0o600
    assert runtime["url"] == running.url


def test_a_query_needs_the_token(running: CollectorProcess) -> None:
    with endpoint(running) as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": runtime_of(running)["token"]},  # not a bearer credential
            {"Authorization": "Basic " + runtime_of(running)["token"]},
        ):
            response = client.post(ROUTE, json={"sql": "SELECT 1"}, headers=headers)
            assert response.status_code == 401
            assert "token" in response.json()["error"]
        ok = client.post(ROUTE, json={"sql": "SELECT 1 AS one"}, headers=bearer(running))
        assert ok.status_code == 200
        assert ok.json() == {
            "columns": ["one"],
            "rows": [[1]],
            "row_count": 1,
            "truncated": False,
            "limit": 10_000,
        }


def test_a_body_over_the_cap_is_refused_with_the_reason(running: CollectorProcess) -> None:
    sql = "SELECT '" + "x" * 300_000 + "' AS big"
    with endpoint(running) as client:
        response = client.post(ROUTE, json={"sql": sql}, headers=bearer(running))
        assert response.status_code == 413
        assert "query.max_body_bytes" in response.json()["error"]
    with endpoint(running) as client:
        # Without a Content-Length (chunked), the cap holds while reading.
        chunks = iter([b'{"sql": "SELECT \'', b"x" * 300_000, b"'\"}"])
        response = client.post(
            ROUTE,
            content=chunks,
            headers={**bearer(running), "content-type": "application/json"},
        )
        assert response.status_code == 413
    with endpoint(running) as client:  # under the cap, the same kind of query answers
        response = client.post(
            ROUTE, json={"sql": "SELECT '" + "x" * 1000 + "' AS s"}, headers=bearer(running)
        )
        assert response.status_code == 200


def _upload(process: CollectorProcess, headers: dict[str, str], total: int) -> tuple[int, Any]:
    """Stream ``total`` bytes of body to the query endpoint; return how many left the client
    and the status (None when the server hung up before the client finished sending)."""
    sent = 0
    chunk = b"x" * 2**20

    def body() -> Iterator[bytes]:
        nonlocal sent
        while sent < total:
            sent += len(chunk)
            yield chunk

    runtime = runtime_of(process)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(runtime["socket"])
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(
        f"POST {ROUTE} HTTP/1.1\r\nhost: shopstream\r\ncontent-type: application/json\r\n"
        f"content-length: {total}\r\n{head}\r\n".encode()
    )
    status = None
    try:
        for piece in body():
            sock.sendall(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        answer = sock.recv(65536)
        if answer.startswith(b"HTTP/1.1 "):
            status = int(answer[9:12])
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    return sent, status


def test_a_strangers_huge_body_costs_nothing(running: CollectorProcess) -> None:
    assert running.process is not None
    total = 400 * 2**20
    with PeakRss(running.process.pid) as rss:
        sent, status = _upload(running, {}, total)
    assert status in (401, None)
    assert sent < total, "the server read the whole body of a request without a token"
    assert rss.growth_mb < 50, f"RSS grew {rss.growth_mb:.0f} MB"
    # The owner's oversized request is cut off the same way, unread.
    with PeakRss(running.process.pid) as rss:
        sent, status = _upload(running, bearer(running), total)
    assert status in (413, None)
    assert sent < total
    assert rss.growth_mb < 50, f"RSS grew {rss.growth_mb:.0f} MB"
    with endpoint(running) as client:  # and the endpoint still answers
        assert client.post(ROUTE, json={"sql": "SELECT 1"}, headers=bearer(running)).is_success


def test_a_huge_result_is_cut_off_and_intake_goes_on(running: CollectorProcess) -> None:
    assert running.process is not None
    big = "SELECT range, repeat('x', 100) AS pad FROM range(5000000)"
    answers: list[httpx.Response] = []
    intake: list[int] = []

    def ask() -> None:
        with endpoint(running, timeout=120) as client:
            answers.append(client.post(ROUTE, json={"sql": big}, headers=bearer(running)))

    with PeakRss(running.process.pid) as rss:
        query = threading.Thread(target=ask)
        query.start()
        while query.is_alive() or not intake:
            response = httpx.post(f"{running.url}/v1/events", json=event(), timeout=30)
            intake.append(response.status_code)
        query.join()
    assert set(intake) == {200}
    (response,) = answers
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["truncated"] is True
    assert data["row_count"] == data["limit"] == 10_000
    assert len(data["rows"]) == 10_000
    assert data["rows"][:2] == [[0, "x" * 100], [1, "x" * 100]]
    # 5M rows of ~110 bytes would be ~550 MB in Arrow alone, more as Python objects and JSON.
    assert rss.growth_mb < 150, f"RSS of collector + writer grew {rss.growth_mb:.0f} MB"

    with endpoint(running) as client:
        asked = client.post(ROUTE, json={"sql": big, "limit": 3}, headers=bearer(running))
        assert asked.json()["rows"] == [[0, "x" * 100], [1, "x" * 100], [2, "x" * 100]]
        exact = client.post(
            ROUTE, json={"sql": "FROM range(3)", "limit": 3}, headers=bearer(running)
        )
        assert exact.json()["truncated"] is False
        for limit in (0, -1, 1_000_001, "ten"):
            refused = client.post(
                ROUTE, json={"sql": "SELECT 1", "limit": limit}, headers=bearer(running)
            )
            assert refused.status_code == 400
            assert "limit" in refused.json()["error"]


def test_bad_sql_gets_duckdbs_message(running: CollectorProcess) -> None:
    with endpoint(running) as client:
        for sql, words in (
            ("SELEKT 1", "syntax error"),
            ("SELECT * FROM raw.nope", "Table with name nope does not exist"),
            ("SELECT 1/'a'", "Conversion Error"),
            ("DELETE FROM raw.events", "only read queries"),
            ("SELECT * FROM read_csv('/etc/passwd')", "read_csv() is not allowed here"),
        ):
            response = client.post(ROUTE, json={"sql": sql}, headers=bearer(running))
            assert response.status_code == 400, (sql, response.text)
            assert words in response.json()["error"], (sql, response.text)
        for body in (b"{", b"[]", b'{"sql": 1}', b'{"sql": ""}', b'{"sql": "SELECT 1", "x": 1}'):
            response = client.post(
                ROUTE,
                content=body,
                headers={**bearer(running), "content-type": "application/json"},
            )
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"].startswith("invalid request")
        wrong_type = client.post(
            ROUTE, content=b"SELECT 1", headers={**bearer(running), "content-type": "text/plain"}
        )
        assert wrong_type.status_code == 415


def shopstream_sql(process: CollectorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopstream", "sql", *args],
        env=process.env(),
        cwd=process.data_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_shopstream_sql_says_when_it_cut_rows_off(running: CollectorProcess) -> None:
    cut = shopstream_sql(running, "SELECT range FROM range(50)", "--limit", "5", "--json")
    assert cut.returncode == 0, cut.stderr
    assert [row["range"] for row in orjson.loads(cut.stdout)] == [0, 1, 2, 3, 4]
    assert "truncated at 5 rows" in cut.stderr
    assert "--limit" in cut.stderr
    whole = shopstream_sql(running, "SELECT range FROM range(5)", "--limit", "5")
    assert whole.returncode == 0, whole.stderr
    assert "truncated" not in whole.stderr
    refused = shopstream_sql(running, "COPY raw.events TO 'out.csv'")
    assert refused.returncode == 1
    assert "only read queries" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (running.data_dir / "out.csv").exists()


def test_shopstream_sql_with_nothing_running_has_the_same_rules(tmp_path: Path) -> None:
    process = CollectorProcess(tmp_path)
    process.start()
    process.stop()
    assert read_runtime(tmp_path) is None
    assert not (tmp_path / "query.sock").exists()
    cut = shopstream_sql(process, "SELECT range FROM range(50)", "--limit", "5", "--json")
    assert cut.returncode == 0, cut.stderr
    assert len(orjson.loads(cut.stdout)) == 5
    assert "truncated at 5 rows" in cut.stderr
    for sql in (
        "COPY raw.events TO 'out.csv'",
        "SELECT * FROM read_text('/etc/passwd')",
        "ATTACH 'other.duckdb'",
    ):
        refused = shopstream_sql(process, sql)
        assert refused.returncode == 1, refused.stdout
        assert "Traceback" not in refused.stderr
        assert "root:" not in refused.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".csv", ".duckdb")) == [
        "shopstream.duckdb"
    ]


def test_shopstream_sql_names_the_holder_it_cannot_ask(tmp_path: Path) -> None:
    """Another process holds the DuckDB file but left no address: a clear error, exit 1."""
    process = CollectorProcess(tmp_path)
    process.start()
    process.stop()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "sys.stdin.read()",
            str(process.warehouse_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        answer = shopstream_sql(process, "SELECT 1")
    finally:
        holder.communicate(timeout=30)
    assert answer.returncode == 1, answer.stdout
    message = " ".join(answer.stderr.split())  # the console wraps long lines
    assert "is held by another process, but no running shopstream left its address" in message
    assert "Stop that process and retry." in message
    assert "Traceback" not in answer.stderr


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_an_ipv6_collector_writes_a_usable_url_and_answers_sql(tmp_path: Path) -> None:
    port = free_port()
    env = CollectorProcess(tmp_path).env()
    collector = subprocess.Popen(
        [sys.executable, "-m", "shopstream", "collector", "--host", "::1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while read_runtime(tmp_path) is None:
            assert collector.poll() is None, collector.communicate()[0]
            assert time.monotonic() < deadline, "the collector did not start"
            time.sleep(0.1)
        runtime = json.loads((tmp_path / "runtime.json").read_text())
        assert runtime["url"] == f"http://[::1]:{port}"
        assert httpx.post(f"{runtime['url']}/v1/events", json=event()).status_code == 200
        count = "SELECT count(*) AS n FROM raw.events"
        result = subprocess.run(
            [sys.executable, "-m", "shopstream", "sql", count, "--json"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert orjson.loads(result.stdout) == [{"n": 1}]
    finally:
        collector.terminate()
        output = collector.communicate(timeout=60)[0]
    assert collector.returncode == 0, output
    assert f"http://[::1]:{port}" in output  # the status line too
    assert "Traceback" not in output


def test_a_data_dir_too_long_for_a_socket_address_still_gets_a_private_socket(
    tmp_path: Path,
) -> None:
    from shopstream.warehouse.duckdb.query_endpoint import bind_socket, remove_socket

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    sock, path = bind_socket(deep)
    try:
        assert path.parent != deep.resolve()
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # it listens
    finally:
        sock.close()
        remove_socket(path, deep)
    assert not path.parent.exists()
