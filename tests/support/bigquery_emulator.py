"""bqemulator, a real BigQuery peer for the tests: REST + gRPC (Storage Read/Write) on DuckDB.

It runs in a virtualenv of its own (``.venv-bqemu``, built by ``make test``: it needs duckdb<2,
the platform runs duckdb 2) through a launcher that turns off two start-up steps which download
DuckDB extensions (spatial and file formats; nothing here needs them and the machine has no
network), on free loopback ports, in memory (each fixture gets an empty emulator).

Clients reach it as the platform does, through the warehouse URL
``bigquery://<project>?location=EU&endpoint=http://127.0.0.1:N&grpc=127.0.0.1:M`` (anonymous
credentials then), or directly through :meth:`BigQueryEmulator.client` /
:meth:`BigQueryEmulator.write_client`.

What it does not emulate (see DESIGN.md): dry runs report 0 bytes; partitioning given in SQL DDL
or dbt configs is dropped (tables created through the API keep it); ``insert_rows_json`` does not
dedupe row ids and answers 500 for a bad value.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.collector import free_port
from tests.support.server_process import log_tail, stop_server

if TYPE_CHECKING:
    from google.cloud import bigquery
    from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

ROOT = Path(__file__).resolve().parents[2]
#: The interpreter of the virtualenv that has bqemulator (``make test`` builds it).
BQEMU_PYTHON = Path(os.environ.get("SHOPSTREAM_TEST_BQEMU_PYTHON", ROOT / ".venv-bqemu/bin/python"))
PROJECT = "shopstream-test"

#: Run by the emulator's interpreter: no-ops for the two steps that download DuckDB extensions,
#: then the emulator's own command line (``start --rest-port N --grpc-port M --project P``).
LAUNCHER = """
import sys
from bqemulator.storage.engine import DuckDBEngine
DuckDBEngine._load_spatial = lambda self: None
DuckDBEngine._load_format_extensions = lambda self: None
from bqemulator.cli import main
main(["start", *sys.argv[1:]])
"""


class BigQueryEmulator:
    """One bqemulator process on free loopback ports (REST and gRPC)."""

    def __init__(self, python: Path, log_path: Path, project: str = PROJECT) -> None:
        self.python = python
        self.project = project
        self.rest_port = free_port()
        self.grpc_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.rest_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def warehouse_url(self, location: str = "EU") -> str:
        """The platform's warehouse URL for this emulator."""
        return (
            f"bigquery://{self.project}?location={location}"
            f"&endpoint={self.endpoint}&grpc={self.grpc_target}"
        )

    def start(self, timeout: float = 60.0) -> BigQueryEmulator:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(self.python), "-c", LAUNCHER,
                "--rest-host", "127.0.0.1", "--rest-port", str(self.rest_port),
                "--grpc-host", "127.0.0.1", "--grpc-port", str(self.grpc_port),
                "--project", self.project,
                "--log-level", "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        datasets = f"{self.endpoint}/bigquery/v2/projects/{self.project}/datasets"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bqemulator exited at start:\n{self.log()}")
            try:
                if httpx.get(datasets, timeout=2).status_code == 200 and self._grpc_listens():
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"bqemulator not ready after {timeout}s:\n{self.log()}")

    def _grpc_listens(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1):
                return True
        except OSError:
            return False

    def client(self) -> bigquery.Client:
        """The real google-cloud-bigquery client, pointed at the emulator."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )

    def write_client(self) -> BigQueryWriteClient:
        """The real Storage Write client on a plaintext gRPC channel to the emulator."""
        import grpc
        from google.cloud.bigquery_storage_v1 import BigQueryWriteClient
        from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
            BigQueryWriteGrpcTransport,
        )

        channel = grpc.insecure_channel(self.grpc_target)
        return BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=channel))

    def log(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        stop_server(self.process)


def emulator_or_skip(tmp_path_factory: pytest.TempPathFactory) -> BigQueryEmulator:
    """A started emulator, or a skip saying how to get one."""
    if not BQEMU_PYTHON.exists():
        pytest.skip(
            f"bqemulator's virtualenv is missing ({BQEMU_PYTHON}): `make test` builds it "
            "(or set SHOPSTREAM_TEST_BQEMU_PYTHON to a python that has bqemulator and duckdb<2)"
        )
    pytest.importorskip("google.cloud.bigquery", reason="the bigquery extra is not installed")
    return BigQueryEmulator(BQEMU_PYTHON, tmp_path_factory.mktemp("bqemu") / "bqemu.log").start()


@pytest.fixture(scope="module")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    """One emulator per test module (empty at start), stopped after it."""
    emulator = emulator_or_skip(tmp_path_factory)
    yield emulator
    emulator.stop()
