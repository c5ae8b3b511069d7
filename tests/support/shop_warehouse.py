"""A generated shop in a real DuckDB warehouse, with its staging and marts built: what the SQL
optimizer's corpus and the documentation generator run against.

``shopstream generate-history`` (a fixed seed and end, so the same rows every time) then
``shopstream transform`` (dbt build, which also leaves the dbt manifest in the workspace), both
as a user would run them, once per test session. Tests only read it: open it read-only
(``open_warehouse(settings, read_only=True)``) and never write into ``data_dir``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shopstream.config import Settings
from shopstream.warehouse import Warehouse, open_warehouse

DAYS = 4
EVENTS_PER_DAY = 3_000
ORDERS_PER_DAY = 250
END = "2026-11-30T00:00:00Z"
SEED = 12


@dataclass(frozen=True)
class ShopWarehouse:
    data_dir: Path
    #: The environment the CLI ran with (``SHOPSTREAM_DATA_DIR`` set, nothing else of ours).
    env: dict[str, str]

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir)

    @property
    def manifest(self) -> Path:
        """The dbt manifest ``shopstream transform`` left in the workspace."""
        return self.data_dir / "transform" / "project" / "target" / "manifest.json"


def shopstream(
    env: dict[str, str], *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``shopstream <args>`` as a user would (a fresh process), ``input`` on its stdin."""
    return subprocess.run(
        [sys.executable, "-m", "shopstream", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=600,
    )


def build_shop(data_dir: Path) -> ShopWarehouse:
    """Generate the shop's history into ``data_dir`` and build its staging and marts (the
    fixture's shop; bench/optimizer.py builds the same, so the corpus's expectations hold
    there too). Raises RuntimeError with the command's output when one fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPSTREAM_")}
    env.update(SHOPSTREAM_DATA_DIR=str(data_dir), COLUMNS="200")
    for args in (
        [
            "generate-history",
            *("--days", str(DAYS), "--events-per-day", str(EVENTS_PER_DAY)),
            *("--orders-per-day", str(ORDERS_PER_DAY), "--end", END, "--seed", str(SEED)),
        ],
        ["transform"],
    ):
        done = shopstream(env, *args)
        if done.returncode != 0:
            raise RuntimeError(f"shopstream {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return ShopWarehouse(data_dir, env)


@pytest.fixture(scope="session")
def shop_warehouse(tmp_path_factory: pytest.TempPathFactory) -> ShopWarehouse:
    return build_shop(tmp_path_factory.mktemp("shop-warehouse"))


@pytest.fixture(scope="module")
def shop_reader(shop_warehouse: ShopWarehouse) -> Iterator[Warehouse]:
    """The generated shop's warehouse, opened read-only for one test module."""
    opened = open_warehouse(shop_warehouse.settings, read_only=True)
    yield opened
    opened.close()
