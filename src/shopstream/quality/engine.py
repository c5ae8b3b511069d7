"""One quality run over the warehouse: every planned check, each judged on its own.

A check that cannot run (bad options, a query error, a missing column) becomes an ``error``
result that says why and what to do; it never stops the other checks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from pydantic import ValidationError

from shopstream.quality.checks import CheckContext, Kind, kind
from shopstream.quality.results import CheckResult
from shopstream.quality.spec import PIPELINE, PlannedCheck, QualityConfig

log = logging.getLogger(__name__)


@dataclass
class EngineRun:
    results: list[CheckResult] = field(default_factory=list)
    #: Tables of the configuration that do not exist here (not required: skipped quietly).
    absent: list[str] = field(default_factory=list)


def _error(check: PlannedCheck, severity: str, message: str) -> CheckResult:
    return CheckResult(
        check=check.name,
        kind=check.spec.kind,
        table=check.table,
        column=check.spec.column,
        status="error",
        observed=None,
        expected=None,
        threshold="",
        severity=severity,  # type: ignore[arg-type]
        message=message,
    )


def run_checks(
    config: QualityConfig,
    ctx: CheckContext,
    *,
    select: Sequence[str] = (),
    on_check: Callable[[PlannedCheck, list[CheckResult]], None] | None = None,
) -> EngineRun:
    """Run the configured checks (``select``: only those whose name starts with one of these)."""
    run = EngineRun()
    missing: set[str] = set()
    for check in config.checks():
        if select and not any(check.name.startswith(prefix) for prefix in select):
            continue
        severity = check.spec.severity or "medium"
        try:
            check_kind = kind(check.spec.kind)
            severity = check.spec.severity or check_kind.severity
            params = check_kind.params.model_validate(check.spec.options)
        except (ValueError, ValidationError) as exc:
            results = [_error(check, severity, f"{check.name}: bad options: {exc}")]
        else:
            results = _run_one(ctx, check, check_kind, params, severity, missing, run)
        run.results.extend(results)
        if on_check is not None:
            on_check(check, results)
    return run


def _run_one(
    ctx: CheckContext,
    check: PlannedCheck,
    check_kind: Kind,
    params: object,
    severity: str,
    missing: set[str],
    run: EngineRun,
) -> list[CheckResult]:
    if check.table != PIPELINE and check_kind.reads_table and not ctx.exists(check.table):
        if not check.table_spec.required:
            if check.table not in missing:
                missing.add(check.table)
                run.absent.append(check.table)
            return []
        return [
            _error(
                check,
                severity,
                f"{check.table} does not exist: build it (`shopstream transform` for staging "
                "and marts) or fix the table's name in the checks file",
            )
        ]
    started = time.monotonic()
    try:
        results = check_kind.run(ctx, check, params)
    except Exception as exc:  # one broken check must not stop the others
        log.exception("quality check %s failed to run", check.name)
        return [_error(check, severity, f"{check.name} could not run: {exc}")]
    seconds = round(time.monotonic() - started, 3)
    return [replace(r, details={**r.details, "seconds": seconds}) for r in results]


__all__ = ["EngineRun", "run_checks"]
