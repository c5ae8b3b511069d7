"""Edge cases of the incremental events models, each against a full rebuild of the same file.

1. The first build ran on an empty raw.events (a fresh install): the incremental tables exist
   but are empty, so a window computed from their max(received_at) is null. The events that
   arrive afterwards (over more days than the lookback: the schedule was down) must still
   appear, in staging and in the marts, exactly as a full rebuild has them.
2. A duplicate arriving after the lookback whose first copy was rejected (and the other way
   round): the first received copy decides, once; the later copy changes nothing.

Real dbt runs on a real DuckDB file; raw rows are inserted as a loader would (raw.events is
append-only, received_at is when the row landed).
"""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from shopstream.warehouse.duckdb.database import DuckDBWarehouse
from tests.support.transform import DbtProject

LOOKBACK_DAYS = 3
VARIABLES = {
    "timezone": "Asia/Seoul",
    "email_salt": "salt-for-edges",
    "lookback_days": LOOKBACK_DAYS,
    "session_timeout_minutes": 30,
}
SELECT = ("--select", "path:models/staging/events", "path:models/marts/events")
TABLES = (
    "staging.stg_events",
    "staging.stg_events_rejected",
    "staging.stg_event_items",
    "mart.sessions",
    "mart.product_performance",
)
NOW = datetime.now(UTC).replace(microsecond=0)


def insert_event(
    path: Path,
    event_type: str,
    props: dict[str, Any],
    received_at: datetime,
    *,
    event_id: str | None = None,
    visitor: str = "edge-visitor",
) -> str:
    """A raw.events row received at `received_at` (sent a second before); its event_id."""
    event_id = event_id or str(uuid.uuid4())
    event_ts = received_at - timedelta(seconds=1)
    with duckdb.connect(str(path)) as con:
        con.execute(
            "insert into raw.events (event_id, event_type, event_ts, received_at, event_date,"
            " anonymous_id, device_type, source, properties)"
            " values (?, ?, ?, ?, ?, ?, 'android', 'native', ?)",
            [
                event_id,
                event_type,
                event_ts,
                received_at,
                event_ts.date(),
                visitor,
                orjson.dumps(props).decode(),
            ],
        )
    return event_id


def purchase(order_id: str, revenue: Any = "3000") -> dict[str, Any]:
    return {
        "order_id": order_id,
        "revenue": revenue,
        "items": [{"product_id": "P-EDGE", "quantity": 2, "price": 1500}],
    }


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {t: sorted(con.execute(f"select * from {t}").fetchall(), key=repr) for t in TABLES}


def ids(path: Path, table: str) -> set[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {row[0] for row in con.execute(f"select event_id from {table}").fetchall()}


def empty_warehouse(path: Path) -> None:
    warehouse = DuckDBWarehouse(path)
    warehouse.ensure_layers()
    warehouse.close()


def run(project: DbtProject, *extra: str) -> None:
    result = project.invoke("run", *SELECT, *extra)
    assert result.success, "\n".join(result.failures)


def full_rebuild(project: DbtProject, path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The tables a full refresh builds from the same raw rows: in the same working copy (no
    second copy to parse from scratch), on the file itself, which then gets its incremental
    state back for the tests that read it."""
    wal = Path(f"{path}.wal")
    assert not wal.exists(), "the file is not checkpointed: a copy of it would miss rows"
    kept = path.with_name("incremental.duckdb")
    shutil.copyfile(path, kept)
    run(project, "--full-refresh")
    rebuilt = snapshot(path)
    wal.unlink(missing_ok=True)
    shutil.copyfile(kept, path)
    return rebuilt


@pytest.fixture(scope="module")
def after_empty_start(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, list[tuple[Any, ...]]], set[str]]:
    root = tmp_path_factory.mktemp("events_empty_start")
    path = root / "shopstream.duckdb"
    empty_warehouse(path)
    project = DbtProject(root / "transform", path, VARIABLES)
    run(project)  # the first build: nothing received yet

    # Then events arrive over five days (more than the lookback) before the next build.
    valid: set[str] = set()
    for days_ago in (5, 4, 1, 0):
        at = NOW - timedelta(days=days_ago, hours=1)
        visitor = f"visitor-{days_ago}"
        valid.add(insert_event(path, "page_view", {}, at, visitor=visitor))
        valid.add(
            insert_event(
                path,
                "product_view",
                {"product_id": "P-EDGE"},
                at + timedelta(minutes=1),
                visitor=visitor,
            )
        )
        valid.add(
            insert_event(
                path,
                "purchase",
                purchase(f"edge-{days_ago}"),
                at + timedelta(minutes=2),
                visitor=visitor,
            )
        )
    insert_event(path, "add_to_cart", {"product_id": "P-EDGE", "quantity": -1}, NOW)
    run(project)  # incremental
    incremental = snapshot(path)
    return incremental, full_rebuild(project, path), valid


def test_events_arriving_after_an_empty_first_build_are_staged(
    after_empty_start: tuple[dict[str, Any], dict[str, Any], set[str]],
) -> None:
    incremental, _, valid = after_empty_start
    assert {row[0] for row in incremental["staging.stg_events"]} == valid
    assert [row[-2] for row in incremental["staging.stg_events_rejected"]] == ["bad_quantity"]
    assert len(incremental["staging.stg_event_items"]) == 4  # one line per purchase
    assert len(incremental["mart.sessions"]) == 4  # one visitor a day


def test_incremental_after_an_empty_first_build_equals_a_full_rebuild(
    after_empty_start: tuple[dict[str, Any], dict[str, Any], set[str]],
) -> None:
    incremental, rebuilt, _ = after_empty_start
    for table in TABLES:
        assert incremental[table] == rebuilt[table], table


@pytest.fixture(scope="module")
def late_copies(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, str], dict[str, list[tuple[Any, ...]]]]:
    root = tmp_path_factory.mktemp("events_late_copies")
    path = root / "shopstream.duckdb"
    empty_warehouse(path)
    first = NOW - timedelta(days=LOOKBACK_DAYS + 3)
    ids_of = {
        # a purchase rejected (revenue not a number), its valid copy after the lookback
        "rejected_first": insert_event(path, "purchase", purchase("late-1", "lots"), first),
        # a valid purchase, a rejected copy after the lookback
        "valid_first": insert_event(
            path, "purchase", purchase("late-2"), first + timedelta(minutes=1)
        ),
    }
    project = DbtProject(root / "transform", path, VARIABLES)
    run(project)
    # Other events move every watermark past the first copies' lookback.
    insert_event(path, "page_view", {}, NOW - timedelta(hours=1))
    insert_event(path, "add_to_cart", {"product_id": "P1", "quantity": 0}, NOW - timedelta(hours=1))
    run(project)
    insert_event(path, "purchase", purchase("late-1"), NOW, event_id=ids_of["rejected_first"])
    insert_event(path, "purchase", purchase("late-2", "lots"), NOW, event_id=ids_of["valid_first"])
    run(project)
    return path, ids_of, full_rebuild(project, path)


def test_a_late_valid_copy_of_a_rejected_event_stays_rejected(
    late_copies: tuple[Path, dict[str, str], dict[str, Any]],
) -> None:
    path, ids_of, _ = late_copies
    assert ids_of["rejected_first"] in ids(path, "staging.stg_events_rejected")
    assert ids_of["rejected_first"] not in ids(path, "staging.stg_events")
    assert ids_of["rejected_first"] not in ids(path, "staging.stg_event_items")
    # ... and a late rejected copy of a staged event is not counted as rejected
    assert ids_of["valid_first"] in ids(path, "staging.stg_events")
    assert ids_of["valid_first"] not in ids(path, "staging.stg_events_rejected")


def test_late_copies_incremental_equals_a_full_rebuild(
    late_copies: tuple[Path, dict[str, str], dict[str, Any]],
) -> None:
    path, _, rebuilt = late_copies
    incremental = snapshot(path)
    for table in TABLES:
        assert incremental[table] == rebuilt[table], table
