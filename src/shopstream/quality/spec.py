"""The checks' configuration: YAML, one entry per table, a list of checks each.

shopstream's defaults (``default_checks.yml`` beside this module) watch its own tables; a user's
file (``quality.checks_file``) adds tables, replaces a default table's entry wholesale when it
names the same table, and turns default checks off by name::

    tables:
      raw.events:                     # layer.table
        time_column: event_ts         # when a row happened: windows and baselines
        landed_column: received_at    # when it landed: freshness
        key: [event_id]
        checks:
          - kind: freshness           # one of shopstream.quality.checks.KINDS
            warn_after_minutes: 30    # the kind's own options (its Params model)
          - kind: null_rate
            column: session_id
            name: raw.events.session_id_nulls   # optional; must be unique
            severity: medium                    # optional; else the kind's default
    pipeline:                         # checks of the pipeline, not of one table
      - kind: replication
    disable: [raw.events.volume_daily]

A check's name defaults to ``<table>.<kind>`` plus ``.<column>`` when it has one.

>>> config = QualityConfig.model_validate({"tables": {"raw.events": {"checks": [
...     {"kind": "freshness", "warn_after_minutes": 30}]}}})
>>> [c.name for c in config.checks()]
['raw.events.freshness']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shopstream.quality.results import Severity

DEFAULT_CHECKS = Path(__file__).with_name("default_checks.yml")
#: The pseudo-table of checks that watch the pipeline rather than one table.
PIPELINE = "pipeline"


class CheckSpec(BaseModel):
    """One check as written in YAML; keys other than these are the kind's options."""

    model_config = ConfigDict(extra="allow")

    kind: str
    name: str | None = None
    column: str | None = None
    severity: Severity | None = None
    enabled: bool = True
    description: str | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The kind's own options (validated by its Params model when the check runs)."""
        return dict(self.model_extra or {})


class TableSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    #: When a row happened (event_ts, commit_ts): volume, distribution and rate windows.
    time_column: str | None = None
    #: When a row landed in the warehouse (received_at, ingested_at): freshness.
    landed_column: str | None = None
    #: The row's key (duplicates, evidence rows).
    key: list[str] = Field(default_factory=list)
    #: A missing table is an error (yes) or skipped quietly (no: a source not configured here).
    required: bool = False
    checks: list[CheckSpec] = Field(default_factory=list)


@dataclass(frozen=True)
class PlannedCheck:
    """A check to run: its unique name, the table it watches and its spec."""

    name: str
    table: str
    table_spec: TableSpec
    spec: CheckSpec


class QualityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tables: dict[str, TableSpec] = Field(default_factory=dict)
    pipeline: list[CheckSpec] = Field(default_factory=list)
    disable: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_unique(self) -> QualityConfig:
        seen: dict[str, str] = {}
        for planned in self._planned(include_disabled=True):
            if planned.name in seen:
                raise ValueError(
                    f"two checks are named {planned.name!r} (on {seen[planned.name]} and "
                    f"{planned.table}): give one of them a `name:` of its own"
                )
            seen[planned.name] = planned.table
        for table in self.tables:
            if table.count(".") != 1 or table.startswith(f"{PIPELINE}."):
                raise ValueError(
                    f"table {table!r}: name it as layer.table (raw.events, staging.stg_orders)"
                )
        return self

    def _planned(self, *, include_disabled: bool = False) -> Iterator[PlannedCheck]:
        groups = [(name, spec, spec.checks) for name, spec in self.tables.items()]
        groups.append((PIPELINE, TableSpec(), self.pipeline))
        for table, table_spec, specs in groups:
            for spec in specs:
                name = spec.name or ".".join(
                    part for part in (table, spec.kind, spec.column) if part
                )
                if include_disabled or (spec.enabled and name not in self.disable):
                    yield PlannedCheck(name, table, table_spec, spec)

    def checks(self) -> list[PlannedCheck]:
        """The checks to run, in the file's order, without the disabled ones."""
        return list(self._planned())

    def merged(self, user: QualityConfig) -> QualityConfig:
        """These checks with ``user``'s added: its tables replace ours of the same name, its
        pipeline checks are added, its ``disable`` applies to both."""
        return QualityConfig(
            tables={**self.tables, **user.tables},
            pipeline=[*self.pipeline, *user.pipeline],
            disable=[*self.disable, *user.disable],
        )


class QualityConfigError(ValueError):
    """The checks' YAML is wrong; the message names the file and the place."""


def read_config(path: Path) -> QualityConfig:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise QualityConfigError(f"cannot read quality checks file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise QualityConfigError(f"{path} is not valid YAML: {exc}") from exc
    try:
        return QualityConfig.model_validate(data)
    except ValidationError as exc:
        raise QualityConfigError(f"{path}: {exc}") from exc


def load_config(checks_file: Path | None = None) -> QualityConfig:
    """shopstream's default checks, with the user's file (``quality.checks_file``) merged in."""
    config = read_config(DEFAULT_CHECKS)
    if checks_file is not None:
        config = config.merged(read_config(checks_file))
    return config


__all__ = [
    "DEFAULT_CHECKS",
    "PIPELINE",
    "CheckSpec",
    "PlannedCheck",
    "QualityConfig",
    "QualityConfigError",
    "TableSpec",
    "load_config",
    "read_config",
]
