"""shopstream_docs: the weekly documentation build.

One task runs ``shopstream docs build``: a page per pipeline and per dbt model (lineage,
schemas, freshness, checks, alerts, runbooks) as Markdown and a static site under
``docs.out_dir`` (default ``<data_dir>/docs``). On a warehouse many processes may open
(BigQuery) it runs ``dbt docs generate`` itself; the overview paragraphs come from the language
model when ``SHOPSTREAM_LLM`` is set (cached by prompt, so an unchanged week asks nothing).

- Retries: 2, exponential backoff from 5 minutes; each try times out after 30 minutes.
- SLA, the Airflow 3 way (Airflow 3 removed ``sla``/``sla_miss_callback``): a deadline alert,
  2 hours after the run was queued, records a failed ``docs`` run (triggerer callback).
- Outcome: failure and success callbacks run ``shopstream record-run docs`` with
  ``--outcome failed --reason "<dag_id>.<task_id>: <error>"`` or ``--outcome success``.

Reads: ``SHOPSTREAM_BIN`` and the ``SHOPSTREAM_*`` settings of the worker pod.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task
from shopstream_airflow import START, deadline, default_args, run_shopstream

DAG_ID = "shopstream_docs"
TIMEOUT = timedelta(minutes=30)

with DAG(
    dag_id=DAG_ID,
    description="Weekly documentation build (shopstream docs build)",
    doc_md=__doc__,
    schedule="0 4 * * 1",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["shopstream", "docs"],
    default_args=default_args("docs", retries=2, retry_delay=timedelta(minutes=5), timeout=TIMEOUT),
    deadline=deadline("docs", DAG_ID, timedelta(hours=2)),
):

    @task(task_id="docs_build")
    def docs_build() -> None:
        """``shopstream docs build``."""
        run_shopstream(["docs", "build"], timeout=TIMEOUT)

    docs_build()
