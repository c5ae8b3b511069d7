"""Kind ``schema_drift``: a source's shape changed.

``source: cdc`` (on ``raw.source_schemas``): the CDC reader records a version of a captured
table's schema whenever PostgreSQL's shape of it changes. A version recorded in the last
``lookback_hours`` is compared with the one before: columns added warn (staging picks them up,
but someone should know), columns removed or retyped fail (models and reports that use them
break). The record is at-least-once: rows repeating a (version, fingerprint) are one version.
Also: change rows of the window whose ``after`` / ``before`` carry a key no recorded version
has (the record and the data disagree). One result per captured table.

``source: json`` (on a table with a JSON column, ``raw.events.properties`` grouped ``by``
``event_type``): the keys of the last ``lookback_hours`` and their JSON types against the
``baseline_hours`` before: a key appearing warns; a key nearly every row carried that is gone,
or a key whose type changed, fails. Profiles are drawn from samples (parsing every JSON of a
big table is slow); what a sample suggests is confirmed on the full window and baseline before
it is reported, so a rare key is never mistaken for a new one.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shopstream.quality.checks import CheckContext
from shopstream.quality.checks.judging import evidence
from shopstream.quality.results import CheckResult, Severity, Status
from shopstream.quality.spec import PlannedCheck
from shopstream.quality.windows import ident, relation, time_column_name

SEVERITY: Severity = "high"
#: JSON types as a person says them (DuckDB's json_type names the number's storage).
_TYPES = {
    "UBIGINT": "number",
    "BIGINT": "number",
    "DOUBLE": "number",
    "VARCHAR": "string",
    "BOOLEAN": "boolean",
    "OBJECT": "object",
    "ARRAY": "array",
    # A key that always had a value and now comes as null has changed type as far as its
    # readers are concerned (a tracker that stopped filling it).
    "NULL": "null",
    # BigQuery's JSON_TYPE names (the checks' SQL translated: shopstream.quality.dialect);
    # it has one kind of number.
    **{name: name for name in ("number", "string", "boolean", "object", "array", "null")},
}
_CHANGE_SAMPLE_ROWS = 20_000
#: DuckDB's rows per vector: what a block sample keeps or skips at once.
_BLOCK_ROWS = 2048
#: Fewer blocks than this in a block sample would say little about the range's rows.
_MIN_BLOCKS = 10


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["cdc", "json"] = "cdc"
    #: json: the JSON column whose keys are watched.
    json_column: str = "properties"
    #: json: keys are compared per value of this column (event_type: each event's own keys).
    by: str | None = None
    #: cdc: versions recorded this recently are reported; json: the window under test.
    lookback_hours: float = Field(default=24.0, gt=0)
    #: json: the window the keys are compared with (right before the window under test).
    baseline_hours: float = Field(default=7 * 24.0, gt=0)
    #: json: a key carried by at least this share of a group's baseline rows is "common":
    #: its disappearance fails.
    common_share: float = Field(default=0.95, gt=0, le=1)
    #: json: a common key missing from this much more of the window's rows than usual has
    #: disappeared (0.2: from a fifth of them), whether from all rows or from one client's.
    max_share_drop: float = Field(default=0.2, gt=0, le=1)
    #: json: groups with fewer rows in the window are not judged for disappearing keys.
    min_rows: int = Field(default=20, ge=1)
    #: json: rows sampled from the window and from the baseline to list keys and types
    #: (what a sample suggests is confirmed on all rows before it is reported).
    sample_rows: int = Field(default=50_000, ge=100)
    time_column: str | None = None
    where: str | None = None


def run(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    if params.source == "cdc":
        return _cdc(ctx, check, params)
    return _json(ctx, check, params)


# -- CDC: the schema record -------------------------------------------------------------------


def _columns(text: str) -> dict[str, str]:
    return {c["name"]: c["type"] for c in orjson.loads(text)}


def _cdc(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    since = ctx.now - timedelta(hours=params.lookback_hours)
    versions = ctx.query(
        f"""SELECT raw_table, version, fingerprint, any_value(columns) AS columns,
                   min(recorded_at) AS recorded_at
            FROM {relation(check.table)}
            GROUP BY raw_table, version, fingerprint
            ORDER BY raw_table, version, recorded_at"""
    ).to_pylist()
    by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in versions:
        by_table[row["raw_table"]].append(row)
    results = []
    for raw_table, rows in sorted(by_table.items()):
        changes = _version_changes(rows, since, ctx.now)
        undeclared = _undeclared_keys(ctx, raw_table, rows, since)
        results.append(_cdc_result(ctx, check, params, raw_table, rows, changes, undeclared))
    return results


def _version_changes(
    rows: list[dict[str, Any]], since: datetime, now: datetime
) -> list[dict[str, Any]]:
    """Column changes of the versions recorded in [since, now], each against the version
    before it (distinct fingerprints: a repeated record is no change)."""
    changes: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for row in rows:
        if previous is not None and row["fingerprint"] == previous["fingerprint"]:
            continue
        recorded = row["recorded_at"]
        if previous is not None and since <= recorded <= now:
            old, new = _columns(previous["columns"]), _columns(row["columns"])
            base = {
                "raw_table": row["raw_table"],
                "version": row["version"],
                "recorded_at": recorded,
            }
            for name, type_ in new.items():
                if name not in old:
                    changes.append(
                        {
                            **base,
                            "column": name,
                            "change": "added",
                            "old_type": None,
                            "new_type": type_,
                        }
                    )
                elif old[name] != type_:
                    changes.append(
                        {
                            **base,
                            "column": name,
                            "change": "type changed",
                            "old_type": old[name],
                            "new_type": type_,
                        }
                    )
            for name, type_ in old.items():
                if name not in new:
                    changes.append(
                        {
                            **base,
                            "column": name,
                            "change": "removed",
                            "old_type": type_,
                            "new_type": None,
                        }
                    )
        previous = row
    return changes


def _undeclared_keys(
    ctx: CheckContext, raw_table: str, rows: list[dict[str, Any]], since: datetime
) -> list[dict[str, Any]]:
    """Keys of recent change rows that no recorded version of the table has."""
    table = f"raw.{raw_table}"
    if not ctx.exists(table):
        return []
    known = sorted({name for row in rows for name in _columns(row["columns"])})
    found = ctx.query(
        f"""WITH recent AS (
                SELECT * FROM (SELECT change_id, "after", "before" FROM {relation(table)}
                               WHERE commit_ts >= ? AND op IN ('c', 'u', 'd', 'r'))
                USING SAMPLE reservoir({_CHANGE_SAMPLE_ROWS} ROWS) REPEATABLE (7)),
            keyed AS (
                SELECT change_id, unnest(json_keys(coalesce("after", "before"))) AS column_name
                FROM recent)
            SELECT column_name AS "column", count(*) AS changes, min(change_id) AS first_change_id
            FROM keyed WHERE NOT list_contains(?, column_name)
            GROUP BY column_name ORDER BY changes DESC, column_name""",
        [since, known],
    ).to_pylist()
    return [{"raw_table": raw_table, "change": "undeclared key", **row} for row in found]


def _cdc_result(
    ctx: CheckContext,
    check: PlannedCheck,
    params: Params,
    raw_table: str,
    rows: list[dict[str, Any]],
    changes: list[dict[str, Any]],
    undeclared: list[dict[str, Any]],
) -> CheckResult:
    kinds = {c["change"] for c in changes}
    status: Status = "pass"
    if kinds & {"removed", "type changed"} or undeclared:
        status = "fail"
    elif "added" in kinds:
        status = "warn"
    latest = rows[-1]
    parts = []
    for label in ("added", "removed", "type changed"):
        named = [
            c["column"]
            + (
                f" {c['old_type']} -> {c['new_type']}"
                if label == "type changed"
                else f" {c['new_type'] or c['old_type']}"
            )
            for c in changes
            if c["change"] == label
        ]
        if named:
            parts.append(f"{label}: {', '.join(named)}")
    if undeclared:
        parts.append(
            "changes carry keys no recorded schema has: "
            + ", ".join(u["column"] for u in undeclared)
        )
    if parts:
        message = f"raw.{raw_table} schema drifted (version {latest['version']}): " + "; ".join(
            parts
        )
    else:
        message = (
            f"raw.{raw_table}: no schema change in the last {params.lookback_hours:g} h "
            f"(version {latest['version']})"
        )
    return CheckResult(
        check=f"{check.name}.{raw_table}",
        kind=check.spec.kind,
        table=f"raw.{raw_table}",
        column=None,
        status=status,
        observed=float(len(changes) + len(undeclared)),
        expected=0.0,
        threshold="column added warns; column removed, retyped or undeclared fails",
        severity=check.spec.severity or SEVERITY,
        message=message,
        evidence=evidence(ctx, [*changes, *undeclared]),
        details={
            "version": latest["version"],
            "added": sum(c["change"] == "added" for c in changes),
            "removed": sum(c["change"] == "removed" for c in changes),
            "type_changed": sum(c["change"] == "type changed" for c in changes),
            "undeclared_keys": len(undeclared),
        },
        window_start=ctx.now - timedelta(hours=params.lookback_hours),
        window_end=ctx.now,
        unit="changes",
    )


# -- JSON keys --------------------------------------------------------------------------------


def _path(key: str) -> str:
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _json(ctx: CheckContext, check: PlannedCheck, params: Params) -> list[CheckResult]:
    column = time_column_name(check, params.time_column)
    if not column:
        raise ValueError(
            f"{check.name}: set `time_column:` on {check.table} (or the check) to compare "
            "the last hours' JSON keys with earlier ones"
        )
    end = ctx.now
    start = end - timedelta(hours=params.lookback_hours)
    base_start = start - timedelta(hours=params.baseline_hours)
    group = ident(params.by) if params.by else "''"
    json_column = ident(params.json_column)
    extra = f" AND ({params.where})" if params.where else ""
    table = relation(check.table)

    def rows_in(first: datetime, last: datetime, sample: str = "") -> tuple[str, list[Any]]:
        return (
            # A group without a value is a group too ('' : NULL would match no comparison).
            f"SELECT coalesce(CAST({group} AS VARCHAR), '') AS grp, {json_column} AS j "
            f"FROM {table} {sample} "
            f"WHERE {ident(column)} >= ? AND {ident(column)} < ? AND {json_column} IS NOT NULL"
            f"{extra}",
            [first, last],
        )

    def sampled(first: datetime, last: datetime, sample: int) -> tuple[str, list[Any]]:
        """About ``sample`` rows of [first, last). A big range is sampled by blocks of rows
        (DuckDB then skips reading the others: parsing JSON is what costs); a range too
        small for that to give enough blocks by reservoir, or not at all."""
        sql, args = rows_in(first, last)
        rows = int(ctx.query(f"SELECT count(*) AS n FROM ({sql})", args).to_pylist()[0]["n"])
        if rows <= sample:
            return sql, args
        percent = 100.0 * sample / rows
        if rows / _BLOCK_ROWS * percent / 100 >= _MIN_BLOCKS:
            return rows_in(first, last, f"TABLESAMPLE {percent:.6f}% (system, 7)")
        return f"SELECT * FROM ({sql}) USING SAMPLE reservoir({sample} ROWS) REPEATABLE (7)", args

    def profile(
        first: datetime, last: datetime, sample: int
    ) -> tuple[dict[str, int], dict[tuple[str, str], int], set[tuple[str, str, str]]]:
        sql, args = sampled(first, last, sample)
        found = ctx.query(
            f"""WITH s AS MATERIALIZED ({sql}),
                k AS (SELECT grp, j, unnest(json_keys(j)) AS key FROM s)
                SELECT grp, NULL AS key, NULL AS t, count(*) AS n FROM s GROUP BY grp
                UNION ALL
                SELECT grp, key, json_type(j, '$."' || replace(key, '"', '\\"') || '"') AS t,
                       count(*) AS n
                FROM k GROUP BY ALL""",
            args,
        ).to_pylist()
        totals: dict[str, int] = {}
        keys: dict[tuple[str, str], int] = defaultdict(int)
        types: set[tuple[str, str, str]] = set()
        for r in found:
            if r["key"] is None:
                totals[r["grp"]] = int(r["n"])
                continue
            keys[(r["grp"], r["key"])] += int(r["n"])
            if r["t"] in _TYPES:
                types.add((r["grp"], r["key"], _TYPES[r["t"]]))
        return totals, keys, types

    w_totals, w_keys, w_types = profile(start, end, params.sample_rows)
    b_totals, b_keys, b_types = profile(base_start, start, params.sample_rows)
    confirmed = 0  # questions the sample raised, answered on every row

    def seen(first: datetime, last: datetime, grp: str, key: str, type_: str | None) -> bool:
        """Whether any row of [first, last) in ``grp`` carries ``key`` (of ``type_``)."""
        nonlocal confirmed
        confirmed += 1
        sql, args = rows_in(first, last)
        path = _path(key)
        test = (
            f"json_exists(j, '{path.replace(chr(39), chr(39) * 2)}')"
            if type_ is None
            else f"json_type(j, '{path.replace(chr(39), chr(39) * 2)}') IN ("
            + ", ".join(f"'{name}'" for name, word in _TYPES.items() if word == type_)
            + ")"
        )
        found = ctx.query(
            f"SELECT 1 AS hit FROM ({sql}) WHERE grp = ? AND {test} LIMIT 1", [*args, grp]
        ).to_pylist()
        return bool(found)

    def exact_share(first: datetime, last: datetime, grp: str, key: str) -> float:
        """The share of ``grp``'s rows of [first, last) that carry ``key``, on every row."""
        nonlocal confirmed
        confirmed += 1
        sql, args = rows_in(first, last)
        path = _path(key).replace("'", "''")
        row = ctx.query(
            f"SELECT count(*) AS n, count(*) FILTER (WHERE json_exists(j, '{path}')) AS k "
            f"FROM ({sql}) WHERE grp = ?",
            [*args, grp],
        ).to_pylist()[0]
        return int(row["k"]) / int(row["n"]) if row["n"] else 1.0

    findings: list[dict[str, Any]] = []
    for (grp, key), n in sorted(w_keys.items()):
        if (
            (grp, key) not in b_keys
            and b_totals.get(grp)
            and not seen(base_start, start, grp, key, None)
        ):
            findings.append(
                {
                    "group": grp,
                    "key": key,
                    "change": "appeared",
                    "window_rows": n,
                    "baseline_rows": 0,
                }
            )
    for (grp, key), n in sorted(b_keys.items()):
        rows = w_totals.get(grp, 0)
        usual = n / b_totals[grp]
        sampled_share = w_keys.get((grp, key), 0) / rows if rows else 1.0
        if (
            rows >= params.min_rows
            and usual >= params.common_share
            and sampled_share < usual - params.max_share_drop
        ):
            share = exact_share(start, end, grp, key)
            if share < usual - params.max_share_drop:
                findings.append(
                    {
                        "group": grp,
                        "key": key,
                        "change": "disappeared",
                        "window_share": round(share, 3),
                        "baseline_share": round(usual, 3),
                    }
                )
    for grp, key, type_ in sorted(w_types - b_types):
        # Only a key that had a value before: one that was always null has not changed type.
        before = sorted(t for g, k, t in b_types if (g, k) == (grp, key))
        if before and before != ["null"] and not seen(base_start, start, grp, key, type_):
            findings.append(
                {
                    "group": grp,
                    "key": key,
                    "change": "type changed",
                    "old_type": "/".join(before) or None,
                    "new_type": type_,
                }
            )
    if params.by:
        for f in findings:
            f[params.by] = f.pop("group")
    else:
        for f in findings:
            f.pop("group")
    changes = {f["change"] for f in findings}
    status: Status = "pass"
    if changes & {"disappeared", "type changed"}:
        status = "fail"
    elif changes:
        status = "warn"
    where = f"{check.table}.{params.json_column}"
    if findings:
        described = []
        for f in findings[:10]:
            scope = f" ({f[params.by]})" if params.by else ""
            extra_text = (
                f" {f['old_type']} -> {f['new_type']}" if f["change"] == "type changed" else ""
            )
            described.append(f"{f['key']}{scope} {f['change']}{extra_text}")
        message = f"keys of {where} drifted: " + "; ".join(described)
    else:
        message = (
            f"keys of {where} in the last {params.lookback_hours:g} h match the "
            f"{params.baseline_hours:g} h before"
        )
    if not sum(b_totals.values()):
        status = "learning" if sum(w_totals.values()) else "pass"
        message = f"no rows of {check.table} in the {params.baseline_hours:g} h baseline yet"
        findings = []
    return [
        CheckResult(
            check=check.name,
            kind=check.spec.kind,
            table=check.table,
            column=params.json_column,
            status=status,
            observed=float(len(findings)),
            expected=0.0,
            threshold="key appearing warns; common key disappearing or retyped fails",
            severity=check.spec.severity or SEVERITY,
            message=message,
            evidence=evidence(ctx, findings),
            details={
                "appeared": sum(f["change"] == "appeared" for f in findings),
                "disappeared": sum(f["change"] == "disappeared" for f in findings),
                "type_changed": sum(f["change"] == "type changed" for f in findings),
                "window_rows_sampled": sum(w_totals.values()),
                "baseline_rows_sampled": sum(b_totals.values()),
                "confirmed_on_all_rows": confirmed,
            },
            window_start=start,
            window_end=end,
            unit="changes",
        )
    ]


__all__ = ["SEVERITY", "Params", "run"]
