"""pytest fixtures for real PostgreSQL servers.

A plugin module: ``pytest_plugins = ["tests.support.pg_fixtures"]`` in ``tests/conftest.py``.

- ``postgres_server``: one server for the whole session, started on first use.
- ``postgres``: a fresh database on it per test, dropped afterwards with its replication
  slots, so nothing keeps holding WAL.
- ``postgres_factory``: dedicated servers for tests that restart or kill PostgreSQL.

Without PostgreSQL binaries on the machine the fixtures skip, saying what to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.errors import ObjectInUse, UndefinedObject

from shopstream.devtools.local_postgres import (
    LocalPostgres,
    PostgresNotFoundError,
    find_bin_dir,
    pid_alive,
)

_DROP_TIMEOUT_S = 10
_DIR_PREFIX = "shopstream-pg-"
_OWNER_FILE = "owner.pid"  # the pytest process a server directory belongs to


@dataclass(frozen=True)
class PostgresDatabase:
    dsn: str
    dbname: str
    server: LocalPostgres


class PostgresFactory:
    """Makes dedicated, started servers, each in its own directory; all stopped at teardown."""

    def __init__(self) -> None:
        self._dirs: list[Path] = []

    def __call__(
        self, *, port: int | None = None, bin_dir: Path | None = None, start: bool = True
    ) -> LocalPostgres:
        server = LocalPostgres(_server_dir() / "data", port, bin_dir=bin_dir)
        self._dirs.append(server.data_dir.parent)
        if start:
            server.start()
        return server

    def close(self) -> None:
        for directory in self._dirs:
            # By directory, so a server a test reopened with its own LocalPostgres stops too.
            with contextlib.suppress(Exception):
                LocalPostgres(directory / "data").stop("immediate")
            shutil.rmtree(directory, ignore_errors=True)


def _server_dir() -> Path:
    # Not pytest's tmp_path: that is 0700 under root, and as root the server runs as another
    # user, who must be able to traverse every directory down to its data.
    directory = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
    directory.chmod(0o755)
    (directory / _OWNER_FILE).write_text(f"{os.getpid()}\n")
    return directory


def sweep_abandoned_servers() -> None:
    """Stop the servers of test runs that were killed before their teardown, and remove them.

    pg_ctl detaches the server from us, so a SIGKILLed pytest would otherwise leave
    postmasters running for good.
    """
    for directory in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*"):
        try:
            owner = int((directory / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not made here, or being made right now
        if pid_alive(owner):
            continue
        with contextlib.suppress(Exception):
            LocalPostgres(directory / "data").stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def _skip_without_binaries() -> None:
    try:
        find_bin_dir()
    except PostgresNotFoundError as exc:
        pytest.skip(str(exc))


def drop_database(server: LocalPostgres, dbname: str) -> None:
    """Drop ``dbname`` even while clients and replication streams use it.

    A logical slot blocks DROP DATABASE, and an active one cannot be dropped, so: end every
    backend on the database (walsenders included), drop its slots, then the database.
    """
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        )
        deadline = time.monotonic() + _DROP_TIMEOUT_S
        while slots := conn.execute(
            "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s",
            [dbname],
        ).fetchall():
            for slot_name, active_pid in slots:
                if active_pid is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", [active_pid])
                    continue
                # The slot may turn active again or vanish between our look and the drop.
                with contextlib.suppress(ObjectInUse, UndefinedObject):
                    conn.execute("SELECT pg_drop_replication_slot(%s)", [slot_name])
            if time.monotonic() > deadline:
                raise RuntimeError(f"replication slots {slots} of {dbname!r} would not go away")
            time.sleep(0.02)
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


@pytest.fixture(scope="session")
def _abandoned_servers_swept() -> None:
    sweep_abandoned_servers()


@pytest.fixture(scope="session")
def postgres_server(_abandoned_servers_swept: None) -> Iterator[LocalPostgres]:
    _skip_without_binaries()
    directory = _server_dir()
    server = LocalPostgres(directory / "data")
    try:
        server.start()
        yield server
    finally:
        # The data is thrown away, so no shutdown checkpoint is worth waiting for.
        server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres(postgres_server: LocalPostgres) -> Iterator[PostgresDatabase]:
    dbname = f"test_{uuid.uuid4().hex[:12]}"
    dsn = postgres_server.create_database(dbname)
    yield PostgresDatabase(dsn=dsn, dbname=dbname, server=postgres_server)
    drop_database(postgres_server, dbname)


@pytest.fixture
def postgres_factory(_abandoned_servers_swept: None) -> Iterator[PostgresFactory]:
    _skip_without_binaries()
    factory = PostgresFactory()
    try:
        yield factory
    finally:
        factory.close()
