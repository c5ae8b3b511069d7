"""Backends by URL: the settings' URLs pick the warehouse and the sink from the registries."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shopstream.config import Settings
from shopstream.sinks import SINKS, open_sink, sink_backend
from shopstream.sinks.warehouse import WarehouseSink
from shopstream.warehouse import (
    WAREHOUSES,
    Capabilities,
    WarehouseError,
    open_warehouse,
    warehouse_backend,
)
from shopstream.warehouse.duckdb.database import DuckDBWarehouse

DUCKDB = Capabilities(
    single_writer_process=True,
    atomic_multi_table_append=True,
    checkpoints=True,
    dry_run_cost=False,
)


def test_an_unknown_warehouse_scheme_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(warehouse_url="bigquery://project/dataset")
    message = str(refused.value)
    assert "warehouse_url 'bigquery://project/dataset'" in message
    assert "unknown scheme 'bigquery'" in message
    assert f"known schemes are {', '.join(WAREHOUSES)}" in message
    assert "duckdb:///path/to/file.duckdb" in message
    with pytest.raises(ValueError, match="known schemes are duckdb"):
        warehouse_backend("/data/shopstream.duckdb")  # a path is not a URL


def test_an_unknown_sink_scheme_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(sink_url="nats://broker:4222")
    assert "unknown scheme 'nats'" in str(refused.value)
    assert f"known schemes are {', '.join(SINKS)}" in str(refused.value)


def test_the_default_urls_name_duckdb_in_the_data_dir_and_the_warehouse_sink() -> None:
    settings = Settings(data_dir=Path("/srv/shop"))
    assert settings.warehouse == "duckdb:////srv/shop/shopstream.duckdb"
    assert settings.sink_url == "warehouse"
    assert sink_backend(settings.sink_url).scheme == "warehouse"


def test_a_duckdb_url_opens_the_duckdb_backend_with_its_capabilities(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    backend = warehouse_backend(url)
    assert backend.scheme == "duckdb"
    assert backend.capabilities == DUCKDB
    settings = Settings(warehouse_url=url, sink={"writer_process": False})
    warehouse = open_warehouse(settings)
    try:
        assert isinstance(warehouse, DuckDBWarehouse)
        assert warehouse.path == tmp_path / "w.duckdb"
        assert warehouse.capabilities == DUCKDB
        warehouse.ensure_layers()
        sink = open_sink(settings, warehouse)
        assert isinstance(sink, WarehouseSink)
        assert sink.warehouse is warehouse
    finally:
        warehouse.close()


def test_reading_a_warehouse_that_is_not_there_yet_says_so(tmp_path: Path) -> None:
    settings = Settings(warehouse_url=f"duckdb:///{tmp_path / 'none.duckdb'}")
    with pytest.raises(WarehouseError, match=r"no warehouse at .*none\.duckdb yet"):
        open_warehouse(settings, read_only=True)
    assert not (tmp_path / "none.duckdb").exists()
