"""The Beam virtualenv (``.venv-beam``, built by ``make beam-venv``; ``make test`` builds it):
where the Beam tests run their scenario scripts. Apache Beam cannot be installed beside the
platform's own dependencies (it needs pyarrow<26 and google-cloud-aiplatform<2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]
BEAM_PYTHON = Path(os.environ.get("SHOPSTREAM_TEST_BEAM_PYTHON", ROOT / ".venv-beam/bin/python"))

skip_without_beam = pytest.mark.skipif(
    not BEAM_PYTHON.is_file(),
    reason=f"no Beam virtualenv at {BEAM_PYTHON}: run `make beam-venv` (make test builds it)",
)


def beam_env(**overrides: str) -> dict[str, str]:
    """The environment for a scenario process: this one's, without settings that would point
    the pipeline elsewhere, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    env.update(overrides)
    return env


#: What a Beam scenario writes: raw rows, dead letters and the real-time aggregates.
LANDED_TABLES = ("raw.events", "raw.dead_letter", "raw.cdc_orders", "mart.realtime_activity")


def landed_rows(warehouse: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row a Beam scenario wrote into the DuckDB file ``warehouse``, per table."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {
            name: con.sql(f"SELECT * FROM {name}").to_arrow_table().to_pylist()
            for name in LANDED_TABLES
        }
    finally:
        con.close()
