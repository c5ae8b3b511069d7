"""The deterministic analyst: a playbook per check signature (kind, status, direction), written
with the evidence's own numbers.

It answers when no language model is configured and whenever the model fails, so it must stand
on its own: every finding names the table, the window, what was seen against what was expected,
the causes that fit THAT signature (a volume drop is not a volume spike), and what to do first.

>>> from datetime import datetime, timezone
>>> from shopstream.quality.results import CheckResult
>>> r = CheckResult(check="raw.events.freshness", kind="freshness", table="raw.events",
...     column=None, status="fail", observed=95.0, expected=None,
...     threshold="warn above 30 min, fail above 60 min", severity="high",
...     message="newest event landed 95 min ago", unit="minutes")
>>> ev = QualityEvidence(run_id="r1", checked_at=datetime(2026, 12, 2, tzinfo=timezone.utc),
...                      checks=[CheckEvidence.of(r)])
>>> report = deterministic_report(ev)
>>> report.findings[0].title
'raw.events: no new rows for 95 minutes (fail)'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from shopstream.genai.grounding import NumberPool
from shopstream.genai.quality_report import (
    CheckEvidence,
    Finding,
    QualityEvidence,
    QualityReport,
    worst_first,
)
from shopstream.quality.results import CheckResult

ANALYST = "deterministic"
_RATE_UNITS = frozenset({"rate", "ratio", "share", "fraction"})
_ALARMING = frozenset({"warn", "fail", "error"})


# -- numbers as a person reads them (every one of them is in the evidence's NumberPool) ---------


def num(value: float | None) -> str:
    """41230 -> '41,230'; 3.14159 -> '3.14'; 0.052341 -> '0.0523'."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if float(value).is_integer() or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def pct(rate: float | None) -> str:
    """A rate as a percentage: 0.0523 -> '5.23%'."""
    if rate is None or not math.isfinite(rate):
        return "n/a"
    return f"{num(rate * 100)}%"


def amount(value: float | None, unit: str) -> str:
    """A measured value with its unit, rates as percentages."""
    if unit.lower() in _RATE_UNITS or unit.lower().startswith("share"):
        return pct(value)
    if unit in ("%", "percent"):
        return f"{num(value)}%"
    if unit == "bytes" and value is not None and value >= 1024**2:
        return f"{num(value / 1024**2)} MiB ({num(value)} bytes)"
    return f"{num(value)} {unit}".strip()


def window(result: CheckResult) -> str:
    """'2026-12-02 03:00 to 04:00 UTC' (the window the check judged), or '' without one."""
    start, end = result.window_start, result.window_end
    if start is None or end is None:
        return ""
    zone = start.tzname() or ""
    if start.date() == end.date() or (end - start).total_seconds() <= 3600:
        text = f"{start:%Y-%m-%d %H:%M} to {end:%H:%M}"
    else:
        text = f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}"
    return f"{text} {zone}".strip()


def change(result: CheckResult) -> float | None:
    """Relative change of observed against expected (-0.6 is 60% below)."""
    if result.observed is None or not result.expected:
        return None
    return result.observed / result.expected - 1


# -- what surrounds a check ----------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """What the playbook reads from one alarming check."""

    ev: CheckEvidence
    r: CheckResult
    evidence: QualityEvidence

    @property
    def where(self) -> str:
        """'raw.events.session_id' or 'raw.events'."""
        return f"{self.r.table}.{self.r.column}" if self.r.column else self.r.table

    @property
    def in_window(self) -> str:
        w = window(self.r)
        return f" in {w}" if w else ""

    @property
    def source(self) -> str:
        """Which part of the pipeline feeds the table: events, cdc, staging, pipeline."""
        table = self.r.table
        if table.startswith("raw.cdc_"):
            return "cdc"
        if table in ("raw.events", "raw.dead_letter"):
            return "events"
        if table.startswith("pipeline"):
            return "pipeline"
        if table.startswith(("staging.", "mart.")):
            return "transform"
        return "other"

    @property
    def source_table(self) -> str:
        """The shop database table behind raw.cdc_<t> or staging.stg_<t>."""
        name = self.r.table.split(".", 1)[-1]
        for prefix in ("cdc_", "stg_"):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        return name.removesuffix("_history")

    def trend_line(self) -> str:
        """How this check looked in earlier runs, newest first."""
        trend = self.ev.trend
        if not trend:
            return "No earlier runs of this check are on record."
        streak = 0
        for run in trend:
            if run.get("status") in _ALARMING:
                streak += 1
            else:
                break
        last = trend[0]
        if streak == len(trend):
            return (
                f"It has been alarming in all {len(trend)} earlier runs on record "
                f"(previous: {last.get('status')}, observed {num(_float(last.get('observed')))})."
            )
        if streak:
            return (
                f"It has been alarming for {streak} earlier {_runs(streak)} in a row "
                f"(previous: {last.get('status')}, observed {num(_float(last.get('observed')))})."
            )
        return (
            f"New in this run: the previous run was {last.get('status')} "
            f"(observed {num(_float(last.get('observed')))})."
        )

    def related_alarms(self) -> list[dict[str, Any]]:
        return [r for r in self.ev.related if r.get("status") in _ALARMING]

    def related_line(self) -> str | None:
        alarms = self.related_alarms()
        if not alarms:
            return None
        named = "; ".join(f"{a.get('check')} {a.get('status')}: {a.get('message')}" for a in alarms)
        return f"Alarming beside it: {named}."

    def related_kinds(self) -> set[str]:
        """The parts of the alarming neighbours' names (``raw.events.freshness`` -> freshness):
        a check's name is ``<table>.<kind>[.<column>]`` unless configured otherwise."""
        return {part for a in self.related_alarms() for part in str(a.get("check", "")).split(".")}

    def stage_facts(self) -> str | None:
        """The platform's facts about the stage that feeds this table (the collector for events,
        the CDC reader for raw.cdc_*, the transform for staging and marts)."""
        words = {
            "events": ("collector",),
            "cdc": ("cdc", "replication"),
            "transform": ("transform",),
            "pipeline": ("cdc", "replication"),
        }.get(self.source, ())
        return self.pipeline_facts(*words) if words else None

    def pipeline_facts(self, *words: str) -> str | None:
        """Pipeline facts whose names contain one of ``words`` ('k=v, k=v'), or None."""
        facts = [
            f"{key}={_fact(value)}"
            for key, value in sorted(self.evidence.pipeline.items())
            if any(w in key.lower() for w in words)
        ]
        return ", ".join(facts) if facts else None

    def evidence_keys(self, limit: int = 3) -> str | None:
        """A few offending rows' keys or values, as the check kept them."""
        rows = self.r.evidence[:limit]
        if not rows:
            return None
        shown = []
        for row in rows:
            keys = {k: v for k, v in row.items() if k.endswith("_id") or k in ("key", "change_id")}
            shown.append(", ".join(f"{k}={_fact(v)}" for k, v in (keys or row).items()))
        return "; ".join(f"({s})" for s in shown)


def _runs(n: int) -> str:
    return "run" if n == 1 else "runs"


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _fact(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        return num(float(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_fact(v)}" for k, v in value.items()) + "}"
    return str(value)


def _detail(r: CheckResult, *names: str) -> float | None:
    for name in names:
        value = _float(r.details.get(name))
        if value is not None:
            return value
    return None


def _drop_none(items: Iterable[str | None]) -> list[str]:
    return [item for item in items if item]


# -- the playbook ---------------------------------------------------------------------------------

_IMPACT = {
    "events": "Clickstream marts (daily_funnel, sessions, product_performance, cart_abandonment) "
    "and any marketing attribution built on them are wrong for this window.",
    "cdc": "Order, payment and product figures in staging and the marts (daily_sales, "
    "customer_rfm) drift from the shop database until this is resolved.",
    "transform": "Dashboards and reports that read staging and the marts show stale or wrong "
    "figures.",
    "pipeline": "The pipeline itself is degraded: data arrives late or not at all.",
    "other": "Anything that reads this table inherits the problem.",
}


def _freshness(s: Signature) -> Finding:
    r = s.r
    minutes = r.observed
    facts = s.stage_facts()
    if s.source == "cdc":
        causes = [
            f"The CDC reader stopped or lost its replication slot: no change of the shop's "
            f"{s.source_table} table reached {r.table} for {num(minutes)} minutes.",
            "The shop itself had no writes to this table (a quiet hour, or the application is "
            "down): compare with the source database's own latest update time.",
            "The warehouse writer is blocked (long checkpoint, disk full), so changes read from "
            "PostgreSQL are not committed to raw.",
        ]
        actions = [
            "Check that the CDC reader runs (`shopstream run` or `shopstream cdc`, its log), "
            "and the slot: "
            "`SELECT slot_name, active, confirmed_flush_lsn FROM pg_replication_slots`.",
            f"Compare with the source: `SELECT max(updated_at) FROM {s.source_table}` in the "
            "shop database.",
        ]
    elif s.source == "transform":
        causes = [
            f"The scheduled transform has not rebuilt {r.table} for {num(minutes)} minutes "
            "(failed run, or the scheduler stopped).",
            "Raw itself is late (see the raw freshness checks): the transform had nothing new.",
            "A model of this table fails its dbt tests, so the build stopped before it.",
        ]
        actions = [
            "Read the last transform run's status and error (the platform's output, the "
            "transform log).",
            "Run the transform once by hand (`shopstream transform`) and watch whether it "
            "completes.",
        ]
    else:
        causes = [
            f"The collector is not receiving events: nothing landed in {r.table} for "
            f"{num(minutes)} minutes (trackers blocked, DNS or load balancer change, an expired "
            "write key answering unauthorized).",
            "The collector receives but cannot commit: the warehouse writer is stalled (disk "
            "full, lock held by another process), so requests fail or wait.",
            "A real traffic gap (site outage, night in a small market): compare with the "
            "shop's orders in the same minutes.",
        ]
        actions = [
            "Check the collector: `curl /readyz`, and its rejected-request and server-error "
            "counters on `/metrics`.",
            f"Look for recent dead letters and their reasons (raw.dead_letter) and for "
            f"rejected requests in the last {num(minutes)} minutes.",
        ]
    root = [*causes]
    if facts:
        root.append(f"Pipeline state at the time of the check: {facts}.")
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"{r.table}: no new rows for {num(minutes)} minutes ({r.status})",
        root_causes=root,
        business_impact=f"{_IMPACT[s.source]} Data is {num(minutes)} minutes old against an "
        f"SLA of {r.threshold}.",
        immediate_actions=actions,
        long_term_fixes=[
            "Alert on the ingest path itself (collector error rate, CDC lag), not only on the "
            "table's age, so a stall is seen before the SLA is missed.",
            "Run the ingest with a supervisor that restarts it, and keep its lag visible on "
            "the dashboard.",
        ],
        monitor=[
            f"{r.check} passing again (threshold: {r.threshold}).",
            "The volume check of the same table for the stalled hours (a backlog should land "
            "once it resumes).",
        ],
    )


def _period(r: CheckResult) -> str:
    """What a seasonal baseline compares: the same hour or the same day of the week."""
    if r.details.get("granularity") in ("hour", "day"):
        return str(r.details["granularity"])
    if r.window_start and r.window_end and (r.window_end - r.window_start).days >= 1:
        return "day"
    return "hour"


def _volume(s: Signature) -> Finding:
    r = s.r
    delta = change(r)
    drop = delta is not None and delta < 0
    direction = "drop" if drop else "spike"
    size = f"{pct(abs(delta))} {'below' if drop else 'above'}" if delta is not None else "off"
    seen = (
        f"{num(r.observed)} rows{s.in_window} against a seasonal baseline of "
        f"{num(r.expected)} ({size} the usual for this {_period(r)} of the week)"
    )
    low, high = _detail(r, "low"), _detail(r, "high")
    if low is not None and high is not None:
        seen += f", usual range {num(low)} to {num(high)}"
    score = _detail(r, "score", "z", "robust_z")
    if score is not None:
        seen += f", score {num(score)} ({r.threshold})"
    if drop:
        if s.source == "cdc":
            causes = [
                f"The shop wrote fewer {s.source_table} changes: checkout or admin path "
                "failing, or a real business dip (holiday, outage of the shop).",
                "The CDC reader fell behind or stopped mid-window (see the replication check).",
                f"The table left the publication or was renamed, so changes of "
                f"{s.source_table} are no longer captured.",
            ]
        else:
            causes = [
                "Tracking broke on some pages or app versions (a front-end release removed or "
                "renamed the tracker call, consent banner change, ad blockers).",
                "The collector rejected part of the traffic (a rotated write key answering "
                "unauthorized, batches too large, a changed payload refused): look at dead "
                "letters and rejected requests.",
                "A real traffic dip (site or app outage, a campaign ended): compare orders in "
                "the same window.",
            ]
        if "freshness" in s.related_kinds():
            causes.insert(0, "Ingest stalled in this window: the freshness check is alarming too.")
    else:
        if s.source == "cdc":
            causes = [
                f"A bulk UPDATE or data migration touched many {s.source_table} rows at once.",
                "A re-snapshot of the table (slot recreated, publication re-added) replayed "
                "every row as op 'r'.",
                "A real surge of orders (sale, campaign launch).",
            ]
        else:
            causes = [
                "Bot or crawler traffic: look at the share of stg_events flagged is_bot and at "
                "the user agents of the extra events.",
                "Clients re-sending batches (retry storm after timeouts): the duplicate checks "
                "would show a burst of repeated event_id.",
                "A campaign or push notification (utm_source / utm_campaign of the extra "
                "events), or a backfill replaying old events into this hour.",
            ]
        if "duplicates" in s.related_kinds():
            causes.insert(0, "Re-sent events: the duplicate check is alarming in the same run.")
    facts = s.stage_facts()
    if facts:
        causes.append(f"Pipeline state at the time of the check: {facts}.")
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"{r.table}: volume {direction}, {num(r.observed)} rows vs {num(r.expected)} "
        f"expected ({r.status})",
        root_causes=[f"Seen: {seen}.", *causes],
        business_impact=(
            f"{_IMPACT[s.source]} "
            + (
                "Missing rows understate traffic, conversion and revenue in every report of "
                "this window."
                if drop
                else "Extra rows inflate sessions, views and conversion denominators; if they "
                "are bots or repeats, rates look worse than they are."
            )
        ),
        immediate_actions=_drop_none(
            [
                f"Break the window down by source and type: `SELECT event_type, source, "
                f"count(*) FROM {r.table} ...` for {window(r) or 'the window'}, against the same "
                "hour a week earlier."
                if s.source == "events"
                else f"Break the window down by op: `SELECT op, count(*) FROM {r.table} ...` "
                f"for {window(r) or 'the window'}.",
                "Check the collector's rejected-request counters and raw.dead_letter for the "
                "same window."
                if drop
                else "Sample the extra rows: user agents, anonymous_id counts, utm_* values.",
            ]
        ),
        long_term_fixes=[
            "Alert on tracker releases: a synthetic session that sends every event type after "
            "each front-end deploy."
            if drop
            else "Filter known bots at the collector and keep event_id stable across client "
            "retries so repeats are recognised.",
        ],
        monitor=[
            f"{r.check} passing again for the next complete {_period(r)} (threshold: "
            f"{r.threshold}).",
            "The matching orders/payments counts (a real dip shows in both).",
        ],
    )


def _null_rate(s: Signature) -> Finding:
    r = s.r
    column = r.column or "the column"
    base = r.expected
    seen = (
        f"{pct(r.observed)} of rows have {column} NULL{s.in_window}"
        + (f", against a baseline of {pct(base)}" if base is not None else "")
        + f" ({r.threshold})"
    )
    nulls = _detail(r, "null_rows", "nulls")
    rows = _detail(r, "rows", "total_rows")
    if nulls is not None and rows is not None:
        seen += f": {num(nulls)} of {num(rows)} rows"
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"{s.where}: null rate {pct(r.observed)} (expected {pct(base)}, {r.status})",
        root_causes=[
            f"Seen: {seen}.",
            f"A client release stopped sending {column} (renamed field, new SDK version, or "
            "an app version that never had it).",
            f"An upstream schema change: {column} was renamed or moved (see schema drift "
            "checks), so the old field arrives empty.",
            "A new traffic source (a Segment route, a server-side integration) that does not "
            f"carry {column}.",
        ],
        business_impact=f"{_IMPACT[s.source]} Rows without {column} drop out of joins and "
        "group-bys on it (sessions, attribution, per-user metrics).",
        immediate_actions=_drop_none(
            [
                f"Group the NULL rows by source, device_type and event_type to see which "
                f"client sends them: `SELECT source, device_type, count(*) FROM {r.table} "
                f"WHERE {column} IS NULL ...`.",
                f"Offending rows: {s.evidence_keys()}." if s.evidence_keys() else None,
            ]
        ),
        long_term_fixes=[
            f"Make {column} required in the tracker's contract and reject events without it "
            "at the collector with a reason, instead of landing them half-empty.",
        ],
        monitor=[f"{r.check} back to its baseline.", "Schema drift checks of the same table."],
    )


def _duplicates(s: Signature) -> Finding:
    r = s.r
    dupes = _detail(r, "duplicate_rows", "duplicates", "duplicate_keys")
    rows = _detail(r, "rows", "total_rows")
    seen = f"duplicate rate {amount(r.observed, r.unit or 'rate')}{s.in_window}"
    if dupes is not None:
        seen += f", {num(dupes)} duplicated" + (f" of {num(rows)} rows" if rows else " rows")
    seen += f" ({r.threshold})"
    key = r.column or "the key"
    if r.table.startswith("staging."):
        causes = [
            "Staging's deduplication did not run or broke (an incremental model's unique_key "
            "or merge changed): staging must be exactly-once.",
            "Two versions of the same key with different values both kept (late-arriving "
            "corrections).",
        ]
    elif s.source == "cdc":
        causes = [
            "The CDC reader restarted and re-read from the last confirmed LSN: at-least-once "
            "delivery repeats the changes after it (staging removes them by change_id).",
            "A re-snapshot replayed the table.",
        ]
    else:
        causes = [
            "Clients retried batches after slow or failed responses (at-least-once: the same "
            f"{key} sent again); a burst points at collector latency or timeouts in that window.",
            "A replay or backfill sent events already landed.",
            "A client bug reusing one id for different events (check whether the duplicated "
            "rows differ in event_type or event_ts).",
        ]
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"{r.table}: duplicate {key} burst ({amount(r.observed, r.unit or 'rate')}, "
        f"{r.status})",
        root_causes=[f"Seen: {seen}.", *causes],
        business_impact=(
            "Raw is at-least-once, so staging removes repeats: counts are right there if "
            "deduplication holds; anything reading raw directly double counts."
            if r.table.startswith("raw.")
            else "Staging is supposed to be exactly-once: every mart built on it double counts."
        ),
        immediate_actions=_drop_none(
            [
                f"List the repeated keys: `SELECT {key}, count(*) FROM {r.table} GROUP BY 1 "
                "HAVING count(*) > 1 ORDER BY 2 DESC LIMIT 20`.",
                f"Offending keys: {s.evidence_keys()}." if s.evidence_keys() else None,
                "Verify staging has each of them once.",
            ]
        ),
        long_term_fixes=[
            "Keep client retries idempotent (stable ids) and watch collector latency, the "
            "usual trigger of retry storms."
        ],
        monitor=[
            f"{r.check} passing again (threshold: {r.threshold}).",
            "Collector latency and timeouts in the window.",
        ],
    )


def _schema_drift(s: Signature) -> Finding:
    r = s.r
    # The kinds count the changes in details and list them as evidence rows.
    counts = [
        f"{label} {num(_float(r.details.get(key)))}"
        for label, key in (
            ("added", "added"),
            ("appeared", "appeared"),
            ("removed", "removed"),
            ("disappeared", "disappeared"),
            ("type changed", "type_changed"),
            ("undeclared", "undeclared_keys"),
        )
        if _float(r.details.get(key))
    ]
    what = r.message + (f" ({', '.join(counts)})" if counts else "")
    if r.evidence:
        what += "; changes: " + "; ".join(
            ", ".join(f"{k}={_fact(v)}" for k, v in row.items()) for row in r.evidence[:5]
        )
    if s.source == "cdc" or "source_schemas" in r.table:
        causes = [
            f"A migration altered the shop's {s.source_table} table (ALTER TABLE ... ADD/DROP/"
            "ALTER COLUMN); CDC recorded a new schema version.",
            "A deploy of the shop application ran its migrations ahead of the data team's "
            "knowledge.",
        ]
        actions = [
            "Read the new schema record: `SELECT version, columns, recorded_at FROM "
            f"raw.source_schemas WHERE source_table = '{s.source_table}' ORDER BY version DESC`.",
            "Rebuild staging and check that the typed columns and the marts still compile.",
        ]
    else:
        causes = [
            "A tracker release added, removed or retyped properties in the JSON payload.",
            "A new client (app version, Segment source) sends a different shape.",
        ]
        actions = [
            f"Find who sends the new shape: group {r.table} by source and event_type for the "
            "new keys.",
            "Update the event contract (events/) and staging's typing if the change is wanted.",
        ]
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"{r.table}: schema changed ({r.status})",
        root_causes=[f"Seen: {what}.", *causes],
        business_impact="A removed or retyped column breaks staging models and marts that use "
        "it; an added one is ignored until staging types it.",
        immediate_actions=actions,
        long_term_fixes=[
            "Review schema changes before deploy (a migration checklist that names the data "
            "consumers), and version the event contract."
        ],
        monitor=["The next transform run's status.", f"{r.check} (it clears once accepted)."],
    )


def _distribution(s: Signature) -> Finding:
    r = s.r
    target = r.column or str(r.details.get("expression") or "the column")
    psi = r.observed
    seen = f"PSI {num(psi)} on {target}{s.in_window} ({r.threshold})"
    # The kind's evidence rows: the values (or bins) that moved most, with their shares.
    moved = [
        f"{_fact(row.get(target, row.get('bin', row.get('value'))))} {pct(_float(row['share']))}"
        f" (was {pct(_float(row['baseline_share']))})"
        for row in r.evidence[:3]
        if "share" in row and "baseline_share" in row
    ]
    if moved:
        seen += "; most moved: " + "; ".join(moved)
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"{s.where}: distribution shifted (PSI {num(psi)}, {r.status})",
        root_causes=[
            f"Seen: {seen}.",
            f"A client change mislabels {target} (every event tagged with one value, a default "
            "that leaked).",
            "A real mix shift: a campaign on one device or category, a price change, a bulk "
            "product update.",
            "Bot traffic concentrated on a few values.",
        ],
        business_impact=f"{_IMPACT[s.source]} Breakdowns by {target} (device, category, "
        "method) mislead even when totals look right.",
        immediate_actions=[
            f"Compare the value counts of {target} for {window(r) or 'the window'} with the "
            "same day a week earlier, and find the value that moved most.",
            "Check whether a release or a campaign started at the start of the window.",
        ],
        long_term_fixes=[
            f"Pin {target}'s accepted values in the contract and reject unknown ones with a "
            "reason at intake."
        ],
        monitor=[f"{r.check} on the next complete day."],
    )


def _relationships(s: Signature) -> Finding:
    r = s.r
    parent = str(r.details.get("to") or "its parent table")
    orphans = _detail(r, "orphans", "orphan_rows", "missing")
    seen = f"{amount(r.observed, r.unit)} of {s.where} point to no row of {parent}{s.in_window}"
    if orphans is not None:
        seen += f" ({num(orphans)} rows)"
    keys = s.evidence_keys()
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"{s.where}: orphaned rows without {parent} ({r.status})",
        root_causes=[
            f"Seen: {seen}, {r.threshold}.",
            f"Late-arriving parents: the child rows were captured before {parent}'s (CDC of "
            "two tables is ordered by commit, but a lagging transform can split them).",
            f"Parents deleted in the source while children remain ({parent} has a delete "
            "without cascade).",
            "Ids from two worlds mixed: generated history ids (UH/PH/OH prefixes) next to the "
            "live shop's, or a test fixture left in production.",
        ],
        business_impact="Orders, items or events that join to nothing vanish from marts "
        "(inner joins) or show as unknown products/users: revenue by category and customer "
        "metrics are off.",
        immediate_actions=_drop_none(
            [
                f"Offending keys: {keys}." if keys else None,
                f"Look each up in {parent} and in its raw CDC table (deleted? arriving later?).",
            ]
        ),
        long_term_fixes=[
            "Keep foreign keys enforced in the shop database, and run relationship checks on "
            "staging after each transform."
        ],
        monitor=[f"{r.check}: if the count falls on the next run, parents were only late."],
    )


def _rule(s: Signature) -> Finding:
    r = s.r
    name = f"{r.check} {r.message}".lower()
    rows = r.observed
    keys = s.evidence_keys()
    seen = f"{num(rows)} offending rows in {r.table}{s.in_window} ({r.threshold})"
    if "total" in name and "payment" not in name:
        title = f"{r.table}: order totals differ from the sum of their items"
        causes = [
            "Order total and items written in different transactions, one of them failing or "
            "retried (half-written order).",
            "Discounts, shipping or tax added to the total but not represented as items.",
            "Decimal rounding done in float somewhere upstream.",
        ]
    elif "transition" in name or "status" in name:
        title = f"{r.table}: invalid order status transitions"
        causes = [
            "An application path skips a step (PAID straight to DELIVERED, or CANCELLED after "
            "SHIPPING); the valid path is PENDING -> PAID -> PREPARING -> SHIPPING -> "
            "DELIVERED.",
            "Manual fixes in the database by support staff.",
            "Out-of-order capture of two updates of one order (check their lsn order).",
        ]
    elif "price" in name or "negative" in name:
        title = f"{r.table}: negative or zero prices"
        causes = [
            "A bulk price import with a sign or unit error.",
            "Refunds or discounts written as negative prices instead of their own records.",
        ]
    elif "payment" in name:
        title = f"{r.table}: payments above the order total"
        causes = [
            "Double charges (a retried payment captured twice).",
            "Partial refunds or order edits that lowered the total after payment.",
        ]
    else:
        title = f"{r.table}: business rule {r.check} broken"
        causes = [f"The rule's own description: {r.threshold or r.message}."]
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"{title} ({num(rows)} rows, {r.status})",
        root_causes=[f"Seen: {seen}.", *causes],
        business_impact="Revenue, refunds and order counts in daily_sales and finance "
        "reports are wrong for the affected orders; customers may have been charged wrongly.",
        immediate_actions=_drop_none(
            [
                f"Offending rows: {keys}." if keys else None,
                "Follow each offending order through its CDC history "
                "(staging.stg_orders_history) to find the change that broke the rule.",
                "Tell the shop's application team with the order ids: this is a bug in the "
                "source, not in the pipeline.",
            ]
        ),
        long_term_fixes=[
            "Enforce the rule in the source database (constraint or trigger) or in the "
            "application's one write path."
        ],
        monitor=[f"{r.check}: the count of offending rows should not grow."],
    )


def _replication(s: Signature) -> Finding:
    r = s.r
    facts = s.pipeline_facts("cdc", "replication", "slot", "wal", "lag")
    seen = f"{amount(r.observed, r.unit)} ({r.threshold})"
    return Finding(
        check=r.check,
        severity=r.severity,
        title=(
            f"CDC replication behind: {amount(r.observed, r.unit)} ({r.status})"
            if r.observed is not None
            else f"CDC replication: {r.message} ({r.status})"
        ),
        root_causes=_drop_none(
            [
                f"Seen: {seen}. {r.message}",
                f"Pipeline state: {facts}." if facts else None,
                "The CDC reader is stopped or crashed and the slot holds WAL for it.",
                "The reader runs but the warehouse writer is slow or blocked, so it cannot "
                "confirm LSNs (acknowledges only after raw is durable).",
                "A long-running or huge transaction in the shop database (bulk update) that the "
                "reader must stream whole.",
            ]
        ),
        business_impact="Changes reach raw late; worse, the shop's PostgreSQL keeps WAL for "
        "the slot: unchecked, retained WAL fills its disk and stops the shop itself.",
        immediate_actions=[
            "Check the reader (its process and log), then the slot: "
            "`SELECT slot_name, active, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), "
            "restart_lsn)) FROM pg_replication_slots`.",
            "If the reader is gone for good and the disk is at risk, drop the slot "
            "deliberately and re-snapshot later (data in between must be re-read).",
        ],
        long_term_fixes=[
            "Set max_slot_wal_keep_size on the source so a dead reader cannot fill the disk, "
            "and alert on retained WAL."
        ],
        monitor=[f"{r.check} falling run over run.", "Disk free on the shop's database host."],
    )


def _dead_letters(s: Signature) -> Finding:
    r = s.r
    reasons = sorted(s.evidence.dead_letter_reasons, key=lambda d: -(_float(d.get("count")) or 0))[
        :5
    ]
    total = sum(_float(d.get("count")) or 0 for d in s.evidence.dead_letter_reasons)
    listed = "; ".join(
        f"{d.get('reason')} from {d.get('source')}: {num(_float(d.get('count')))}" for d in reasons
    )
    seen = f"dead letters at {amount(r.observed, r.unit or 'rate')}{s.in_window}"
    if r.expected is not None:
        seen += f", against {amount(r.expected, r.unit or 'rate')} usually"
    seen += f" ({r.threshold})"
    causes = [f"Seen: {seen}."]
    if listed:
        causes.append(f"Reasons in the window ({num(total)} dead letters): {listed}.")
    top = str(reasons[0].get("reason", "")).lower() if reasons else ""
    if any(word in top for word in ("schema", "valid", "type", "missing", "field", "parse")):
        causes.append(
            "The top reason is a contract violation: a client release sends a payload the "
            "event contract rejects."
        )
    elif any(word in top for word in ("json", "decode", "malformed", "size", "large")):
        causes.append(
            "The top reason is unreadable payloads: a broken client or a proxy truncating bodies."
        )
    else:
        causes.append(
            "A new or changed client whose events cannot be parsed or loaded, or a load "
            "failure downstream of the collector."
        )
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"Dead letters surging: {amount(r.observed, r.unit or 'rate')} ({r.status})",
        root_causes=causes,
        business_impact="Every dead letter is an event or change missing from raw: "
        "the marts undercount until they are fixed and replayed.",
        immediate_actions=[
            "Read a few: `SELECT reason, source, payload FROM raw.dead_letter ORDER BY "
            "received_at DESC LIMIT 20`, and find the client (context: user agent, source).",
            "Fix or roll back that client; then replay the dead letters once the contract "
            "accepts them.",
        ],
        long_term_fixes=[
            "Validate tracker payloads in the client's CI against the published JSON Schema."
        ],
        monitor=[
            f"{r.check} passing again (threshold: {r.threshold}).",
            "The volume check of raw.events.",
        ],
    )


def _tracking_coverage(s: Signature) -> Finding:
    r = s.r
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"Tracking coverage {amount(r.observed, r.unit or 'rate')} of orders ({r.status})",
        root_causes=[
            f"Seen: {amount(r.observed, r.unit or 'rate')} of orders have a matching purchase "
            f"event{s.in_window} ({r.threshold}). {r.message}",
            "The purchase event is not fired on one platform or app version (compare coverage "
            "by device in mart.tracking_coverage).",
            "Orders created outside the tracked front end (admin, phone, API partners).",
            "Ad blockers or consent refusals on the confirmation page.",
        ],
        business_impact="Marketing attribution and funnel conversion understate purchases; "
        "campaign ROI is computed on the tracked share only.",
        immediate_actions=[
            "Break coverage down by device and day in mart.tracking_coverage and find where "
            "it fell.",
            "Place a test order on each platform and watch for its purchase event.",
        ],
        long_term_fixes=[
            "Send the purchase event server-side from the order service, with the order_id, "
            "so coverage does not depend on the browser."
        ],
        monitor=[f"{r.check} per day."],
    )


def _error(s: Signature) -> Finding:
    r = s.r
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"{r.check} could not run",
        root_causes=[
            f"The check errored: {r.message}",
            "A missing table or column (renamed upstream, or the transform has not built it "
            "yet), a bad option in the checks YAML, or a query the warehouse refused.",
        ],
        business_impact=f"{r.table} is not watched by this check until it runs again: an "
        "anomaly there would go unnoticed.",
        immediate_actions=[
            "Read the error above: it names the option, table or column to fix.",
            "Fix the checks YAML (quality.checks_file) or build the missing table, then "
            "`shopstream quality run --select " + r.check + "`.",
        ],
        long_term_fixes=[
            "Validate the checks YAML in CI (`shopstream quality run` on a test warehouse)."
        ],
        monitor=[f"{r.check} returning pass/warn/fail instead of error."],
    )


def _generic(s: Signature) -> Finding:
    r = s.r
    return Finding(
        check=r.check,
        severity=r.severity,
        title=f"{s.where}: {r.kind} {r.status}",
        root_causes=[
            f"Seen: {amount(r.observed, r.unit)}"
            + (f" against {amount(r.expected, r.unit)} expected" if r.expected is not None else "")
            + f"{s.in_window} ({r.threshold}). {r.message}"
        ],
        business_impact=_IMPACT[s.source],
        immediate_actions=[f"Inspect {r.table}{s.in_window}."],
        long_term_fixes=[],
        monitor=[f"{r.check}."],
    )


PLAYBOOK: dict[str, Callable[[Signature], Finding]] = {
    "freshness": _freshness,
    "volume": _volume,
    "null_rate": _null_rate,
    "duplicates": _duplicates,
    "accepted_values": _distribution,
    "distribution": _distribution,
    "schema_drift": _schema_drift,
    "relationships": _relationships,
    "rule": _rule,
    "replication": _replication,
    "dead_letters": _dead_letters,
    "tracking_coverage": _tracking_coverage,
}


def finding(ev: CheckEvidence, evidence: QualityEvidence) -> Finding:
    """The playbook's finding for one alarming check, with its trend and neighbours."""
    s = Signature(ev, ev.check_result(), evidence)
    play = _error if s.r.status == "error" else PLAYBOOK.get(s.r.kind, _generic)
    found = play(s)
    context = _drop_none([s.trend_line(), s.related_line()])
    found.root_causes = [*found.root_causes, *context]
    return found


def summary(evidence: QualityEvidence, findings: list[Finding]) -> str:
    if not findings:
        return f"No check warned, failed or errored in run {evidence.run_id}."
    counts = {status: 0 for status in ("fail", "error", "warn")}
    for ev in evidence.checks:
        status = str(ev.result.get("status"))
        if status in counts:
            counts[status] += 1
    said = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    worst = findings[0]
    return f"{said} in run {evidence.run_id}. Worst: {worst.title}."


def deterministic_report(
    evidence: QualityEvidence, fallback_reason: str | None = None
) -> QualityReport:
    """The report written from the check signatures alone."""
    findings = [finding(ev, evidence) for ev in worst_first(evidence.checks)]
    return QualityReport(
        run_id=evidence.run_id,
        analyst=ANALYST,
        summary=summary(evidence, findings),
        findings=findings,
        fallback_reason=fallback_reason,
    )


def evidence_pool(evidence: QualityEvidence) -> NumberPool:
    """Every number an analyst may state about this evidence: the numbers in it, and what the
    playbook derives from them (changes, ratios, unit conversions, counts of runs and rows)."""
    pool = NumberPool.of_evidence(evidence.model_dump(mode="json"))
    pool.add(len(evidence.checks))
    for status in ("fail", "error", "warn"):
        pool.add(sum(1 for c in evidence.checks if c.result.get("status") == status))
    pool.add(sum(_float(d.get("count")) or 0 for d in evidence.dead_letter_reasons))
    for ev in evidence.checks:
        r = ev.check_result()
        pool.add_all([len(ev.trend), len(ev.related), len(r.evidence)])
        streak = 0
        for run in ev.trend:
            if run.get("status") not in _ALARMING:
                break
            streak += 1
        pool.add(streak)
        o, e = r.observed, r.expected
        values = [v for v in (o, e) if v is not None]
        if o is not None and e is not None:
            pool.add(o - e)
            if e:
                pool.add_all([o / e, o / e - 1], rate=True)
            if o:
                pool.add(e / o)
        for v in values:
            # minutes <-> hours <-> seconds; bytes -> KiB/MiB/GiB and kB/MB/GB.
            # (Conversions are quantities, never rates: 95 min is 0.026 h, not "2.6%".)
            pool.add_all([v / 60, v * 60, v / 3600], rate=False)
            pool.add_all(
                [v / 1024, v / 1024**2, v / 1024**3, v / 1e3, v / 1e6, v / 1e9], rate=False
            )
    return pool


__all__ = [
    "ANALYST",
    "PLAYBOOK",
    "Signature",
    "amount",
    "deterministic_report",
    "evidence_pool",
    "finding",
    "num",
    "pct",
    "summary",
    "window",
]
