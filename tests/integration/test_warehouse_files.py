"""The warehouse's files hold IPs and user ids: the directory is 0700, the files 0600.

Checked after a real run with events, with the writer process and without it, while the WAL
exists (right after a commit) and after shutdown; a file left with a wider mode is tightened.
"""

from __future__ import annotations

import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.support.collector import CollectorProcess


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("writer_process", ["true", "false"])
def test_warehouse_directory_and_files_are_private(tmp_path: Path, writer_process: str) -> None:
    warehouse = tmp_path / "warehouse" / "shopstream.duckdb"  # a directory we create
    collector = CollectorProcess(
        tmp_path / "run",
        env={
            "SHOPSTREAM_WAREHOUSE_URL": f"duckdb:///{warehouse}",
            "SHOPSTREAM_SINK__WRITER_PROCESS": writer_process,
        },
    ).start()
    try:
        events = [
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "page_view",
                "event_ts": datetime.now(UTC).isoformat(),
                "anonymous_id": "anon-1",
            }
            for _ in range(50)
        ]
        response = httpx.post(f"{collector.url}/v1/events", json=events, timeout=30)
        assert response.status_code == 200, response.text
        wal = warehouse.with_name(warehouse.name + ".wal")
        assert wal.exists()  # the commit is in the WAL until the idle checkpoint (2 s)
        assert mode(wal) == 0o600
        assert mode(warehouse) == 0o600
        assert mode(warehouse.parent) == 0o700
        assert mode(warehouse.with_name(warehouse.name + ".tmp")) == 0o700
    finally:
        assert collector.stop() == 0, collector.log()
    assert mode(warehouse) == 0o600
    assert mode(warehouse.parent) == 0o700


def test_a_warehouse_file_with_a_wider_mode_is_tightened(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    path = data_dir / "shopstream.duckdb"
    duckdb.connect(str(path)).close()
    path.chmod(0o644)
    collector = CollectorProcess(data_dir).start()
    assert collector.stop() == 0, collector.log()
    assert mode(path) == 0o600
    log = collector.log()
    assert "made it 0600" in log
    # An existing directory is left as it is (it may be a volume, or hold the local
    # PostgreSQL that its own OS user must enter), with a warning that says what to do.
    assert mode(data_dir) == 0o755
    assert f"chmod 700 {data_dir}" in log
