"""shopstream_transform_hourly: the hourly incremental transform.

One task runs ``shopstream transform``: ``dbt build`` of staging and marts, incremental models
adding only what raw gained since the last run, and dbt's tests run in the same build (a failing
test fails the task). The SQL lives in the shopstream package, not here.

- Retries: 3, exponential backoff from 2 minutes; each try times out after 40 minutes.
- SLA, the Airflow 3 way (Airflow 3 removed ``sla``/``sla_miss_callback``): a deadline alert,
  55 minutes after the run was queued, records a failed ``transform`` run (triggerer callback);
  the data itself is watched by the DataFreshnessSLABreach alert.
- Outcome: each task's failure callback runs ``shopstream record-run transform --outcome failed
  --reason "<dag_id>.<task_id>: <error>"``, its success callback ``--outcome success``
  (PipelineExecutionFailed compares the two timestamps on the Pushgateway).

Reads: ``SHOPSTREAM_BIN`` and the ``SHOPSTREAM_*`` settings of the worker pod.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task
from shopstream_airflow import START, deadline, default_args, run_shopstream

DAG_ID = "shopstream_transform_hourly"
TIMEOUT = timedelta(minutes=40)

with DAG(
    dag_id=DAG_ID,
    description="Hourly incremental dbt build of staging and marts (shopstream transform)",
    doc_md=__doc__,
    schedule="15 * * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["shopstream", "transform"],
    default_args=default_args(
        "transform", retries=3, retry_delay=timedelta(minutes=2), timeout=TIMEOUT
    ),
    deadline=deadline("transform", DAG_ID, timedelta(minutes=55)),
):

    @task(task_id="transform")
    def transform() -> None:
        """``shopstream transform`` (incremental ``dbt build``, tests included)."""
        run_shopstream(["transform"], timeout=TIMEOUT)

    transform()
