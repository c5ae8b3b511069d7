"""Acceptance of the quality agent's DEFAULT checks, end to end, on generated history.

Five weeks of a shop (the history generator: night trough, evening peak, busier weekends,
noise, growth; business time zone Asia/Seoul) are written into a real DuckDB warehouse and
built into staging and marts by the real transform. Then the default configuration
(``quality.spec.load_config()``) runs through the engine, on the warehouse opened as the
platform opens it:

- clean history: the volume and distribution checks raise no warn or fail at any hour of the
  last week, and the whole default suite raises no alarm at the end of it;
- each anomaly of ``shopstream.generators.anomalies`` injected into raw of a copy of that
  warehouse is caught (warn or fail) by the check meant for it (its kind and table; for business
  rules, its name).

Anomalies caught on raw each get a copy of their own (a file copy); the three caught on staging
(orphaned order lines, broken order totals, invalid status transitions) share one copy and one
incremental transform, and each catching check must name the injected keys in its evidence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shopstream.quality.spec import QualityConfig, load_config
from tests.support import quality_world as qw

#: 5 weeks of about 4,000 events and 150 orders a day: hundreds of events in a busy hour, a
#: dozen in the night's quietest; small enough for a transform in well under a minute.
DAYS = 35
EVENTS = 140_000
ORDERS = 5_250


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> qw.World:
    directory = tmp_path_factory.mktemp("quality-world") / "data"
    plan = qw.history_plan(days=DAYS, events=EVENTS, orders=ORDERS)
    return qw.build_world(directory, plan)


@pytest.fixture(scope="module")
def config() -> QualityConfig:
    return load_config()


class Detections:
    """Anomalies injected and judged on demand, a copy (group) at a time: selecting one
    anomaly's test (-k) builds only its copy."""

    def __init__(self, world: qw.World, config: QualityConfig, scratch: Path) -> None:
        self.world, self.config, self.scratch = world, config, scratch
        self.groups = qw.injection_groups(qw.INJECTIONS)
        self.found: dict[str, qw.Detection] = {}

    def __getitem__(self, anomaly: str) -> qw.Detection:
        if anomaly not in self.found:
            index, group = next(
                (k, g) for k, g in enumerate(self.groups) if anomaly in {i.anomaly for i in g}
            )
            directory = self.scratch / f"copy-{index}"
            for detection in qw.detect_group(self.world, self.config, group, directory):
                self.found[detection.injection.anomaly] = detection
        return self.found[anomaly]


@pytest.fixture(scope="module")
def detections(
    world: qw.World, config: QualityConfig, tmp_path_factory: pytest.TempPathFactory
) -> Detections:
    return Detections(world, config, tmp_path_factory.mktemp("injected"))


@pytest.fixture
def warehouse(world: qw.World) -> Iterator[qw.DuckDBWarehouse]:
    opened = qw.open_for_checks(world.warehouse)
    try:
        yield opened
    finally:
        opened.close()


def test_clean_history_raises_no_volume_or_distribution_alarm_at_any_hour_of_its_last_week(
    world: qw.World, config: QualityConfig, warehouse: qw.DuckDBWarehouse
) -> None:
    """Hour checks run at every hour of the last week; day checks at every local midnight (a
    run at any other hour judges the same complete day: the next test holds them to it)."""
    checks = [c for c in config.checks() if c.spec.kind in qw.NO_FALSE_ALARM_KINDS]
    kinds = {c.spec.kind for c in checks}
    assert kinds == set(qw.NO_FALSE_ALARM_KINDS), f"the default checks have only {kinds}"
    hourly = [c.name for c in checks if qw.judges_hours(c)]
    daily = [c.name for c in checks if not qw.judges_hours(c)]
    runs = [(now, hourly) for now in qw.last_week_hours(world)]
    runs += [(now, daily) for now in qw.last_week_days(world)]
    wrong: list[str] = []
    judged = 0
    for now, names in runs:
        for result in qw.run_config(config, warehouse, now, world.timezone, select=names):
            # Five weeks of history is enough to judge: "learning" here would make this test
            # pass without judging anything.
            if result.status != "pass":
                wrong.append(f"{now:%a %d %H:%M}Z {qw.describe(result)}")
            judged += 1
    assert judged >= 168 * len(hourly) + 7 * len(daily), f"only {judged} results"
    assert not wrong, f"{len(wrong)} of {judged} judgements are not pass:\n" + "\n".join(wrong)


def test_a_day_check_judges_the_same_day_at_any_hour_of_the_next(
    world: qw.World, config: QualityConfig, warehouse: qw.DuckDBWarehouse
) -> None:
    daily = [
        c.name
        for c in config.checks()
        if c.spec.kind in qw.NO_FALSE_ALARM_KINDS and not qw.judges_hours(c)
    ]
    midnight = qw.last_week_days(world)[-2]

    def verdicts(now: qw.datetime) -> list[tuple[object, ...]]:
        results = qw.run_config(config, warehouse, now, world.timezone, select=daily)
        return [(r.check, r.status, r.observed, r.expected, r.window_start) for r in results]

    at_midnight = verdicts(midnight)
    assert len(at_midnight) >= len(daily)
    for hours in (5, 17, 23):
        assert verdicts(midnight + hours * qw.HOUR) == at_midnight, f"{hours} h after midnight"


def test_clean_history_raises_no_alarm_of_any_default_check(
    world: qw.World, config: QualityConfig, warehouse: qw.DuckDBWarehouse
) -> None:
    results = qw.run_config(config, warehouse, world.now, world.timezone)
    judged = {r.check.split(".")[0] for r in results}
    assert {"raw", "staging", "mart"} <= judged, f"only {judged} layers were judged"
    alarming = [qw.describe(r) for r in results if r.alarming or r.status == "learning"]
    assert not alarming, "default checks alarm on clean generated data:\n" + "\n".join(alarming)


def test_clean_history_raises_no_alarm_of_any_default_check_on_any_day_of_its_last_week(
    world: qw.World, config: QualityConfig, warehouse: qw.DuckDBWarehouse
) -> None:
    """Every default check but freshness, at five past each local midnight of the last week
    (freshness reads the newest row, which inside the history lies after such a "now")."""
    names = [c.name for c in config.checks() if c.spec.kind != "freshness"]
    wrong: list[str] = []
    for now in qw.last_week_days(world):
        results = qw.run_config(config, warehouse, now, world.timezone, select=names)
        wrong += [f"{now:%a %d %H:%M}Z {qw.describe(r)}" for r in results if r.alarming]
    assert not wrong, "default checks alarm on clean generated data:\n" + "\n".join(wrong)


@pytest.mark.parametrize("anomaly", [i.anomaly for i in qw.INJECTIONS])
def test_each_injected_anomaly_is_caught_by_its_check(anomaly: str, detections: Detections) -> None:
    detection = detections[anomaly]
    assert detection.injected is not None and detection.injected.rows > 0, detection.explain()
    if not detection.caught:
        pytest.fail(f"{anomaly} was not caught:\n{detection.explain()}", pytrace=False)


def test_every_anomaly_kind_of_the_issue_is_injected() -> None:
    # The issue's list: volume drop and spike, null spike, duplicate burst, freshness stall,
    # schema drift, distribution shift, orphaned order items, broken order totals, invalid
    # status transition, dead-letter surge.
    assert {i.anomaly for i in qw.INJECTIONS} == {
        "volume_drop",
        "volume_spike",
        "null_spike",
        "duplicate_burst",
        "freshness_stall",
        "schema_drift",
        "distribution_shift",
        "orphan_order_items",
        "broken_order_totals",
        "invalid_status_transition",
        "dead_letter_surge",
    }
