"""shopstream_transform_daily: the nightly full rebuild, with dbt's tests.

One task runs ``shopstream transform --full-refresh``: ``dbt build --full-refresh`` rebuilds the
incremental models from raw and runs every dbt test in the same build (a failing test fails the
task). It catches what incremental runs cannot: late rows before an incremental model's
watermark and changed model logic. The SQL lives in the shopstream package, not here.

- Retries: 2, exponential backoff from 10 minutes; each try times out after 3 hours.
- SLA, the Airflow 3 way (Airflow 3 removed ``sla``/``sla_miss_callback``): a deadline alert,
  4 hours after the run was queued, records a failed ``transform`` run (triggerer callback).
- Outcome: failure and success callbacks run ``shopstream record-run transform`` with
  ``--outcome failed --reason "<dag_id>.<task_id>: <error>"`` or ``--outcome success``.

Runs at 02:40 UTC, between the hourly runs (at :15), and one run at a time
(``max_active_runs=1``).

Reads: ``SHOPSTREAM_BIN`` and the ``SHOPSTREAM_*`` settings of the worker pod.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task
from shopstream_airflow import START, deadline, default_args, run_shopstream

DAG_ID = "shopstream_transform_daily"
TIMEOUT = timedelta(hours=3)

with DAG(
    dag_id=DAG_ID,
    description="Nightly full rebuild of staging and marts with dbt tests",
    doc_md=__doc__,
    schedule="40 2 * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["shopstream", "transform"],
    default_args=default_args(
        "transform", retries=2, retry_delay=timedelta(minutes=10), timeout=TIMEOUT
    ),
    deadline=deadline("transform", DAG_ID, timedelta(hours=4)),
):

    @task(task_id="transform_full_refresh")
    def transform_full_refresh() -> None:
        """``shopstream transform --full-refresh``: dbt build --full-refresh, tests included."""
        run_shopstream(["transform", "--full-refresh"], timeout=TIMEOUT)

    transform_full_refresh()
