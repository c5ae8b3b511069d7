"""PLACEHOLDER — replaced at merge by the CDC staging helper's module of the same name.

Only the three names the workspace calls are here, doing nothing, so that the runner's branch
works on its own: :data:`LATEST_SCHEMAS_SQL` (the latest schema version of every captured table,
read through the warehouse's query method), :func:`captured_tables` (those rows, as a list of
dicts, to one :class:`CapturedTable` each) and :func:`write_models` (their staging models, written
into a directory; returns the files written).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: PLACEHOLDER: answers no rows.
LATEST_SCHEMAS_SQL = "SELECT 1 AS placeholder WHERE false"


@dataclass(frozen=True)
class CapturedTable:
    """PLACEHOLDER: the real one describes a captured table's latest schema."""

    model_name: str


def captured_tables(rows: Sequence[Mapping[str, Any]]) -> list[CapturedTable]:
    """PLACEHOLDER: no captured tables."""
    return []


def write_models(tables: Sequence[CapturedTable], directory: Path) -> list[str]:
    """PLACEHOLDER: writes nothing."""
    return []
