"""Debezium is the oracle for our change envelope.

One change set (every column type the shop uses, inserts, updates, a primary-key change,
deletes, REPLICA IDENTITY FULL, unchanged TOAST, a truncate) is captured twice from the same
database, each tool with its own slot created before the change set runs:

* by Debezium itself (embedded, via pydbzengine; tests/support/debezium.py), and
* by our CLI as a black box, `python -m shopstream cdc`, read back from raw.cdc_<table>.

The first test pins down what Debezium emits (so a Debezium upgrade that changes it is noticed);
the second asserts that our events equal Debezium's, change by change
(tests/support/envelope_compare.py says which encoding differences are tolerated and why).
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.debezium import (
    capture_with_debezium,
    debezium_available,
    prepare_debezium_slot,
)
from tests.support.envelope_compare import UNAVAILABLE, diff_envelopes

TABLES = ["typed_values", "full_identity"]
DBZ_SLOT = "debezium_oracle"

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE typed_values (
    id int PRIMARY KEY,
    c_bigint bigint,
    c_numeric numeric(20, 6),
    c_float8 float8,
    c_real real,
    c_bool bool,
    c_text text,
    c_varchar varchar(40),
    c_uuid uuid,
    c_jsonb jsonb,
    c_date date,
    c_timestamp timestamp,
    c_timestamptz timestamptz,
    c_time time,
    c_timetz timetz,
    c_interval interval,
    c_bytea bytea,
    c_int_array int[],
    c_text_array text[],
    c_enum mood,
    c_toasted text
);
CREATE TABLE full_identity (
    id int PRIMARY KEY,
    qty int NOT NULL,
    price numeric(20, 6),
    note text,
    c_toasted text
);
ALTER TABLE full_identity REPLICA IDENTITY FULL;
"""

# ~190 kB of md5 hex: too random to compress below the TOAST threshold, so it is stored out of
# line and an UPDATE that leaves it alone does not send it (the "unchanged TOAST" case).
TOASTED = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 6000) g)"

# One list per transaction; the comments give the change events Debezium emits for each.
CHANGE_SET: list[list[str]] = [
    [  # c, c, c, c
        f"""INSERT INTO typed_values VALUES
            (1, 9007199254740993, 12345678901234.123456, 0.1, 1.5, true, 'héllo "wörld"',
             'varchar', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
             '{{"sku": "A-1", "price": 12.50, "tags": ["x", null], "ü": true}}',
             '2024-02-29', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.5+02',
             '13:14:15.12345', '13:14:15.5+02', '1 year 2 mons -3 days 04:05:06.5',
             '\\x00ff10', '{{1,2,NULL}}', '{{"a","b,c","q\\"uote",NULL}}', 'happy', {TOASTED})""",
        "INSERT INTO typed_values (id) VALUES (2)",
        """INSERT INTO typed_values VALUES
            (3, -9223372036854775808, -0.000001, -1.5e-300, -0.25, false,
             E'line\\nbreak \\\\ tab\\t', '', '00000000-0000-0000-0000-000000000000', '[]',
             '0044-03-15 BC', '1969-12-31 23:59:59.999999', '1970-01-01 05:30:00.000001+05:30',
             '00:00:00', '23:59:59.999999-05:30', '-1 days -00:00:01', '\\x', '{}', '{}',
             'sad', NULL)""",
        """INSERT INTO typed_values
                (id, c_numeric, c_float8, c_real, c_date, c_timestamp, c_timestamptz)
            VALUES (4, 'NaN', 'NaN', '-Infinity', 'infinity', 'infinity', '-infinity')""",
    ],
    # u: REPLICA IDENTITY DEFAULT, so no before; c_toasted unchanged, so not sent
    ["UPDATE typed_values SET c_bigint = c_bigint + 1, c_text = 'updated' WHERE id = 1"],
    ["UPDATE typed_values SET id = 20 WHERE id = 2"],  # d (old key), c (new key)
    ["DELETE FROM typed_values WHERE id = 3"],  # d, before = key only
    [  # c, c
        f"INSERT INTO full_identity VALUES (1, 2, 9.99, 'first', {TOASTED})",
        "INSERT INTO full_identity VALUES (2, 1, 0.5, NULL, NULL)",
    ],
    [  # u, u, d, c, d: one transaction over both tables
        "UPDATE full_identity SET qty = 3 WHERE id = 1",
        "UPDATE typed_values SET c_enum = 'ok' WHERE id = 1",
        "UPDATE full_identity SET id = 12 WHERE id = 2",
        "DELETE FROM full_identity WHERE id = 1",
    ],
    ["TRUNCATE full_identity"],  # t
]
EXPECTED_OPS = ["c", "c", "c", "c", "u", "d", "c", "d", "c", "c", "u", "u", "d", "c", "d", "t"]


def _execute(dsn: str, statements: str | list[str]) -> None:
    with psycopg.connect(dsn) as conn:  # one transaction, committed on leaving the block
        for statement in [statements] if isinstance(statements, str) else statements:
            conn.execute(statement)


def _toasted_text(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(TOASTED).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def source_dsn(request: pytest.FixtureRequest) -> str:
    """A fresh database with the schema (the `postgres` fixture drops it with its slots)."""
    reason = debezium_available()
    if reason is not None:
        pytest.skip(f"Debezium (the oracle) cannot run here: {reason}")
    try:
        postgres = request.getfixturevalue("postgres")
    except pytest.FixtureLookupError:
        pytest.skip("fixture `postgres` (tests/support/pg_fixtures.py) is not registered")
    dsn: str = postgres.dsn
    _execute(dsn, SCHEMA)
    return dsn


def _capture_change_set_with_debezium(dsn: str, work_dir: Path) -> list[dict[str, Any]]:
    for transaction in CHANGE_SET:
        _execute(dsn, transaction)
    return capture_with_debezium(
        dsn,
        TABLES,
        expected=len(EXPECTED_OPS),
        timeout=120,
        work_dir=work_dir,
        slot_name=DBZ_SLOT,
        publication_name=DBZ_SLOT,
        settle=1.0,  # long enough to see an event beyond the expected ones
    )


def test_debezium_oracle_emits_every_type_and_op(source_dsn: str, tmp_path: Path) -> None:
    prepare_debezium_slot(source_dsn, TABLES, slot_name=DBZ_SLOT, publication_name=DBZ_SLOT)
    events = _capture_change_set_with_debezium(source_dsn, tmp_path / "debezium")
    toasted = _toasted_text(source_dsn)

    assert [e["op"] for e in events] == EXPECTED_OPS
    tx_ids = [e["source"]["txId"] for e in events]
    assert len(dict.fromkeys(tx_ids)) == len(CHANGE_SET)
    assert [e["source"]["table"] for e in events[:4]] == ["typed_values"] * 4

    # What Debezium 3.6 emits per type with tests/support/debezium.py's ENVELOPE_OPTIONS.
    first = events[0]["after"]
    assert first == {
        "id": 1,
        "c_bigint": 9007199254740993,  # beyond 2**53: exact in JSON text, as Python reads it
        "c_numeric": "12345678901234.123456",
        "c_float8": 0.1,
        "c_real": 1.5,
        "c_bool": True,
        "c_text": 'héllo "wörld"',
        "c_varchar": "varchar",
        "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "c_jsonb": '{"ü": true, "sku": "A-1", "tags": ["x", null], "price": 12.50}',
        "c_date": "2024-02-29Z",  # isostring appends Z even to a date
        "c_timestamp": "2024-02-29T13:14:15.123456Z",  # ... and to a zone-less timestamp
        "c_timestamptz": "2024-02-29T11:14:15.500000Z",  # UTC, always 6 fraction digits
        "c_time": "13:14:15.12345Z",
        "c_timetz": "11:14:15.5Z",  # in UTC
        "c_interval": "P1Y2M-3DT4H5M6.5S",
        "c_bytea": base64.b64encode(b"\x00\xff\x10").decode(),
        "c_int_array": [1, 2, None],
        "c_text_array": ["a", "b,c", 'q"uote', None],
        "c_enum": "happy",
        "c_toasted": toasted,
    }
    assert events[1]["after"] == {"id": 2} | dict.fromkeys(first.keys() - {"id"})
    edge = events[2]["after"]
    assert edge["c_numeric"] == "-0.000001"
    assert edge["c_date"] == "-0043-03-15Z"  # 44 BC as an ISO-8601 expanded year
    assert edge["c_interval"] == "P0Y0M-1DT0H0M-1S"  # every component, zeros included
    assert edge["c_timestamp"] == "1969-12-31T23:59:59.999999Z"
    assert edge["c_timestamptz"] == "1970-01-01T00:00:00.000001Z"
    assert edge["c_bytea"] == ""
    assert edge["c_int_array"] == []
    assert edge["c_text_array"] == []
    non_finite = events[3]["after"]
    assert non_finite["c_numeric"] == "NAN"  # Debezium's spelling; PostgreSQL says NaN
    assert non_finite["c_float8"] == "NaN"  # JSON has no NaN: a string
    assert non_finite["c_real"] == "-Infinity"
    assert non_finite["c_date"] == "-5877611-06-21Z"  # infinity, overflowed (sic)
    assert non_finite["c_timestamp"].startswith("+294247-01-10T")  # infinity, clamped
    assert non_finite["c_timestamptz"] == "-infinity"

    update = events[4]
    assert update["before"] is None  # REPLICA IDENTITY DEFAULT and the key did not change
    assert update["after"]["c_toasted"] == UNAVAILABLE
    assert update["after"]["c_text"] == "updated"

    key_delete, key_create = events[5], events[6]  # UPDATE ... SET id = 20
    assert key_delete["source"]["lsn"] == key_create["source"]["lsn"]
    assert key_delete["before"] == {"id": 2} | dict.fromkeys(first.keys() - {"id"})
    assert key_create["after"]["id"] == 20
    assert events[7]["before"]["id"] == 3
    assert events[7]["before"]["c_text"] is None

    full_update = events[10]
    assert full_update["source"]["table"] == "full_identity"
    assert full_update["before"]["qty"] == 2
    assert full_update["after"]["qty"] == 3
    # With REPLICA IDENTITY FULL the old row carries the TOASTed value, and Debezium fills the
    # unchanged column of the new row from it instead of writing the placeholder.
    assert full_update["before"]["c_toasted"] == toasted
    assert full_update["after"]["c_toasted"] == toasted
    assert events[12]["before"] == {
        "id": 2,
        "qty": 1,
        "price": "0.500000",
        "note": None,
        "c_toasted": None,
    }
    truncate = events[15]
    assert truncate["before"] is None
    assert truncate["after"] is None
    assert truncate["source"]["table"] == "full_identity"

    assert diff_envelopes(events, events) == []


def test_diff_envelopes_tolerates_encodings_and_reports_real_differences() -> None:
    theirs: list[dict[str, Any]] = [
        {
            "op": "u",
            "before": None,
            "after": {
                "id": 1,
                "d": "2024-02-29Z",
                "ts": "2024-02-29T13:14:15.500000Z",
                "tags": [UNAVAILABLE],
                "blob": base64.b64encode(UNAVAILABLE.encode()).decode(),
                "n": "1.500",
            },
            "source": {"schema": "public", "table": "t", "txId": 7, "lsn": 100, "ts_ms": 5},
        }
    ]
    ours = copy.deepcopy(theirs)
    ours[0]["after"] |= {
        "d": "2024-02-29",
        "ts": "2024-02-29T13:14:15.5+00:00",
        "tags": UNAVAILABLE,
        "blob": UNAVAILABLE,
    }
    ours[0]["source"]["ts_ms"] = 6  # 1 ms apart: rounding versus truncation
    assert diff_envelopes(ours, theirs) == []

    ours[0]["after"]["n"] = "1.5"
    ours[0]["source"]["lsn"] = 101
    problems = diff_envelopes(ours, theirs)
    assert any("after.n" in p for p in problems)
    assert any("source.lsn" in p for p in problems)
    assert diff_envelopes([], theirs) == [
        "missing in ours: tx 7 #0 (public.t op=u lsn=100)",
    ]


# -- the shopstream half: our CLI as a black box ----------------------------------------------


def _shopstream_cli_missing() -> str | None:
    if importlib.util.find_spec("shopstream.__main__") is None:
        return "the shopstream CLI (`python -m shopstream`) is not built yet"
    probe = subprocess.run(
        [sys.executable, "-m", "shopstream", "cdc", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        return "`python -m shopstream cdc` is not built yet (`cdc --help` fails)"
    return None


def _run_shopstream_cdc(dsn: str, data_dir: Path) -> None:
    """One `shopstream cdc` run that stops after 3 s without changes."""
    env = os.environ | {
        "SHOPSTREAM_DATA_DIR": str(data_dir),
        "SHOPSTREAM_CDC__SNAPSHOT_MODE": "never",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "shopstream", "cdc", "--dsn", dsn, "--idle-exit", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"shopstream cdc exited {proc.returncode}:\n{proc.stderr[-4000:]}"


def _read_shopstream_changes(database: Path) -> list[dict[str, Any]]:
    """Our envelopes from raw.cdc_<table>, in change_id order (commit LSN, then position)."""
    import duckdb

    rows: list[tuple[Any, ...]] = []
    with duckdb.connect(str(database), read_only=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'raw' AND starts_with(table_name, 'cdc_')"
        ).fetchall()
        for (table,) in tables:
            rows += conn.execute(
                f'SELECT change_id, op, "before", "after", source FROM raw."{table}"'
            ).fetchall()
    rows.sort(key=lambda row: row[0])

    def parsed(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    return [
        {"op": op, "before": parsed(before), "after": parsed(after), "source": parsed(source)}
        for _, op, before, after, source in rows
    ]


def test_shopstream_envelope_equals_debezium(source_dsn: str, tmp_path: Path) -> None:
    missing = _shopstream_cli_missing()
    if missing is not None:
        pytest.skip(missing)
    data_dir = tmp_path / "shopstream"
    # Both slots exist before the change set, so both tools see exactly the same changes.
    _run_shopstream_cdc(source_dsn, data_dir)  # creates shopstream's slot; nothing to read yet
    prepare_debezium_slot(source_dsn, TABLES, slot_name=DBZ_SLOT, publication_name=DBZ_SLOT)
    theirs = _capture_change_set_with_debezium(source_dsn, tmp_path / "debezium")
    _run_shopstream_cdc(source_dsn, data_dir)
    ours = _read_shopstream_changes(data_dir / "shopstream.duckdb")

    problems = diff_envelopes(ours, theirs)
    assert not problems, "our envelope differs from Debezium's:\n" + "\n".join(problems)
    # The comparison reads naive and UTC timestamps alike; the envelope promises UTC.
    for event in ours:
        stamp = (event["after"] or {}).get("c_timestamptz")
        if isinstance(stamp, str) and "infinity" not in stamp:
            assert stamp.endswith(("Z", "+00:00")), stamp
