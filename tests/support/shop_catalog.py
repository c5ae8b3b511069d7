"""The shop's warehouse tables as a :class:`Catalog`, for the optimizer's rule tests (no
warehouse needed): ``load_catalog`` of the tests/support/shop_warehouse.py shop, stored in
shop_catalog.json: columns, types and nullability as DuckDB reports them after ``shopstream
transform`` on generated history, row counts of that history, and the layout BigQuery gives them
(partitioning and clustering from deploy's raw layout and the models' configs; unique keys from
the contracts and the models' grains). tests/integration/test_optimizer_catalog.py checks that
it still equals the loaded catalog. Sizes are left out: the cost tests measure them on a real
warehouse.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from shopstream.genai.optimizer.catalog import Catalog, Column, TableInfo

_FILE = Path(__file__).with_name("shop_catalog.json")


@cache
def shop_catalog() -> Catalog:
    tables = json.loads(_FILE.read_text(encoding="utf-8"))
    return Catalog(
        {
            name: TableInfo(
                name=name,
                columns=tuple(Column(c, t, nullable) for c, t, nullable in table["columns"]),
                rows=table["rows"],
                partition_by=table["partition_by"],
                cluster_by=tuple(table["cluster_by"]),
                unique_key=tuple(table["unique_key"]),
            )
            for name, table in sorted(tables.items())
        }
    )
