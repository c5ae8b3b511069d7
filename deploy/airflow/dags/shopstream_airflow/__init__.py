"""What the shopstream DAGs share: running the ``shopstream`` command, recording each run's
outcome for the PipelineExecutionFailed alert, and the deadline that stands in for an SLA.

The DAGs never import shopstream: it cannot be installed beside Airflow (their FastAPI pins
conflict), so the worker image carries it in its own virtualenv and the tasks run its command
(``SHOPSTREAM_BIN``, default ``shopstream`` on PATH) as a subprocess. The command reads its
settings from the environment of the worker pod (ConfigMap ``shopstream-settings`` and Secret
``shopstream-secrets``, see ``deploy/airflow/pod_templates/shopstream-worker.yaml``).

This package sits in the DAGs folder (Airflow puts that folder on ``sys.path``) and is listed in
``.airflowignore``: the DAG processor does not parse it as a DAG file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference
from airflow.sdk.exceptions import AirflowFailException

log = logging.getLogger(__name__)

OWNER = "shopstream"
#: A fixed date in the past; with ``catchup=False`` only the latest interval runs.
START = datetime(2026, 1, 1, tzinfo=UTC)
#: How long ``shopstream record-run`` may take (it pushes one small group to the Pushgateway).
RECORD_TIMEOUT_SECONDS = 60
#: shopstream's exit status for a configuration or usage error.
USAGE_ERROR = 2
#: The only setting ``record-run`` needs; the callback passes no other ``SHOPSTREAM_*``
#: variable, so that a run that failed on broken settings can still be recorded.
PUSHGATEWAY_ENV = "SHOPSTREAM_OBSERVABILITY__PUSHGATEWAY_URL"
#: The most of a failing command's output that goes into the exception (and so the reason).
REASON_CHARS = 400


def shopstream_bin() -> str:
    """The shopstream command: ``SHOPSTREAM_BIN`` (the worker image sets
    ``/opt/shopstream/bin/shopstream``), else ``shopstream`` on PATH."""
    return os.environ.get("SHOPSTREAM_BIN") or "shopstream"


def _env() -> dict[str, str]:
    # Wide lines: Rich wraps at 80 columns when it is not writing to a terminal.
    return {**os.environ, "COLUMNS": "200"}


class CommandFailed(RuntimeError):
    """``shopstream <args>`` exited with a non-zero status; the message ends with what it said."""

    def __init__(self, message: str, stdout: str = "") -> None:
        super().__init__(message)
        self.stdout = stdout


@dataclass(frozen=True)
class Finished:
    """What a shopstream command printed, once it exited 0."""

    stdout: str
    stderr: str


def _said(result: subprocess.CompletedProcess[str]) -> str:
    """The last lines the command wrote, on one line, short enough for a reason label."""
    text = " ".join((result.stderr.strip() or result.stdout.strip()).split())
    return text[-REASON_CHARS:] if text else "(no output)"


def run_shopstream(args: Sequence[str], *, timeout: timedelta | None = None) -> Finished:
    """Run ``shopstream <args>``, log what it printed and return it; raise
    :class:`CommandFailed` when it exits non-zero. The task's ``execution_timeout`` interrupts
    the wait, and ``subprocess.run`` then kills the command."""
    argv = [shopstream_bin(), *args]
    log.info("running %s", " ".join(argv))
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=timeout.total_seconds() if timeout else None,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandFailed(f"{argv[0]} not found: set SHOPSTREAM_BIN ({exc})") from exc
    if result.stdout:
        log.info("stdout of shopstream %s:\n%s", args[0], result.stdout)
    if result.stderr:
        log.info("stderr of shopstream %s:\n%s", args[0], result.stderr)
    if result.returncode == USAGE_ERROR:
        # A configuration or usage error does not go away on its own: no retries.
        raise AirflowFailException(
            f"shopstream {' '.join(args)} exited {result.returncode} "
            f"(configuration or usage error): {_said(result)}"
        )
    if result.returncode != 0:
        raise CommandFailed(
            f"shopstream {' '.join(args)} exited {result.returncode}: {_said(result)}",
            result.stdout,
        )
    return Finished(result.stdout, result.stderr)


def run_quality(select: Sequence[str] = ()) -> dict[str, Any]:
    """``shopstream quality run --format json`` (optionally ``--select`` prefixes); returns the
    counts of the run's statuses. Failing checks fail the task without retries (running them
    again would not change the data and would store the results twice); a run that could not
    run at all raises :class:`CommandFailed` and is retried."""
    args = ["quality", "run", "--format", "json"]
    for prefix in select:
        args += ["--select", prefix]
    try:
        finished = run_shopstream(args)
    except CommandFailed as exc:
        checks = _quality_counts(exc.stdout)
        if checks:
            raise AirflowFailException(f"quality checks failed: {checks}") from exc
        raise
    return _quality_counts(finished.stdout) or {}


def _quality_counts(stdout: str) -> dict[str, int]:
    """The checks per status of a run that ran (empty when it could not run or printed no
    JSON)."""
    try:
        document = json.loads(stdout)
    except ValueError:
        return {}
    run = document.get("run") if isinstance(document, dict) else None
    if not isinstance(run, dict) or run.get("error") or run.get("config_error"):
        return {}
    counts: dict[str, int] = {}
    for check in run.get("checks") or []:
        status = str(check.get("status", "unknown"))
        counts[status] = counts.get(status, 0) + 1
    return counts


class RecordOutcome:
    """A task callback that records the run's outcome with ``shopstream record-run <pipeline>
    --outcome <outcome>`` (a failure with ``--reason "<dag_id>.<task_id>: <error>"``), for the
    PipelineExecutionFailed alert. It never raises: a callback that raised would hide the task's
    own outcome; it logs what record-run said instead."""

    def __init__(self, pipeline: str, outcome: str) -> None:
        self.pipeline = pipeline
        self.outcome = outcome

    def __repr__(self) -> str:
        return f"RecordOutcome({self.pipeline!r}, {self.outcome!r})"

    def __call__(self, context: Mapping[str, Any]) -> None:
        try:
            args = ["record-run", self.pipeline, "--outcome", self.outcome]
            if self.outcome == "failed":
                args += ["--reason", failure_reason(context)]
            _record(args)
        except Exception:  # a callback must never raise
            log.exception("could not record the %s run of %s", self.outcome, self.pipeline)


def failure_reason(context: Mapping[str, Any]) -> str:
    """``<dag_id>.<task_id>: <error>`` on one line."""
    ti = context.get("ti") or context.get("task_instance")
    where = f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')}"
    error = " ".join(str(context.get("exception") or "unknown error").split())
    return f"{where}: {error[:REASON_CHARS]}"


def _record_env() -> dict[str, str]:
    return {
        name: value
        for name, value in _env().items()
        if not name.startswith("SHOPSTREAM_") or name in (PUSHGATEWAY_ENV, "SHOPSTREAM_BIN")
    }


def _record(args: list[str]) -> None:
    argv = [shopstream_bin(), *args]
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=_record_env(),
            timeout=RECORD_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("%s could not run: %s", " ".join(argv[:3]), exc)
        return
    said = " ".join((result.stdout + result.stderr).split())
    if result.returncode == 0:
        log.info("%s", said)
    else:
        log.error("%s exited %s: %s", " ".join(argv[:3]), result.returncode, said)


async def record_missed_deadline(pipeline: str, dag_id: str, context: Any = None) -> None:
    """The deadline alert's callback (it runs in the triggerer): a run still unfinished at its
    deadline is recorded as a failed run of ``pipeline``, so PipelineExecutionFailed fires until
    the next success. Never raises."""
    try:
        run = (context or {}).get("dag_run", {}) if isinstance(context, Mapping) else {}
        reason = f"{dag_id}: run {run.get('run_id', '?')} missed its deadline"
        process = await asyncio.create_subprocess_exec(
            shopstream_bin(),
            "record-run",
            pipeline,
            "--outcome",
            "failed",
            "--reason",
            reason,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=_record_env(),
        )
        out, _ = await asyncio.wait_for(process.communicate(), RECORD_TIMEOUT_SECONDS)
        log.warning("%s; record-run exited %s: %s", reason, process.returncode, out.decode())
    except Exception:  # a callback must never raise
        log.exception("could not record the missed deadline of %s", dag_id)


def deadline(pipeline: str, dag_id: str, within: timedelta) -> DeadlineAlert | None:
    """Airflow 3's replacement for the removed SLAs: a run not finished ``within`` after it was
    queued calls :func:`record_missed_deadline` in the triggerer.

    ``SHOPSTREAM_AIRFLOW_DEADLINES=off`` leaves it out, for ``airflow dags test`` only: in 3.3.2
    that command crashes after a successful run of a DAG with a deadline
    (apache/airflow#73428, fix in #73430); the scheduler is not affected."""
    if os.environ.get("SHOPSTREAM_AIRFLOW_DEADLINES", "on").lower() == "off":
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=within,
        callback=AsyncCallback(
            record_missed_deadline, kwargs={"pipeline": pipeline, "dag_id": dag_id}
        ),
    )


def default_args(
    pipeline: str, *, retries: int, retry_delay: timedelta, timeout: timedelta
) -> dict[str, Any]:
    """Every task: retries with exponential backoff, a timeout, and the outcome recorded.
    ``SHOPSTREAM_AIRFLOW_RETRIES`` overrides the retries of every task (``0`` in tests and dev
    environments: ``airflow dags test`` waits out each retry delay)."""
    override = os.environ.get("SHOPSTREAM_AIRFLOW_RETRIES")
    return {
        "owner": OWNER,
        "retries": int(override) if override else retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timeout,
        "on_failure_callback": RecordOutcome(pipeline, "failed"),
        "on_success_callback": RecordOutcome(pipeline, "success"),
    }
