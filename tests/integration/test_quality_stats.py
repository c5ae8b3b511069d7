"""The statistical and column checks on real DuckDB files of generated history
(shopstream.generators.history) with anomalies injected (shopstream.generators.anomalies).

- every anomaly is caught by the right check with the right status, and the same data without
  it passes at the same moment;
- five weeks of clean history (weekly and daily rhythm, growth, noise, a daylight-saving change
  in the last week) raise no warn or fail from volume (hour and day), null_rate and distribution
  at ANY hour of the last week;
- short history says "learning"; bad options give an error naming the option.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from shopstream.generators import anomalies
from shopstream.generators.history import HistoryPlan, write_history
from shopstream.quality.checks import CheckContext
from shopstream.quality.engine import run_checks
from shopstream.quality.results import CheckResult
from shopstream.quality.spec import QualityConfig
from shopstream.warehouse.duckdb.database import check_read_only

TZ = ZoneInfo("Europe/Berlin")
# The last week holds Berlin's autumn clock change (Sun 25 Oct 2026, a 25-hour day).
END = datetime(2026, 10, 29, 9, 0, tzinfo=UTC)
EVENTS = {
    "time_column": "event_ts",
    "landed_column": "received_at",
    "key": ["event_id"],
}
PRICE = "json_extract_string(properties, '$.price')"
BASELINE_CHECKS: list[dict[str, Any]] = [
    {"kind": "volume", "name": "volume_hourly"},
    {"kind": "volume", "name": "volume_daily", "granularity": "day"},
    {"kind": "null_rate", "column": "user_id"},
    {"kind": "distribution", "column": "device_type"},
    {"kind": "distribution", "name": "price", "expression": PRICE},
]


def config(*checks: dict[str, Any], table: str = "raw.events", **spec: Any) -> QualityConfig:
    return QualityConfig.model_validate(
        {"tables": {table: {**EVENTS, **spec, "checks": list(checks)}}}
    )


def judge(
    con: duckdb.DuckDBPyConnection, cfg: QualityConfig, now: datetime
) -> dict[str, CheckResult]:
    def query(sql: str, params: list[Any] | None = None) -> Any:
        check_read_only(sql)  # what the warehouse's query path lets through
        return con.sql(sql, params=params or None).to_arrow_table()

    ctx = CheckContext(query=query, now=now, timezone=TZ)
    return {r.check: r for r in run_checks(cfg, ctx).results}


def run(path: Path, cfg: QualityConfig, now: datetime) -> dict[str, CheckResult]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return judge(con, cfg, now)
    finally:
        con.close()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quality") / "clean.duckdb"
    con = duckdb.connect(str(path))
    plan = HistoryPlan(
        days=35,
        end=END,
        events_per_day=10_000,
        orders_per_day=200,
        timezone="Europe/Berlin",
        noise=0.1,
        seed=11,
    )
    write_history(con, plan)
    con.close()
    return path


@pytest.fixture
def broken(history: Path, tmp_path: Path) -> Callable[..., Path]:
    """A copy of the clean history with an injection applied: broken(inject, **kwargs)."""

    def make(inject: Callable[..., Any], **kwargs: Any) -> Path:
        path = tmp_path / "broken.duckdb"
        shutil.copy(history, path)
        con = duckdb.connect(str(path))
        try:
            inject(con, **kwargs)
        finally:
            con.close()
        return path

    return make


def test_clean_history_raises_no_alarm_at_any_hour_of_the_last_week(history: Path) -> None:
    cfg = config(*BASELINE_CHECKS)
    alarms, judged = [], 0
    con = duckdb.connect(str(history), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    for h in range(168):
        now = END - timedelta(hours=h) + timedelta(minutes=7)
        for r in judge(con, cfg, now).values():
            assert r.status not in ("error", "learning"), r.message
            judged += 1
            if r.status in ("warn", "fail"):
                alarms.append(f"{now:%a %H:%M}: {r.check} {r.status}: {r.message}")
    con.close()
    assert judged == 168 * len(BASELINE_CHECKS)
    assert not alarms, "\n".join(alarms)


AT = datetime(2026, 10, 28, 13, 20, tzinfo=UTC)  # 14:00-15:00 Wednesday in Berlin
AFTER = datetime(2026, 10, 28, 14, 10, tzinfo=UTC)  # that hour is complete


@pytest.mark.parametrize(
    ("inject", "kwargs", "check", "status"),
    [
        (anomalies.inject_volume_drop, {"keep": 0.3}, {"kind": "volume"}, "fail"),
        (anomalies.inject_volume_spike, {"factor": 2.0}, {"kind": "volume"}, "fail"),
        (
            anomalies.inject_null_spike,
            {"column": "session_id", "share": 0.3},
            {"kind": "null_rate", "column": "session_id"},
            "fail",
        ),
        (
            anomalies.inject_null_spike,
            {"column": "session_id", "share": 0.1},
            {"kind": "null_rate", "column": "session_id"},
            "warn",
        ),
        (
            anomalies.inject_duplicate_burst,
            {"share": 0.5},
            {"kind": "duplicates", "window": "hour", "warn_rate": 0.01, "fail_rate": 0.05},
            "fail",
        ),
    ],
    ids=["volume_drop", "volume_spike", "null_spike", "null_rise_warns", "duplicate_burst"],
)
def test_an_hour_anomaly_is_caught_and_its_absence_passes(
    history: Path,
    broken: Callable[..., Path],
    inject: Callable[..., Any],
    kwargs: dict[str, Any],
    check: dict[str, Any],
    status: str,
) -> None:
    cfg = config({**check, "name": "judged"})
    clean = run(history, cfg, AFTER)["judged"]
    assert clean.status == "pass", clean.message
    found = run(broken(inject, at=AT, **kwargs), cfg, AFTER)["judged"]
    assert found.status == status, found.message
    assert found.window_start is not None and found.window_end is not None
    assert found.observed is not None and found.message
    if check["kind"] != "volume":
        assert found.evidence  # the keys behind it


def test_a_volume_drop_over_a_whole_day_fails_the_daily_check(
    history: Path, broken: Callable[..., Path]
) -> None:
    day = datetime(2026, 10, 27, tzinfo=TZ)  # Tuesday

    def drop_day(con: duckdb.DuckDBPyConnection) -> None:
        for h in range(24):
            anomalies.inject_volume_drop(con, at=day + timedelta(hours=h), keep=0.5)

    cfg = config({"kind": "volume", "name": "daily", "granularity": "day"})
    now = (day + timedelta(days=1, hours=2)).astimezone(UTC)
    assert run(history, cfg, now)["daily"].status == "pass"
    found = run(broken(drop_day), cfg, now)["daily"]
    assert found.status == "fail", found.message
    assert "Tue 27 Oct" in found.message and "fewer" in found.message
    assert found.details["baseline"] and found.details["score"] < -6


@pytest.mark.parametrize(
    ("kwargs", "check"),
    [
        (
            {"column": "device_type", "value": "web_desktop", "share": 0.5},
            {"kind": "distribution", "column": "device_type"},
        ),
        ({"column": "price", "value": "3"}, {"kind": "distribution", "expression": PRICE}),
    ],
    ids=["categorical", "numeric"],
)
def test_a_distribution_shift_over_a_day_is_caught(
    history: Path, broken: Callable[..., Path], kwargs: dict[str, Any], check: dict[str, Any]
) -> None:
    day = datetime(2026, 10, 27, 12, tzinfo=TZ)
    cfg = config({**check, "name": "mix"})
    now = (day + timedelta(days=1)).astimezone(UTC)
    assert run(history, cfg, now)["mix"].status == "pass"
    path = broken(anomalies.inject_distribution_shift, at=day, timezone="Europe/Berlin", **kwargs)
    found = run(path, cfg, now)["mix"]
    assert found.status == "fail", found.message
    assert found.evidence and found.evidence[0]["share"] != found.evidence[0]["baseline_share"]
    # The baseline is the four Tuesdays before, never the Tuesday judged.
    con = duckdb.connect(str(path), read_only=True)
    value = check.get("expression") or check["column"]
    days = [datetime(2026, 10, 27, tzinfo=TZ) - timedelta(weeks=k) for k in range(5)]
    counts = [
        con.execute(
            f"SELECT count({value}) FROM raw.events WHERE event_ts >= ? AND event_ts < ?",
            [d, d + timedelta(days=1)],
        ).fetchone()[0]  # type: ignore[index]
        for d in days
    ]
    con.close()
    assert found.details["rows"] == counts[0]
    assert found.details["baseline_rows"] == sum(counts[1:])


def test_a_freshness_stall_fails_and_fresh_data_passes(
    history: Path, broken: Callable[..., Path]
) -> None:
    cfg = config({"kind": "freshness", "name": "fresh"})
    now = END - timedelta(minutes=1)
    assert run(history, cfg, now)["fresh"].status == "pass"
    stalled = broken(anomalies.inject_freshness_stall, at=now - timedelta(minutes=45))
    warn = run(stalled, cfg, now)["fresh"]
    assert warn.status == "warn" and warn.observed is not None and 44 < warn.observed < 47
    fail = run(
        stalled, config({"kind": "freshness", "name": "fresh", "fail_after_minutes": 40}), now
    )["fresh"]
    assert fail.status == "fail" and fail.evidence[0]["newest"]


def test_accepted_values_catch_an_unknown_value(history: Path, broken: Callable[..., Path]) -> None:
    types = [
        "page_view",
        "product_view",
        "product_click",
        "search",
        "search_click",
        "add_to_cart",
        "remove_from_cart",
        "begin_checkout",
        "purchase",
    ]
    cfg = config(
        {"kind": "accepted_values", "name": "types", "column": "event_type", "values": types}
    )
    now = END - timedelta(minutes=1)
    clean = run(history, cfg, now)["types"]
    assert clean.status == "pass" and clean.observed == 0, clean.message

    def rename(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            "UPDATE raw.events SET event_type = 'Purchase' WHERE event_type = 'purchase' "
            "AND event_ts >= ?",
            [now - timedelta(hours=3)],
        )

    found = run(broken(rename), cfg, now)["types"]
    assert found.status == "fail"
    assert found.evidence[0]["event_type"] == "Purchase" and found.evidence[0]["rows"] > 0


def test_short_history_is_learning_never_an_alarm(tmp_path: Path) -> None:
    path = tmp_path / "short.duckdb"
    con = duckdb.connect(str(path))
    write_history(
        con,
        HistoryPlan(
            days=10,
            end=END,
            events_per_day=3_000,
            orders_per_day=50,
            timezone="Europe/Berlin",
            seed=5,
        ),
    )
    # Even a collapse of the last hour is not judged while the baseline learns.
    anomalies.inject_volume_drop(con, at=END - timedelta(hours=1), keep=0.05)
    con.close()
    results = run(path, config(*BASELINE_CHECKS), END + timedelta(minutes=5))
    for r in results.values():
        assert r.status == "learning", f"{r.check}: {r.status} {r.message}"
    message = results["volume_hourly"].message
    assert "1.4 weeks" in message and "needs 3" in message


@pytest.mark.parametrize(
    ("check", "named"),
    [
        ({"kind": "volume", "granularity": "week"}, "granularity"),
        ({"kind": "volume", "warn_score": 5, "fail_score": 3}, "fail_score"),
        ({"kind": "null_rate"}, "column"),
        ({"kind": "null_rate", "column": "nope"}, "column"),
        ({"kind": "duplicates", "key": ["nope"]}, "key"),
        ({"kind": "accepted_values", "column": "event_type"}, "values"),
        ({"kind": "distribution", "column": "device_type", "bins": 1}, "bins"),
        ({"kind": "freshness", "time_column": "event_date"}, "time_column"),
        ({"kind": "volume", "windw": "hour"}, "windw"),
    ],
)
def test_bad_options_are_an_error_naming_the_option(
    history: Path, check: dict[str, Any], named: str
) -> None:
    results = list(run(history, config(check), END).values())
    assert [r.status for r in results] == ["error"]
    assert named in results[0].message


def test_a_unique_key_fails_on_any_duplicate_and_an_empty_table_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA staging")
    con.execute("CREATE TABLE staging.stg_orders (order_id VARCHAR, updated_at TIMESTAMPTZ)")
    con.execute(
        "INSERT INTO staging.stg_orders SELECT 'O' || i, TIMESTAMPTZ '2026-10-29 08:00Z' "
        "FROM range(1000) t(i)"
    )
    con.execute("CREATE TABLE staging.stg_users (user_id VARCHAR, updated_at TIMESTAMPTZ)")
    con.close()
    orders = {"time_column": "updated_at", "key": ["order_id"]}
    cfg = QualityConfig.model_validate(
        {
            "tables": {
                "staging.stg_orders": {
                    **orders,
                    "checks": [{"kind": "duplicates", "name": "dups"}],
                },
                "staging.stg_users": {
                    "time_column": "updated_at",
                    "checks": [{"kind": "freshness", "name": "users_fresh"}],
                },
            }
        }
    )
    clean = run(path, cfg, END)
    assert clean["dups"].status == "pass" and clean["users_fresh"].status == "fail"
    assert "no rows" in clean["users_fresh"].message
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO staging.stg_orders VALUES ('O7', TIMESTAMPTZ '2026-10-29 08:00Z')")
    con.close()
    found = run(path, cfg, END)["dups"]
    assert found.status == "fail" and found.evidence == [{"order_id": "O7", "copies": 2}]


def test_whole_table_rules_and_redacted_evidence(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA staging")
    con.execute("CREATE TABLE staging.stg_users (user_id VARCHAR, email VARCHAR, grade VARCHAR)")
    con.execute(
        "INSERT INTO staging.stg_users VALUES ('U1', 'kim@shop.example', 'GOLD'), "
        "('U2', NULL, 'SILVER'), ('U3', 'lee@shop.example', 'lee@shop.example')"
    )
    con.close()
    users = {"key": ["user_id"]}
    cfg = QualityConfig.model_validate(
        {
            "tables": {
                "staging.stg_users": {
                    **users,
                    "checks": [
                        {
                            "kind": "null_rate",
                            "name": "emails",
                            "column": "email",
                            "window": "all",
                            "max_rate": 0.1,
                        },
                        {
                            "kind": "null_rate",
                            "name": "no_ceiling",
                            "column": "email",
                            "window": "all",
                        },
                        {
                            "kind": "accepted_values",
                            "name": "grades",
                            "column": "grade",
                            "window": "all",
                            "values": ["GOLD", "SILVER", "BRONZE"],
                        },
                    ],
                }
            }
        }
    )
    results = run(path, cfg, END)
    emails = results["emails"]
    assert emails.status == "fail" and emails.observed == pytest.approx(1 / 3)
    assert emails.evidence == [{"user_id": "U2"}]
    assert results["no_ceiling"].status == "error" and "max_rate" in results["no_ceiling"].message
    grades = results["grades"]
    assert grades.status == "fail"
    assert grades.evidence == [{"grade": "<email>", "rows": 1}]  # never the address itself


def test_freshness_tells_a_quiet_night_from_a_stall(tmp_path: Path) -> None:
    """Orders every 10 minutes from 08:00 to 22:00 Berlin time, none at night, for five weeks."""
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'Europe/Berlin'")
    con.execute("CREATE SCHEMA raw")
    con.execute(
        "CREATE TABLE raw.orders AS SELECT ts AS ingested_at FROM generate_series("
        "TIMESTAMPTZ '2026-09-24 00:00:00+02', TIMESTAMPTZ '2026-10-29 12:00:00+01', "
        "INTERVAL 10 MINUTE) t(ts) WHERE hour(ts) BETWEEN 8 AND 21"
    )
    con.close()
    orders = {"landed_column": "ingested_at"}
    sla = {"kind": "freshness", "name": "fresh", "warn_after_minutes": 15, "fail_after_minutes": 30}
    cfg = QualityConfig.model_validate(
        {
            "tables": {
                "raw.orders": {
                    **orders,
                    "checks": [sla, {**sla, "name": "sla_only", "min_expected_arrivals": 0}],
                }
            }
        }
    )
    night = datetime(2026, 10, 29, 3, 0, tzinfo=TZ).astimezone(UTC)
    quiet = run(path, cfg, night)
    assert quiet["fresh"].status == "pass", quiet["fresh"].message
    assert "quiet" in quiet["fresh"].message
    assert quiet["fresh"].details["usual_arrivals_in_gap"] == 0
    assert quiet["sla_only"].status == "fail"  # the SLA alone alarms every night
    # Mid-morning, 40 minutes without an order when 4 or more usually land: a stall.
    stalled = run(path, cfg, datetime(2026, 10, 29, 12, 40, tzinfo=TZ).astimezone(UTC))
    assert stalled["fresh"].status == "fail", stalled["fresh"].message
    assert stalled["fresh"].details["usual_arrivals_in_gap"] >= 4


def test_hours_are_local_hours_in_a_half_hour_time_zone(tmp_path: Path) -> None:
    """Asia/Kolkata is UTC+05:30: its hours start at half past UTC hours."""
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA raw")
    con.execute(
        "CREATE TABLE raw.ticks AS SELECT ts FROM generate_series(TIMESTAMPTZ '2026-09-20 00:00Z',"
        " TIMESTAMPTZ '2026-10-29 00:00Z', INTERVAL 1 MINUTE) t(ts)"
    )
    # 14:00-15:00 in Kolkata on 28 Oct (08:30-09:30 UTC) loses its first 45 minutes.
    con.execute(
        "DELETE FROM raw.ticks WHERE ts >= TIMESTAMPTZ '2026-10-28 08:30Z' "
        "AND ts < TIMESTAMPTZ '2026-10-28 09:15Z'"
    )
    con.close()
    cfg = QualityConfig.model_validate(
        {
            "tables": {
                "raw.ticks": {"time_column": "ts", "checks": [{"kind": "volume", "name": "ticks"}]}
            }
        }
    )
    kolkata = ZoneInfo("Asia/Kolkata")

    def at(hour: int, minute: int) -> dict[str, CheckResult]:
        con = duckdb.connect(str(path), read_only=True)
        try:
            con.execute("SET TimeZone = 'UTC'")

            def query(sql: str, params: list[Any] | None = None) -> Any:
                return con.sql(sql, params=params or None).to_arrow_table()

            now = datetime(2026, 10, 28, hour, minute, tzinfo=kolkata).astimezone(UTC)
            return {r.check: r for r in run_checks(cfg, CheckContext(query, now, kolkata)).results}
        finally:
            con.close()

    before = at(14, 50)["ticks"]  # judges 13:00-14:00: whole
    assert before.status == "pass" and before.observed == 60, before.message
    hit = at(15, 5)["ticks"]  # judges 14:00-15:00: 15 of 60 minutes
    assert hit.status == "fail" and hit.observed == 15 and hit.expected == 60, hit.message
    assert "14:00-15:00 Wed 28 Oct" in hit.message and "75% fewer" in hit.message
