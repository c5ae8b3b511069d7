"""shopstream_quality: the data quality checks, every 30 minutes.

One task runs ``shopstream quality run --format json``: the checks store their results in
``monitoring.data_quality_checks`` and the task returns the count of checks per status (XCom).
In the ``prod`` overlay this DAG replaces the quality CronJob (suspended there; never both,
they would store every result twice).

- Param ``select``: only checks whose name starts with one of these prefixes (default: all),
  e.g. ``airflow dags trigger shopstream_quality -c '{"select": ["raw.events"]}'``.
- Failing checks fail the task without retries (the data would not change and the results would
  be stored twice); a run that could not run (warehouse unreachable) is retried: 2 retries,
  exponential backoff from 1 minute; each try times out after 20 minutes.
- SLA, the Airflow 3 way (Airflow 3 removed ``sla``/``sla_miss_callback``): a deadline alert,
  25 minutes after the run was queued, records a failed ``quality`` run (triggerer callback).
- Outcome: failure and success callbacks run ``shopstream record-run quality`` with
  ``--outcome failed --reason "<dag_id>.<task_id>: <error>"`` or ``--outcome success``.

Reads: ``SHOPSTREAM_BIN`` and the ``SHOPSTREAM_*`` settings of the worker pod.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task
from shopstream_airflow import START, deadline, default_args, run_quality

DAG_ID = "shopstream_quality"

with DAG(
    dag_id=DAG_ID,
    description="Data quality checks into monitoring.data_quality_checks",
    doc_md=__doc__,
    schedule="*/30 * * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["shopstream", "quality"],
    params={
        "select": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Check name prefixes to run (empty: every check).",
        )
    },
    default_args=default_args(
        "quality", retries=2, retry_delay=timedelta(minutes=1), timeout=timedelta(minutes=20)
    ),
    deadline=deadline("quality", DAG_ID, timedelta(minutes=25)),
):

    @task(task_id="quality_run")
    def quality_run(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """``shopstream quality run --format json`` (``--select`` for each prefix)."""
        return run_quality(tuple((params or {}).get("select") or ()))

    quality_run()
