"""The development PostgreSQL (shopstream.devtools) against real servers: system binaries and
pgserver's, as root and not, and the directories it claims under /var/tmp."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg
import psycopg2
import psycopg2.extras
import pytest

from shopstream.devtools.local_postgres import (
    LocalPostgres,
    LocalPostgresError,
    claim_directory,
    find_bin_dir,
    pgserver_bin_dir,
)
from tests.support.pg_fixtures import (
    PostgresDatabase,
    PostgresFactory,
    drop_database,
    sweep_abandoned_servers,
)


def _scalar(dsn: str, query: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_find_bin_dir_finds_server_executables() -> None:
    bin_dir = find_bin_dir()
    for name in ("initdb", "pg_ctl", "postgres"):
        assert os.access(bin_dir / name, os.X_OK)


def test_server_is_ready_for_logical_replication(postgres: PostgresDatabase) -> None:
    port = postgres.server.port
    assert postgres.dsn == f"host=127.0.0.1 port={port} user=postgres dbname={postgres.dbname}"
    assert _scalar(postgres.dsn, "SHOW wal_level") == "logical"
    assert int(str(_scalar(postgres.dsn, "SHOW max_replication_slots"))) >= 10
    assert int(str(_scalar(postgres.dsn, "SHOW max_wal_senders"))) >= 10
    assert _scalar(postgres.dsn, "SHOW listen_addresses") == "127.0.0.1"
    assert _scalar(postgres.dsn, "SELECT current_user") == "postgres"
    assert _scalar(postgres.dsn, "SELECT current_database()") == postgres.dbname


def test_pgoutput_slot_decodes_changes(postgres: PostgresDatabase) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric(12, 2))")
        conn.execute("CREATE PUBLICATION shop FOR TABLE orders")
        conn.execute("SELECT pg_create_logical_replication_slot('cdc', 'pgoutput')")
        conn.execute("INSERT INTO orders VALUES (1, 19.99), (2, 5.00)")
        messages = conn.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes('cdc', NULL, NULL,"
            " 'proto_version', '1', 'publication_names', 'shop')"
        ).fetchall()
        # pgoutput's one-letter tags: Begin, Relation, Insert, Commit.
        tags = [bytes(data)[:1] for (data,) in messages]
        assert tags == [b"B", b"R", b"I", b"I", b"C"]
        conn.execute("SELECT pg_drop_replication_slot('cdc')")
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)


def test_drop_database_ends_an_active_replication_stream(postgres_server: LocalPostgres) -> None:
    dsn = postgres_server.create_database("streaming")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE PUBLICATION everything FOR ALL TABLES")
        conn.execute("SELECT pg_create_logical_replication_slot('busy', 'pgoutput')")
    stream = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        cursor = stream.cursor()
        cursor.start_replication(
            slot_name="busy",
            decode=False,
            options={"proto_version": "1", "publication_names": "everything"},
        )
        assert _scalar(postgres_server.dsn, "SELECT active FROM pg_replication_slots") is True

        drop_database(postgres_server, "streaming")

        with psycopg.connect(postgres_server.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
            assert conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname = 'streaming'"
            ).fetchone() == (0,)
    finally:
        stream.close()


def test_create_database_quotes_unusual_names(postgres_server: LocalPostgres) -> None:
    name = "Shop 'Q4' \"db\""
    dsn = postgres_server.create_database(name)
    try:
        assert _scalar(dsn, "SELECT current_database()") == name
    finally:
        drop_database(postgres_server, name)


def test_restart_keeps_data_and_port(postgres_factory: PostgresFactory) -> None:
    server = postgres_factory()
    port = server.port
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept AS SELECT generate_series(1, 1000) AS n")

    server.restart()

    assert server.port == port
    assert _scalar(server.dsn, "SELECT sum(n) FROM kept") == 500500


def test_kill_then_start_recovers(postgres_factory: PostgresFactory) -> None:
    server = postgres_factory()
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        conn.execute("INSERT INTO orders SELECT generate_series(1, 100)")
    in_flight = psycopg.connect(server.dsn)
    in_flight.execute("INSERT INTO orders VALUES (1000)")  # never committed

    server.kill()

    assert not server.is_running()
    assert (server.data_dir / "postmaster.pid").exists(), "a crash leaves its pid file"
    with pytest.raises(psycopg.OperationalError):
        in_flight.execute("SELECT 1")
    in_flight.close()

    server.start()

    assert _scalar(server.dsn, "SELECT count(*) FROM orders") == 100
    assert "automatic recovery in progress" in server.log_path.read_text()


def test_start_is_idempotent_and_reuses_the_cluster(postgres_factory: PostgresFactory) -> None:
    server = postgres_factory()
    port = server.port
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")

    server.start()  # already running: nothing to do
    assert server.port == port

    # Another process (a second `make run`) finds the running server and its port.
    again = LocalPostgres(server.data_dir)
    again.start()
    assert again.port == port
    again.stop()
    assert not server.is_running()

    # After a stop, the remembered port comes back and so does the data.
    later = LocalPostgres(server.data_dir)
    later.start()
    assert later.port == port
    assert _scalar(later.dsn, "SELECT count(*) FROM kept") == 0


def test_start_after_only_the_postmaster_was_killed(postgres_factory: PostgresFactory) -> None:
    """Its children may outlive it for a moment, holding the shared memory a new one needs."""
    server = postgres_factory()
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
    postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])

    os.kill(postmaster, signal.SIGKILL)
    server.start()

    assert _scalar(server.dsn, "SELECT count(*) FROM orders") == 1


def test_stale_pid_file_naming_a_live_process(postgres_factory: PostgresFactory) -> None:
    """After a crash, the recorded pid may belong to someone else by now (containers)."""
    server = postgres_factory()
    server.kill()
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = server.data_dir / "postmaster.pid"
        lines = pid_file.read_text().splitlines()
        pid_file.write_text("\n".join([str(stranger.pid), *lines[1:]]) + "\n")

        server.start()

        assert server.is_running()
        assert _scalar(server.dsn, "SELECT 1") == 1
        assert stranger.poll() is None, "the stranger must be left alone"
    finally:
        stranger.kill()
        stranger.wait()


def test_taken_port_is_replaced_by_a_free_one(postgres_factory: PostgresFactory) -> None:
    server = postgres_factory()
    old_port = server.port
    server.stop()
    with _listening_socket(old_port):
        server.start()
    assert server.port != old_port
    assert (server.data_dir / "shopstream.port").read_text().strip() == str(server.port)
    assert _scalar(server.dsn, "SELECT 1") == 1


def test_start_failure_shows_the_server_log(postgres_factory: PostgresFactory) -> None:
    with _listening_socket() as busy:
        port = busy.getsockname()[1]
        server = postgres_factory(port=port, start=False)
        with pytest.raises(LocalPostgresError, match=f"port {port} is in use") as failure:
            server.start()
    message = str(failure.value)
    assert "Last lines of" in message
    assert "could not bind" in message or "Address already in use" in message


def test_pgserver_binaries_work(postgres_factory: PostgresFactory) -> None:
    bin_dir = pgserver_bin_dir()
    if bin_dir is None:
        pytest.skip("pgserver is not installed")
    server = postgres_factory(bin_dir=bin_dir)

    assert int(str(_scalar(server.dsn, "SHOW server_version_num"))) >= 160000
    assert _scalar(server.dsn, "SHOW wal_level") == "logical"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('cdc', 'pgoutput')")
        conn.execute("SELECT pg_drop_replication_slot('cdc')")


def test_a_copy_of_pgserver_outside_the_virtualenv_runs(postgres_factory: PostgresFactory) -> None:
    """What a root user with the repository under /root gets: the wheel's PostgreSQL copied
    where the server's user can read it, vendored libraries included."""
    from shopstream.devtools.local_postgres import _reachable_copy

    bin_dir = pgserver_bin_dir()
    if bin_dir is None:
        pytest.skip("pgserver is not installed")
    copied = _reachable_copy(bin_dir)
    assert copied != bin_dir
    assert copied.is_relative_to(Path("/var/tmp"))
    server = postgres_factory(bin_dir=copied)
    assert _scalar(server.dsn, "SHOW wal_level") == "logical"
    assert _reachable_copy(bin_dir) == copied  # made once, reused


def test_refuses_a_directory_that_is_not_a_cluster(postgres_factory: PostgresFactory) -> None:
    server = postgres_factory(start=False)
    server.data_dir.mkdir()
    (server.data_dir / "notes.txt").write_text("mine")
    with pytest.raises(LocalPostgresError, match="neither empty nor a PostgreSQL cluster"):
        server.start()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_root_explains_an_unreachable_data_dir() -> None:
    private = Path(tempfile.mkdtemp())  # 0700, owned by root
    try:
        with pytest.raises(LocalPostgresError, match=r"chmod o\+x"):
            LocalPostgres(private / "data").start()
        assert not (private / "data").exists()
    finally:
        shutil.rmtree(private)


def test_servers_of_killed_test_runs_are_swept(postgres_factory: PostgresFactory) -> None:
    server = postgres_factory()
    finished = subprocess.Popen(["true"])
    finished.wait()
    (server.data_dir.parent / "owner.pid").write_text(f"{finished.pid}\n")  # a dead pytest

    sweep_abandoned_servers()

    assert not server.is_running()
    assert not server.data_dir.parent.exists()


def test_claim_directory_makes_one_everyone_can_enter_and_reuses_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    umask = os.umask(0o077)
    try:
        assert claim_directory(home) == home
    finally:
        os.umask(umask)
    assert stat.S_IMODE(home.stat().st_mode) == 0o755, "the server's user must enter it"
    (home / "kept").write_text("from an earlier run")
    home.chmod(0o700)

    assert claim_directory(home) == home
    assert (home / "kept").read_text() == "from an earlier run"
    assert stat.S_IMODE(home.stat().st_mode) == 0o755


def _plant(path: Path, what: str, elsewhere: Path) -> None:
    """What another user of /var/tmp could have put at the name we want."""
    if what == "symlink to a directory":
        elsewhere.mkdir(mode=0o700)
        path.symlink_to(elsewhere)
    elif what == "dangling symlink":
        path.symlink_to(elsewhere)
    elif what == "file":
        path.write_text("not a directory")
        path.chmod(0o600)
    elif what == "directory of another user":
        path.mkdir(mode=0o700)
        os.chown(path, 65534, 65534)  # nobody
    else:
        raise AssertionError(what)


@pytest.mark.parametrize(
    "planted", ["symlink to a directory", "dangling symlink", "file", "directory of another user"]
)
def test_claim_directory_refuses_what_it_did_not_make(tmp_path: Path, planted: str) -> None:
    if planted == "directory of another user" and os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    path, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    _plant(path, planted, elsewhere)
    before = path.lstat()

    with pytest.raises(LocalPostgresError, match=f"^{re.escape(str(path))} exists and is not ours"):
        claim_directory(path)

    after = path.lstat()
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid), "left as it was"
    if elsewhere.is_dir():
        assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700, "the link's target untouched"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_shop_database_refuses_a_fallback_directory_it_did_not_make() -> None:
    """The /var/tmp fallback of `make run` as root claims its directory like the pgserver copy
    does: a name taken by someone else stops the run instead of serving their directory."""
    from shopstream.config import Settings
    from shopstream.devtools.shop_database import _fallback_home, local_shop_database

    private = Path(tempfile.mkdtemp(prefix="shopstream-private-"))  # mode 700, like /root
    elsewhere = Path(tempfile.mkdtemp(prefix="shopstream-elsewhere-"))
    home = _fallback_home(private / "data")
    try:
        home.symlink_to(elsewhere)
        with pytest.raises(LocalPostgresError, match=f"{re.escape(str(home))} exists and is not"):
            local_shop_database(Settings(data_dir=private / "data"))
        assert list(elsewhere.iterdir()) == [], "nothing was put where the link points"
    finally:
        home.unlink(missing_ok=True)
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(elsewhere, ignore_errors=True)
