"""A generated shop with weeks of history, built by the real transform, for judging the quality
checks end to end (tests/integration/test_quality_acceptance.py and bench/quality.py).

- :func:`build_world`: raw history from the history generator
  (``shopstream.generators.history.write_history``) in a fresh DuckDB file made with the
  warehouse's own DDL, then the real transform (``shopstream transform``'s
  :func:`~shopstream.transform.runs.transform_warehouse`, full refresh).
- :func:`open_for_checks` / :func:`check_context`: the warehouse opened as the platform opens
  it (``DuckDBWarehouse`` with the default memory limit) and a :class:`CheckContext` reading
  through its read-only ``query``, "now" pinned.
- :data:`INJECTIONS`: each anomaly of ``shopstream.generators.anomalies``, where it is put and
  which check must catch it (kind and table; words of its name for business rules), and
  :func:`detect_group`: a copy of a world with anomalies injected into raw (brought up to date
  by an incremental transform when a catching check reads staging or marts), judged by the
  default suite.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from shopstream.config import Settings
from shopstream.generators import anomalies
from shopstream.generators.history import HistoryPlan, write_history
from shopstream.quality.checks import CheckContext, kind
from shopstream.quality.engine import run_checks
from shopstream.quality.results import CheckResult
from shopstream.quality.spec import PlannedCheck, QualityConfig
from shopstream.transform.runner import TransformRequest, TransformResult
from shopstream.transform.runs import transform_warehouse
from shopstream.transform.workspace import SALT_FILE
from shopstream.warehouse.duckdb.database import DuckDBWarehouse

WAREHOUSE_FILE = "shopstream.duckdb"
HOUR = timedelta(hours=1)
#: The shop's business time zone in these worlds: not UTC, so hour-of-week and day-of-week
#: baselines must count in it.
TIMEZONE = "Asia/Seoul"
#: History ends at local midnight between Sunday and Monday: a run just after it judges the
#: last hour of a Sunday and the whole Sunday.
END = datetime(2026, 11, 30, tzinfo=ZoneInfo(TIMEZONE)).astimezone(UTC)
#: The kinds that must raise no warn or fail at any hour of clean history (the issue's
#: "no false alarms" requirement names them).
NO_FALSE_ALARM_KINDS = ("volume", "distribution")
ALARM = ("warn", "fail")


# -- the world ---------------------------------------------------------------------------------


def history_plan(
    *,
    days: int,
    events: int,
    orders: int,
    seed: int = 9,
    timezone: str = TIMEZONE,
    end: datetime = END,
) -> HistoryPlan:
    """``events`` events and ``orders`` orders (on average) over ``days`` days up to ``end``,
    with the generator's own patterns (night trough, evening peak, weekends, noise, growth)."""
    return HistoryPlan(
        days=days,
        end=end,
        events_per_day=max(1, events // days),
        orders_per_day=max(1, orders // days),
        seed=seed,
        timezone=timezone,
    )


@dataclass(frozen=True)
class World:
    """A data directory holding a warehouse of generated history, staging and marts built."""

    data_dir: Path
    #: The history ends here (exclusive).
    end: datetime
    timezone: str
    days: int
    #: What the generator wrote (``rows`` per raw table, ...).
    summary: dict[str, Any] = field(default_factory=dict)
    #: Seconds taken by each step of the build (generate, transform).
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def warehouse(self) -> Path:
        return self.data_dir / WAREHOUSE_FILE

    @property
    def now(self) -> datetime:
        """A clean run's "now": five minutes into the hour after the history's end, so the last
        complete hour and day are the history's last ones and nothing is late yet."""
        return self.end + timedelta(minutes=5)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["data_dir"] = str(self.data_dir)
        data["end"] = self.end.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], data_dir: Path) -> World:
        return cls(
            data_dir=data_dir,
            end=datetime.fromisoformat(data["end"]),
            timezone=data["timezone"],
            days=int(data["days"]),
            summary=dict(data.get("summary", {})),
            seconds=dict(data.get("seconds", {})),
        )


def orders_in(world: World) -> int:
    """Orders the history placed (their first change rows)."""
    con = duckdb.connect(str(world.warehouse), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM raw.cdc_orders WHERE op = 'c'").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def settings_for(data_dir: Path, timezone: str, memory_limit_mb: int | None = None) -> Settings:
    """The platform's defaults, on ``data_dir``, in the shop's ``timezone`` (and DuckDB's
    memory limit when given: else the platform's default)."""
    settings = Settings(data_dir=data_dir, timezone=timezone)
    if memory_limit_mb is not None:
        sink = settings.sink.model_copy(update={"memory_limit_mb": memory_limit_mb})
        settings = settings.model_copy(update={"sink": sink})
    return settings


def create_warehouse(path: Path) -> None:
    """An empty warehouse with the platform's layers and raw tables (its own DDL)."""
    warehouse = DuckDBWarehouse(path)
    try:
        warehouse.ensure_layers()
    finally:
        warehouse.close()


def transform(
    data_dir: Path, timezone: str, *, full_refresh: bool, memory_limit_mb: int | None = None
) -> TransformResult:
    """The real transform (what ``shopstream transform`` runs) on ``data_dir``'s warehouse."""
    return transform_warehouse(
        settings_for(data_dir, timezone, memory_limit_mb),
        TransformRequest(full_refresh=full_refresh),
    )


def build_world(
    data_dir: Path,
    plan: HistoryPlan,
    *,
    on_step: Callable[[str], None] = lambda _: None,
    memory_limit_mb: int | None = None,
) -> World:
    """History per ``plan`` into a fresh warehouse in ``data_dir``, then the real transform;
    AssertionError naming what failed when the transform of clean history fails."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / WAREHOUSE_FILE
    create_warehouse(path)
    seconds: dict[str, float] = {}
    on_step("generating history")
    began = time.perf_counter()
    con = duckdb.connect(str(path))
    try:
        summary = write_history(con, plan, progress=lambda table: on_step(f"generating {table}"))
        con.execute("CHECKPOINT")
    finally:
        con.close()
    seconds["generate"] = time.perf_counter() - began
    if summary.skipped:
        raise AssertionError(f"the history generator wrote nothing: {summary.skipped}")
    on_step("transforming (full refresh)")
    began = time.perf_counter()
    result = transform(data_dir, plan.timezone, full_refresh=True, memory_limit_mb=memory_limit_mb)
    seconds["transform"] = time.perf_counter() - began
    if not result.success:
        raise AssertionError(
            "the transform of the clean history failed:\n" + "\n".join(result.failures())
        )
    return World(data_dir, plan.end, plan.timezone, plan.days, summary.to_dict(), seconds)


def copy_world(world: World, data_dir: Path) -> World:
    """A copy of ``world``'s warehouse (and e-mail salt) in ``data_dir``: injections go there."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(world.warehouse, data_dir / WAREHOUSE_FILE)
    (data_dir / WAREHOUSE_FILE).chmod(0o600)  # it holds personal data, like the original
    salt = world.data_dir / SALT_FILE
    if salt.exists():
        shutil.copyfile(salt, data_dir / SALT_FILE)
        (data_dir / SALT_FILE).chmod(0o600)
    return World(data_dir, world.end, world.timezone, world.days, world.summary, {})


# -- checks on it ------------------------------------------------------------------------------


def open_for_checks(path: Path) -> DuckDBWarehouse:
    """The warehouse as the platform opens it (its default memory limit)."""
    return DuckDBWarehouse(path, memory_limit_mb=Settings().sink.memory_limit_mb)


def check_context(warehouse: DuckDBWarehouse, now: datetime, timezone: str) -> CheckContext:
    return CheckContext(
        query=warehouse.query,
        now=now,
        timezone=ZoneInfo(timezone),
        evidence_rows=Settings().quality.evidence_rows,
    )


def run_config(
    config: QualityConfig,
    warehouse: DuckDBWarehouse,
    now: datetime,
    timezone: str,
    select: Sequence[str] = (),
    on_check: Callable[[PlannedCheck, list[CheckResult]], None] | None = None,
) -> list[CheckResult]:
    ctx = check_context(warehouse, now, timezone)
    return run_checks(config, ctx, select=select, on_check=on_check).results


def names_of_kinds(config: QualityConfig, kinds: Iterable[str]) -> list[str]:
    """The names of the configured checks of these kinds (for ``select``)."""
    wanted = set(kinds)
    return [c.name for c in config.checks() if c.spec.kind in wanted]


def describe(result: CheckResult) -> str:
    """One line: check, status, observed against expected, its message."""
    column = f".{result.column}" if result.column else ""
    return (
        f"{result.check} [{result.kind} on {result.table}{column}] {result.status}: "
        f"observed {result.observed} {result.unit}, expected {result.expected} "
        f"({result.threshold}): {result.message}"
    )


def last_week_hours(world: World) -> list[datetime]:
    """The runs at five past every hour of the history's last week (168, oldest first)."""
    return [world.now - k * HOUR for k in range(167, -1, -1)]


def last_week_days(world: World) -> list[datetime]:
    """The runs at five past each local midnight of the last week (7, oldest first): a run at
    any hour of a day judges the same complete day as the one at its midnight."""
    tz = ZoneInfo(world.timezone)
    last = world.end.astimezone(tz).date()
    days = [last - timedelta(days=k) for k in range(6, -1, -1)]
    midnights = [datetime.combine(day, datetime.min.time(), tz) for day in days]
    return [m.astimezone(UTC) + timedelta(minutes=5) for m in midnights]


def judges_hours(check: PlannedCheck) -> bool:
    """Whether the check judges the last complete hour (else the last complete day)."""
    params = kind(check.spec.kind).params.model_validate(check.spec.options)
    return "hour" in (getattr(params, "granularity", None), getattr(params, "window", None))


# -- anomalies and the checks that must catch them -------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """A result of the right check: its kind, on one of ``tables`` (any when empty), of
    ``column`` (when given: the result's column or a word of the check's name), with one of
    ``words`` in its name (when given)."""

    kind: str
    tables: tuple[str, ...] = ()
    column: str | None = None
    words: tuple[str, ...] = ()

    def matches(self, result: CheckResult) -> bool:
        name = result.check.lower()
        return (
            result.kind == self.kind
            and (not self.tables or result.table in self.tables)
            and (self.column is None or result.column == self.column or self.column in name)
            and (not self.words or any(word in name for word in self.words))
        )

    def __str__(self) -> str:
        where = f" on {' or '.join(self.tables)}" if self.tables else ""
        column = f" of {self.column}" if self.column else ""
        words = f" named with {' or '.join(self.words)}" if self.words else ""
        return f"{self.kind}{where}{column}{words}"


#: inject(con, world) -> what was injected.
Injector = Callable[[duckdb.DuckDBPyConnection, World], anomalies.Injected]


@dataclass(frozen=True)
class Injection:
    anomaly: str
    inject: Injector
    #: Every one of these must warn or fail.
    expects: tuple[Expect, ...]
    #: The run that must catch it (default: the world's "now", just after the history).
    judged_at: Callable[[World], datetime] = lambda world: world.now
    #: The catching check's evidence must name one of the keys the injector touched (for
    #: anomalies that share a copy: it tells whose anomaly the check found).
    names_keys: bool = False

    def reads_built_layers(self) -> bool:
        """Whether a catching check reads staging or marts (the transform must run first)."""
        return any(
            table.split(".")[0] in ("staging", "mart")
            for expect in self.expects
            for table in expect.tables
        )


def _last_hour(world: World) -> datetime:
    return world.end - HOUR


EVENTS = ("raw.events",)
# Raw events of the world copy are changed; staging is not rebuilt for them, so only checks on
# raw can see them (the same anomaly reaches stg_events at the next transform).
INJECTIONS: tuple[Injection, ...] = (
    Injection(
        "volume_drop",
        lambda con, w: anomalies.inject_volume_drop(con, at=_last_hour(w)),
        (Expect("volume", EVENTS),),
    ),
    Injection(
        "volume_spike",
        lambda con, w: anomalies.inject_volume_spike(con, at=_last_hour(w)),
        (Expect("volume", EVENTS),),
    ),
    Injection(
        "null_spike",
        lambda con, w: anomalies.inject_null_spike(con, at=_last_hour(w), column="session_id"),
        (Expect("null_rate", EVENTS, column="session_id"),),
    ),
    Injection(
        "duplicate_burst",
        lambda con, w: anomalies.inject_duplicate_burst(con, at=_last_hour(w)),
        (Expect("duplicates", EVENTS),),
    ),
    Injection(
        "freshness_stall",
        # Nothing landed in the last two hours: events are 2 h 05 min late at "now".
        lambda con, w: anomalies.inject_freshness_stall(con, at=w.end - 2 * HOUR),
        (Expect("freshness", EVENTS),),
    ),
    Injection(
        "schema_drift",
        lambda con, w: anomalies.inject_schema_drift(con, at=_last_hour(w)),
        # Both records of a schema: the CDC reader's (raw.source_schemas) and raw JSON.
        (
            Expect("schema_drift", ("raw.source_schemas", "raw.cdc_orders")),
            Expect("schema_drift", EVENTS),
        ),
        # The scheduled run half an hour after the release: a new JSON key is news while it
        # is newer than the check's lookback (1 h), then it is the norm.
        judged_at=lambda w: _last_hour(w) + timedelta(minutes=30),
    ),
    Injection(
        "distribution_shift",
        # The whole last (local) day: 80% of events report web_desktop.
        lambda con, w: anomalies.inject_distribution_shift(
            con, at=w.end - 12 * HOUR, column="device_type", timezone=w.timezone
        ),
        (Expect("distribution", EVENTS, column="device_type"),),
    ),
    Injection(
        "orphan_order_items",
        lambda con, w: anomalies.inject_orphan_order_items(con, at=_last_hour(w)),
        (Expect("relationships", ("staging.stg_order_items",), column="order_id"),),
        names_keys=True,
    ),
    Injection(
        "broken_order_totals",
        lambda con, w: anomalies.inject_broken_order_totals(con, at=_last_hour(w)),
        (Expect("rule", ("staging.stg_orders",), words=("total_matches_items",)),),
        names_keys=True,
    ),
    Injection(
        "invalid_status_transition",
        # Later than the broken totals: its new versions carry theirs forward (an injector
        # copies the latest version before its ``at``), so neither undoes the other.
        lambda con, w: anomalies.inject_invalid_status_transition(
            con, at=_last_hour(w) + timedelta(minutes=20)
        ),
        (
            Expect(
                "rule",
                ("staging.stg_orders", "staging.stg_orders_history"),
                words=("status_transition",),
            ),
        ),
        names_keys=True,
    ),
    Injection(
        "dead_letter_surge",
        lambda con, w: anomalies.inject_dead_letter_surge(con, at=_last_hour(w)),
        (Expect("dead_letters", ("raw.dead_letter",)),),
    ),
)


@dataclass
class Detection:
    """One anomaly injected and what the default suite said about it."""

    injection: Injection
    injected: anomalies.Injected | None = None
    results: list[CheckResult] = field(default_factory=list)
    transform: TransformResult | None = None
    error: str | None = None

    def matching(self, expect: Expect) -> list[CheckResult]:
        return [r for r in self.results if expect.matches(r)]

    @property
    def alarmed(self) -> bool:
        """Every expected check warned or failed."""
        return self.error is None and all(
            any(r.status in ALARM for r in self.matching(e)) for e in self.injection.expects
        )

    @property
    def named(self) -> bool:
        """The alarming right check's evidence names a key the injector touched (always true
        for injections that do not ask for it)."""
        if not self.injection.names_keys:
            return True
        keys = set(self.injected.keys) if self.injected is not None else set()
        return any(
            r.status in ALARM and keys & _values(r.evidence)
            for e in self.injection.expects
            for r in self.matching(e)
        )

    @property
    def caught(self) -> bool:
        return self.alarmed and self.named

    @property
    def best(self) -> CheckResult | None:
        """The right check's most alarming result (fail, warn, then anything else)."""
        candidates = [r for e in self.injection.expects for r in self.matching(e)]
        order = {"fail": 0, "warn": 1, "error": 2, "learning": 3, "pass": 4}
        return min(candidates, key=lambda r: order.get(r.status, 5), default=None)

    def explain(self) -> str:
        """Why it counts as missed (or caught): the right checks' results, the others' alarms."""
        lines = []
        if self.error:
            lines.append(f"error: {self.error}")
        if self.injected is not None:
            i = self.injected
            lines.append(
                f"injected: {i.rows} rows of raw.{i.table} in [{i.window_start}, "
                f"{i.window_end}), {i.details}"
            )
        if self.alarmed and not self.named and self.injected is not None:
            lines.append(
                f"the right check alarmed but its evidence names none of the injected keys "
                f"{self.injected.keys[:5]}"
            )
        for expect in self.injection.expects:
            found = self.matching(expect)
            lines.append(f"expected {expect}: " + ("" if found else "no such result"))
            lines += [f"    {describe(r)}" for r in found]
        others = [
            r
            for r in self.results
            if r.status in (*ALARM, "error")
            and not any(e.matches(r) for e in self.injection.expects)
        ]
        if others:
            lines.append("other checks that alarmed:")
            lines += [f"    {describe(r)}" for r in others]
        if self.transform is not None and self.transform.failures():
            lines.append("the transform after the injection said:")
            lines += [f"    {f}" for f in self.transform.failures()[:5]]
        return "\n".join(lines)


def _values(evidence: list[dict[str, Any]]) -> set[str]:
    """Every value in evidence rows, as text (nested lists and dicts opened)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif value is not None:
            found.add(str(value))

    walk(evidence)
    return found


def injection_groups(injections: Sequence[Injection]) -> list[list[Injection]]:
    """Anomalies caught on raw each get a copy of their own (a file copy, no transform);
    those caught on staging share one copy and one incremental transform (they touch
    different orders, so they do not hide one another)."""
    groups: list[list[Injection]] = [[i] for i in injections if not i.reads_built_layers()]
    built = [i for i in injections if i.reads_built_layers()]
    return groups + ([built] if built else [])


def detect_group(
    world: World, config: QualityConfig, group: Sequence[Injection], data_dir: Path
) -> list[Detection]:
    """Inject ``group`` into a copy of ``world`` in ``data_dir`` and run the default suite at
    the world's "now"; one :class:`Detection` per injection."""
    copy = copy_world(world, data_dir)
    detections = [Detection(injection) for injection in group]
    con = duckdb.connect(str(copy.warehouse))
    try:
        for detection in detections:
            try:
                detection.injected = detection.injection.inject(con, copy)
            except Exception as exc:  # an injector that breaks is reported, not hidden
                detection.error = f"the injector failed: {type(exc).__name__}: {exc}"
        con.execute("CHECKPOINT")
    finally:
        con.close()
    transformed: TransformResult | None = None
    if any(i.reads_built_layers() for i in group):
        transformed = transform(copy.data_dir, copy.timezone, full_refresh=False)
        broken = [m for m in transformed.models if m.status == "error"]
        if transformed.error or broken:
            reason = "; ".join(transformed.failures()[:3])
            for detection in detections:
                detection.error = detection.error or f"the transform failed: {reason}"
    judged = {i.judged_at(copy) for i in group}
    if len(judged) != 1:
        raise ValueError(f"{[i.anomaly for i in group]}: one copy, one run: one judging time")
    warehouse = open_for_checks(copy.warehouse)
    try:
        results = run_config(config, warehouse, judged.pop(), copy.timezone)
    finally:
        warehouse.close()
    for detection in detections:
        detection.results = results
        detection.transform = transformed
    return detections
