"""The dbt runner in-process, on a real DuckDB file held by this process, with a tiny project
(tests/support/dbt_project): dbt shares the warehouse's DuckDB instance, results and progress
come back, the salt stays private, one dbt at a time, and the workspace is what it should be."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shopstream.config import Settings
from shopstream.transform import workspace
from shopstream.transform.runner import Progress, TransformRequest, TransformResult, run_job
from shopstream.transform.runs import make_job, run_on
from shopstream.warehouse.duckdb.database import DuckDBWarehouse
from tests.support.rows import events_table

PROJECT = Path(__file__).parents[1] / "support" / "dbt_project"
SALT = "salt-" + "9f3c1a7e5b" * 3


def settings_for(data_dir: Path, **transform: object) -> Settings:
    return Settings(
        data_dir=data_dir,
        transform={"project_dir": PROJECT, "email_salt": SALT, **transform},
    )


@dataclass
class Built:
    settings: Settings
    warehouse: DuckDBWarehouse
    result: TransformResult
    progress: list[Progress]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """One build of the test project over 5 events (one sent twice), shared by the module."""
    data_dir = tmp_path_factory.mktemp("runner")
    settings = settings_for(data_dir)
    warehouse = DuckDBWarehouse(data_dir / "shopstream.duckdb", memory_limit_mb=256)
    warehouse.ensure_layers()
    warehouse.append({"events": events_table("e1", "e2", "e3", "e4", event_type="page_view")})
    warehouse.append({"events": events_table("e5", "e1", event_type="add_to_cart")})
    progress: list[Progress] = []
    result = run_on(warehouse, settings, TransformRequest(), progress.append)
    yield Built(settings, warehouse, result, progress)
    warehouse.close()


def rows(warehouse: DuckDBWarehouse, sql: str) -> list[dict[str, object]]:
    return warehouse.query(sql).to_pylist()


def test_dbt_builds_into_the_warehouse_this_process_holds(built: Built) -> None:
    result = built.result
    assert result.success, result.failures()
    assert {m.name: m.status for m in result.models} == {
        "stg_test_events": "success",
        "events_by_type": "success",
        "event_total": "success",
        "slow_copy": "success",
        "pipeline_freshness": "success",  # generated into every project the runner runs
    }
    # Read on the warehouse's own connection: dbt wrote into the same DuckDB instance.
    by_type = rows(built.warehouse, "SELECT * FROM mart.events_by_type ORDER BY event_type")
    # e1 was sent twice (page_view first): staging keeps the first.
    assert by_type == [
        {"event_type": "add_to_cart", "events": 1},
        {"event_type": "page_view", "events": 4},
    ]
    counts = {m.name: m.rows for m in result.models}
    assert counts == {
        "stg_test_events": None,
        "events_by_type": 2,
        "event_total": 1,
        "slow_copy": 2,
        "pipeline_freshness": None,  # a view
    }
    assert all(m.seconds > 0 for m in result.models)
    assert result.tests_passed == len(result.tests) == 8
    assert {t.model for t in result.tests} == {
        "events_by_type",
        "event_total",
        "slow_copy",
        "pipeline_freshness",
    }
    assert result.failures() == []


def test_progress_reports_every_node_started_and_finished(built: Built) -> None:
    started = [p for p in built.progress if p.kind == "started"]
    finished = [p for p in built.progress if p.kind == "finished"]
    nodes = len(built.result.models) + len(built.result.tests)
    assert len(started) == len(finished) == nodes
    assert {p.total for p in started} == {nodes}
    assert sorted(p.index for p in started) == list(range(1, nodes + 1))
    assert {p.node for p in finished} >= {"events_by_type", "slow_copy", "stg_test_events"}
    assert {p.status for p in finished} <= {"success", "pass"}


def test_the_salt_stays_out_of_results_and_progress_and_target_is_private(built: Built) -> None:
    assert SALT not in repr(built.result) and SALT not in repr(built.progress)
    assert SALT not in repr(make_job(built.settings, TransformRequest()))
    root = workspace.transform_root(built.settings.data_dir)
    project = root / "project"
    holding = [
        p
        for p in (project / "target").rglob("*")
        if p.is_file() and SALT in p.read_text(errors="ignore")
    ]
    # dbt writes vars into its artifacts and compiled SQL: they are why target/ is private.
    assert holding, "dbt no longer writes the vars into target/: the privacy rule may be relaxed"
    for path in [root, project / "target", project / "logs", *(project / "target").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {mode:o}"
    log = (project / "logs" / "dbt.log").read_text()
    assert "events_by_type" in log and SALT not in log
    assert stat.S_IMODE((root / "profiles.yml").stat().st_mode) == 0o600


def test_the_profile_shares_the_owners_duckdb_instance(built: Built) -> None:
    import yaml

    profile = yaml.safe_load(
        (workspace.transform_root(built.settings.data_dir) / "profiles.yml").read_text()
    )
    output = profile["shopstream"]["outputs"][profile["shopstream"]["target"]]
    assert output["path"] == str(built.warehouse.path)
    assert output["config_options"] == built.warehouse.connect_config == {"memory_limit": "256MB"}


def test_failures_name_the_model_and_the_reason(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_TEST_BREAK_MODEL", "yes")
    monkeypatch.setenv("RUNNER_TEST_FAIL_TEST", "yes")
    result = run_on(built.warehouse, built.settings, TransformRequest())
    assert not result.success
    broken = {m.name: m for m in result.models}["slow_copy"]
    assert broken.status == "error" and "no_such_table_on_purpose" in broken.message
    failing = [t for t in result.tests if t.status == "fail"]
    assert [(t.name, t.model) for t in failing] == [("no_page_views_when_asked", "events_by_type")]
    lines = result.failures()
    assert any(
        line.startswith("model slow_copy:") and "no_such_table_on_purpose" in line for line in lines
    )
    assert any("no_page_views_when_asked on model events_by_type" in line for line in lines)
    # The tests of the broken model are skipped, not passed.
    assert {t.status for t in result.tests if t.model == "slow_copy"} == {"skipped"}


def test_select_and_full_refresh_pass_through(built: Built) -> None:
    built.warehouse.append({"events": events_table("e6", event_type="purchase")})
    result = run_on(
        built.warehouse,
        built.settings,
        TransformRequest(full_refresh=True, select=("event_total",)),
    )
    assert result.success, result.failures()
    assert [m.name for m in result.models] == ["event_total"]
    assert rows(built.warehouse, "SELECT events FROM mart.event_total") == [{"events": 6}]
    # Not selected: not rebuilt.
    assert rows(built.warehouse, "SELECT sum(events) AS n FROM mart.events_by_type") == [{"n": 5}]


def test_one_dbt_at_a_time_the_second_waits(built: Built) -> None:
    job = make_job(built.settings, TransformRequest(select=("events_by_type",)))
    progress: dict[int, list[Progress]] = {0: [], 1: []}
    results: dict[int, TransformResult] = {}
    first_started = threading.Event()

    def run(index: int) -> None:
        def emit(step: Progress) -> None:
            progress[index].append(step)
            if index == 0 and step.kind == "started":
                first_started.set()

        results[index] = run_job(built.warehouse, job, emit)

    first = threading.Thread(target=run, args=(0,))
    first.start()
    assert first_started.wait(60)
    second = threading.Thread(target=run, args=(1,))
    second.start()
    first.join(60)
    second.join(60)
    assert results[0].success and results[1].success
    assert progress[1][0].kind == "waiting"
    assert all(p.kind != "waiting" for p in progress[0])


def test_a_transform_that_cannot_start_is_a_failed_result(built: Built, tmp_path: Path) -> None:
    settings = settings_for(built.settings.data_dir, project_dir=tmp_path / "nowhere")
    result = run_on(built.warehouse, settings, TransformRequest())
    assert not result.success and result.error is not None and "no dbt project" in result.error
    assert "nowhere" in result.failures()[0]


def test_the_working_copy_is_refreshed_when_the_project_changes(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "models").mkdir(parents=True)
    (source / "dbt_project.yml").write_text("name: x\n")
    (source / "models" / "a.sql").write_text("select 1 as a\n")
    root = tmp_path / "transform"
    project = workspace.prepare_project(root, source)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert (project / "models" / "a.sql").read_text() == "select 1 as a\n"
    (project / "target").mkdir()
    (project / "target" / "partial_parse.msgpack").write_text("kept")
    (project / "models" / "stray.sql").write_text("left by a user")
    # Unchanged source: the copy is left as it is.
    assert workspace.prepare_project(root, source) == project
    assert (project / "models" / "stray.sql").exists()
    (source / "models" / "a.sql").write_text("select 2 as a\n")
    (source / "models" / "b.sql").write_text("select 3 as b\n")
    workspace.prepare_project(root, source)
    assert (project / "models" / "a.sql").read_text() == "select 2 as a\n"
    assert (project / "models" / "b.sql").exists()
    assert not (project / "models" / "stray.sql").exists()
    assert (project / "target" / "partial_parse.msgpack").read_text() == "kept"


def test_the_email_salt_is_made_once_private_and_kept(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    salt = workspace.email_salt(settings)
    path = tmp_path / workspace.SALT_FILE
    assert len(salt) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert workspace.email_salt(settings) == salt
    os.chmod(path, 0o644)
    assert workspace.email_salt(settings) == salt
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    given = "given-salt-0123456789"
    assert workspace.email_salt(Settings(data_dir=tmp_path, transform={"email_salt": given})) == (
        given
    )
    assert not list(tmp_path.glob(".email_salt*")), "a draft of the salt file was left behind"
    path.write_text("")
    with pytest.raises(ValueError, match="email_salt does not hold a salt"):
        workspace.email_salt(settings)


@pytest.mark.parametrize("salt", ["it's-a-salt-0123456", "back\\slash-0123456789", "short"])
def test_a_salt_that_cannot_be_a_sql_literal_is_refused_without_echoing_it(salt: str) -> None:
    # It is pasted into SQL as a string literal: a quote would break (or inject into) the SQL,
    # a backslash would hash differently on BigQuery than on DuckDB.
    with pytest.raises(ValueError, match="email_salt must be 16 or more") as refused:
        Settings(transform={"email_salt": salt})
    assert salt not in str(refused.value)


def test_a_bigquery_warehouse_gets_a_bigquery_profile(tmp_path: Path) -> None:
    import yaml

    output = workspace.profile_output("bigquery://shop-prod?location=EU")
    workspace.write_profile(tmp_path, output)
    profile = yaml.safe_load((tmp_path / "profiles.yml").read_text())
    assert profile["shopstream"]["target"] == "bigquery"
    written = profile["shopstream"]["outputs"]["bigquery"]
    assert (written["project"], written["location"], written["method"]) == (
        "shop-prod",
        "EU",
        "oauth",
    )
