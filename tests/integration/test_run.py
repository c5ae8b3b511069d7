"""`shopstream run` as a user runs it: bounded demo, SIGTERM, and reconciliation of raw with
the generator's ground truth (what the collector acknowledged)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from tests.support.collector import free_port, query_rows


def run_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    env["SHOPSTREAM_DATA_DIR"] = str(data_dir)
    return env


def run_command(*args: str) -> list[str]:
    """`python -m shopstream run ARGS` on a free port, as a user runs it."""
    return [sys.executable, "-m", "shopstream", "run", *args, "--port", str(free_port())]


def run_bounded(
    data_dir: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_command(*args),
        env=run_env(data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def reconcile(data_dir: Path, truth_path: Path) -> dict[str, Any]:
    truth = json.loads(truth_path.read_text())
    con = duckdb.connect(str(data_dir / "shopstream.duckdb"), read_only=True)
    try:
        by_type = dict(
            con.execute("SELECT event_type, count(*) FROM staging.stg_events GROUP BY 1").fetchall()
        )
        purchases, revenue = con.execute(
            "SELECT count(*), coalesce(sum(CAST(properties->>'revenue' AS DECIMAL(18, 4))), 0) "
            "FROM staging.stg_events WHERE event_type = 'purchase'"
        ).fetchone()  # type: ignore[misc]
        letters = con.execute(
            "SELECT count(*) FROM raw.dead_letter WHERE source = 'collector'"
        ).fetchone()[0]  # type: ignore[index]
    finally:
        con.close()
    assert truth["failed"] == 0
    assert by_type == truth["by_event_type"]
    assert purchases == truth["purchases"]
    assert Decimal(revenue) == Decimal(truth["purchase_revenue"])
    assert letters == truth["rejected"]
    return truth


def test_bounded_run_ends_by_itself_and_reconciles(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.json"
    result = run_bounded(
        tmp_path,
        *("--generate", "--duration", "6", "--rate", "1500", "--bad-fraction", "0.05"),
        # The end-of-run quality report is the make-run-shape test's: here, raw and staging.
        *("--truth", str(truth_path), "--no-quality"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "raw.events" in result.stderr  # the closing summary
    truth = reconcile(tmp_path, truth_path)
    # How many events 6 s give depends on how busy the machine is (speed lives in bench/):
    # enough for the reconciliation to mean something, and for the bad ones (5%) to be there.
    assert truth["accepted"] > 300
    assert truth["rejected"] > 0  # the deliberately bad events were refused and kept


def test_sigterm_flushes_everything_and_prints_the_summary(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.json"
    process = subprocess.Popen(
        run_command("--generate", "--rate", "3000", "--truth", str(truth_path), "--no-quality"),
        env=run_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # SIGTERM once events are landing (asked over the run's query socket), not after a fixed
    # 8 s that a slow start could use up before the first event was sent.
    landed = 0
    deadline = time.monotonic() + 120
    while landed < 1_500:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"only {landed} events landed in raw.events"
        time.sleep(0.2)
        with contextlib.suppress(Exception):  # not serving yet
            landed = query_rows(tmp_path, "SELECT count(*) AS n FROM raw.events")[0]["n"]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert "shopstream stopped after" in stderr
    truth = reconcile(tmp_path, truth_path)
    assert truth["accepted"] > 1_000
    assert not (tmp_path / "runtime.json").exists()


def test_make_run_shape_captures_the_local_shop_database() -> None:
    """`make run` without a DSN: a local PostgreSQL starts, the shop's changes flow through CDC
    into raw. (Orders come from the shoppers' checkouts, which take longer than this run.)"""
    import shutil
    import tempfile

    # The server runs as an unprivileged user when tests run as root: pytest's own tmp dirs
    # (mode 700) are out of its reach, so this one is opened up.
    data_dir = Path(tempfile.mkdtemp(prefix="shopstream-run-"))
    data_dir.chmod(0o755)
    try:
        result = run_bounded(
            data_dir,
            *("--generate", "--local-postgres", "--duration", "10", "--rate", "500"),
            *("--orders-tps", "40"),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "cdc:" in result.stderr
        # It ends with the quality run; the reader stopped on purpose before it, so its idle
        # slot is no alarm there.
        assert "quality run " in result.stdout, result.stdout[-3000:]
        assert "pipeline.replication" not in result.stdout, result.stdout[-3000:]
        con = duckdb.connect(str(data_dir / "shopstream.duckdb"), read_only=True)
        try:
            ops = dict(
                con.execute("SELECT op, count(*) FROM raw.cdc_products GROUP BY 1").fetchall()
            )
            users = con.execute("SELECT count(*) FROM raw.cdc_users WHERE op = 'r'").fetchone()
            judged_at, first_generated = con.execute(
                "SELECT (SELECT max(checked_at) FROM monitoring.data_quality_checks), "
                "(SELECT min(received_at) FROM raw.events)"
            ).fetchone()
        finally:
            con.close()
        # The end-of-run checks judge the shop as it was when the generated traffic began: a
        # burst of synthetic load (thousands of events a second against a history of
        # thousands a day) is not the shop's behaviour, and an hour boundary crossed during
        # the run would otherwise make the demo alarm on its own traffic.
        assert judged_at is not None and judged_at <= first_generated
        assert "judged as of" in result.stderr + result.stdout, result.stderr[-3000:]
        assert ops.get("r", 0) > 0  # the initial snapshot of the catalogue
        assert ops.get("u", 0) > 0  # prices changed, shelves restocked during the run
        assert users is not None and users[0] > 0  # the initial snapshot of the members
    finally:
        from shopstream.devtools.local_postgres import LocalPostgres

        LocalPostgres(data_dir / "postgres").stop()  # normally already stopped by the run
        shutil.rmtree(data_dir, ignore_errors=True)


def test_local_database_moves_out_of_a_directory_postgres_cannot_enter() -> None:
    """A clone under /root, run as root: the demo database goes where PostgreSQL can run."""
    import shutil
    import tempfile

    from shopstream.config import Settings
    from shopstream.devtools.shop_database import local_shop_database

    if os.geteuid() != 0:
        import pytest

        pytest.skip("only root runs PostgreSQL as another user")
    private = Path(tempfile.mkdtemp(prefix="shopstream-private-"))  # mode 700, like /root
    server = None
    try:
        server, dsn = local_shop_database(Settings(data_dir=private / "data"))
        assert not server.data_dir.is_relative_to(private)
        assert "dbname=shop" in dsn
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.data_dir.parent, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)
