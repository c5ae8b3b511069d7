"""Kind ``replication`` (a pipeline check): is change data capture keeping up, and is its slot
making PostgreSQL keep WAL?

Reads the replication slot ``ctx.slot_name`` on the shop's PostgreSQL (``ctx.source_dsn``):

- ``lag_bytes``: WAL written but not yet confirmed by the CDC reader
  (``pg_current_wal_lsn() - confirmed_flush_lsn``): changes not yet durable in raw;
- ``retained_bytes``: WAL the server must keep for the slot (``- restart_lsn``): a stopped
  reader makes this grow until the disk fills, the classic way a forgotten slot takes a
  database down;
- ``lag_seconds``: the walsender's ``flush_lag`` while the reader is connected (how old the
  newest WAL it confirmed was); while it is not connected, the slot is inactive and this
  part warns.

No DSN: CDC is not configured here, nothing to check. The slot missing: fail, saying how to
get it back.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field

from shopstream.quality.checks import CheckContext
from shopstream.quality.checks.judging import grade
from shopstream.quality.results import CheckResult, Severity, Status
from shopstream.quality.spec import PlannedCheck

SEVERITY: Severity = "critical"
READS_TABLE = False
TABLE = "pipeline.replication"
_MIB = 1024 * 1024
_CONNECT_TIMEOUT_S = 5

SLOT_SQL = """
SELECT s.active,
       s.wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::float8 AS lag_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::float8 AS retained_bytes,
       extract(epoch FROM r.flush_lag)::float8 AS flush_lag_seconds,
       s.plugin,
       s.database
FROM pg_replication_slots AS s
LEFT JOIN pg_stat_replication AS r ON r.pid = s.active_pid
WHERE s.slot_name = %s
"""


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warn_lag_bytes: float = Field(default=64 * _MIB, ge=0)
    fail_lag_bytes: float = Field(default=512 * _MIB, ge=0)
    warn_retained_bytes: float = Field(default=1024 * _MIB, ge=0)
    fail_retained_bytes: float = Field(default=4096 * _MIB, ge=0)
    warn_lag_seconds: float = Field(default=60, ge=0)
    fail_lag_seconds: float = Field(default=300, ge=0)


def _where(dsn: str) -> str:
    """host:port/db of the DSN, never its password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the configured source database"
    host = parts.get("host") or "localhost"
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


def _mib(value: float) -> str:
    return f"{value / _MIB:,.1f} MiB"


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    if not ctx.source_dsn:
        return []  # CDC not configured: no slot to watch
    severity = check.spec.severity or SEVERITY

    def result(
        part: str,
        status: Status,
        observed: float | None,
        threshold: str,
        message: str,
        unit: str,
        details: dict[str, Any],
    ) -> CheckResult:
        return CheckResult(
            check=f"{check.name}.{part}" if part else check.name,
            kind=check.spec.kind,
            table=TABLE,
            column=None,
            status=status,
            observed=observed,
            expected=None,
            threshold=threshold,
            severity=severity,
            message=message,
            details=details,
            window_end=ctx.now,
            unit=unit,
        )

    where = _where(ctx.source_dsn)
    try:
        with psycopg.connect(
            ctx.source_dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
        ) as conn:
            cursor = conn.execute(SLOT_SQL, [ctx.slot_name])
            row = cursor.fetchone()
            names = [c.name for c in cursor.description or []]
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [
            result(
                "",
                "error",
                None,
                "",
                f"cannot reach the shop's PostgreSQL at {where}: "
                f"{first_line}; check that it runs and the CDC DSN setting",
                "",
                {},
            )
        ]
    if row is None:
        return [
            result(
                "",
                "fail",
                None,
                "the slot must exist",
                f"replication slot {ctx.slot_name!r} does not exist on {where}: change data "
                "capture has stopped and changes made meanwhile are not captured; start the "
                "CDC reader (it creates the slot and takes a fresh snapshot) or fix the slot "
                "name setting",
                "",
                {"slot": ctx.slot_name},
            )
        ]
    slot = dict(zip(names, row, strict=True))
    facts = {
        "slot": ctx.slot_name,
        "active": bool(slot["active"]),
        "wal_status": slot["wal_status"],
        "lag_bytes": slot["lag_bytes"],
        "retained_bytes": slot["retained_bytes"],
        "flush_lag_seconds": slot["flush_lag_seconds"],
    }
    lag = float(slot["lag_bytes"] or 0)
    retained = float(slot["retained_bytes"] or 0)
    results = [
        result(
            "lag_bytes",
            grade(lag, warn=params.warn_lag_bytes, fail=params.fail_lag_bytes),
            lag,
            f"warn above {_mib(params.warn_lag_bytes)}, fail above {_mib(params.fail_lag_bytes)}",
            f"slot {ctx.slot_name!r}: {_mib(lag)} of WAL not yet confirmed by the CDC reader",
            "bytes",
            facts,
        ),
        result(
            "retained_bytes",
            grade(retained, warn=params.warn_retained_bytes, fail=params.fail_retained_bytes),
            retained,
            f"warn above {_mib(params.warn_retained_bytes)}, fail above "
            f"{_mib(params.fail_retained_bytes)}",
            f"slot {ctx.slot_name!r} makes PostgreSQL keep {_mib(retained)} of WAL"
            + (
                ""
                if slot["wal_status"] in (None, "reserved")
                else f" (wal_status {slot['wal_status']}: WAL may be lost to the slot)"
            ),
            "bytes",
            facts,
        ),
    ]
    if not slot["active"]:
        results.append(
            result(
                "lag_seconds",
                "warn",
                None,
                "the CDC reader must be connected",
                f"slot {ctx.slot_name!r} is inactive: no CDC reader is connected, so changes "
                "pile up in WAL; start the CDC reader (or the platform) again",
                "seconds",
                facts,
            )
        )
    else:
        seconds = float(slot["flush_lag_seconds"] or 0.0)
        results.append(
            result(
                "lag_seconds",
                grade(seconds, warn=params.warn_lag_seconds, fail=params.fail_lag_seconds),
                seconds,
                f"warn above {params.warn_lag_seconds:g} s, fail above "
                f"{params.fail_lag_seconds:g} s",
                f"the CDC reader confirms WAL {seconds:.1f} s after it is written",
                "seconds",
                facts,
            )
        )
    return results


__all__ = ["READS_TABLE", "SEVERITY", "Params", "run"]
