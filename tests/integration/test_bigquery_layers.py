"""Each role makes sure only of the BigQuery layers it writes (``ROLE_LAYERS``), proven on
bqemulator: in production every role runs under a least-privilege service account
(deploy/terraform) that may not see the other datasets, and BigQuery answers 403 for those.

One emulator for the module; every test starts from a project with no datasets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as google_errors

from shopstream.config import Settings
from shopstream.platform import Parts, Platform
from shopstream.warehouse import open_warehouse
from shopstream.warehouse.base import ROLE_LAYERS, WarehouseUnavailable
from shopstream.warehouse.bigquery.database import BigQueryWarehouse
from tests.support.bigquery_emulator import BigQueryEmulator, bigquery_emulator
from tests.support.collector import free_port

__all__ = ["bigquery_emulator"]  # the fixture, used by name

RAW_TABLES = {"events", "dead_letter", "source_schemas"}


@pytest.fixture
def project(bigquery_emulator: BigQueryEmulator) -> Iterator[Any]:
    """The emulator's project with no datasets; yields a real client on it."""
    client = bigquery_emulator.client()
    for dataset in list(client.list_datasets()):
        client.delete_dataset(dataset.reference, delete_contents=True, not_found_ok=True)
    yield client
    client.close()


def datasets(client: Any) -> set[str]:
    return {d.dataset_id for d in client.list_datasets()}


def tables(client: Any, dataset: str) -> set[str]:
    return {t.table_id for t in client.list_tables(dataset)}


def settings_for(emulator: BigQueryEmulator, data_dir: Path) -> Settings:
    return Settings(
        warehouse_url=emulator.warehouse_url(),
        data_dir=data_dir,
        bigquery={"append": "streaming_insert"},
    )


def test_a_loader_opens_on_a_project_where_only_raw_exists_and_makes_nothing_else(
    bigquery_emulator: BigQueryEmulator,
    project: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loader's process as `shopstream load --from ...` builds it (the Platform), on the
    operator's project holding `raw` alone: it starts, makes the raw tables, and never
    creates (nor looks at) staging, mart or monitoring."""
    project.create_dataset(f"{bigquery_emulator.project}.raw")
    settings = settings_for(bigquery_emulator, tmp_path)
    # Production's source; its clients connect only when the loader runs (it does not here):
    # nothing listens on the emulator address, and nothing needs to.
    pytest.importorskip("google.cloud.pubsub_v1", reason="the pubsub extra is not installed")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    parts = Parts(collector=False, loader_url=f"pubsub://{bigquery_emulator.project}")
    assert Platform.layers_written(settings, parts) == ("raw",)
    platform = Platform(settings, parts)
    try:
        assert isinstance(platform.warehouse, BigQueryWarehouse)
    finally:
        platform.close()
    assert datasets(project) == {"raw"}
    assert tables(project, "raw") >= RAW_TABLES


def test_the_quality_role_makes_monitoring_only_and_the_transform_all_four(
    bigquery_emulator: BigQueryEmulator, project: Any, tmp_path: Path
) -> None:
    settings = settings_for(bigquery_emulator, tmp_path)
    warehouse = open_warehouse(settings)
    try:
        warehouse.ensure_layers(ROLE_LAYERS["quality"])
        assert datasets(project) == {"monitoring"}
        warehouse.ensure_layers(ROLE_LAYERS["beam"])
        assert datasets(project) == {"monitoring", "raw", "mart"}
        warehouse.ensure_layers(ROLE_LAYERS["transform"])
        assert datasets(project) == {"raw", "staging", "mart", "monitoring"}
        assert tables(project, "raw") >= RAW_TABLES
    finally:
        warehouse.close()
    quality = Parts(collector=False, schedule_quality=True)
    loader_and_transform = Parts(collector=False, loader_url="pubsub://p", schedule_transforms=True)
    # A quality process whose sink is a broker: it writes monitoring alone.
    broker_sink = settings.model_copy(update={"sink_url": "kafka://127.0.0.1:9"})
    assert Platform.layers_written(broker_sink, quality) == ("monitoring",)
    assert Platform.layers_written(settings, loader_and_transform) == (
        "raw",
        "staging",
        "mart",
        "monitoring",
    )


class Denying:
    """The google client at the warehouse's boundary, answering 403 where IAM would.

    Every call goes to the real client on the emulator, except that the names in ``hidden``
    answer 403 to a look-up (an account that may not read their metadata) and the names in
    ``no_create`` answer 403 to a create (an account without the create permission)."""

    def __init__(self, real: Any, hidden: set[str], no_create: set[str]) -> None:
        self.real = real
        self.hidden = hidden
        self.no_create = no_create
        self.created: list[str] = []

    @staticmethod
    def _name(reference: Any) -> str:
        table = getattr(reference, "table_id", None)
        return f"{reference.dataset_id}.{table}" if table else str(reference.dataset_id)

    def _look(self, call: Any, reference: Any, **kwargs: Any) -> Any:
        if self._name(reference) in self.hidden:
            raise google_errors.Forbidden(
                f"Access Denied: {self._name(reference)}: Permission denied or it may not exist"
            )
        return call(reference, **kwargs)

    def _make(self, call: Any, definition: Any, **kwargs: Any) -> Any:
        name = self._name(definition.reference)
        if name in self.no_create:
            raise google_errors.Forbidden(f"Access Denied: {name}: Permission denied")
        self.created.append(name)
        return call(definition, **kwargs)

    def get_dataset(self, reference: Any, **kwargs: Any) -> Any:
        return self._look(self.real.get_dataset, reference, **kwargs)

    def get_table(self, reference: Any, **kwargs: Any) -> Any:
        return self._look(self.real.get_table, reference, **kwargs)

    def create_dataset(self, dataset: Any, **kwargs: Any) -> Any:
        return self._make(self.real.create_dataset, dataset, **kwargs)

    def create_table(self, table: Any, **kwargs: Any) -> Any:
        return self._make(self.real.create_table, table, **kwargs)

    def close(self) -> None:
        self.real.close()


@pytest.fixture
def denied(bigquery_emulator: BigQueryEmulator, project: Any) -> Iterator[BigQueryWarehouse]:
    """A warehouse on the emulator whose google client is a :class:`Denying` double."""
    warehouse = open_warehouse(Settings(warehouse_url=bigquery_emulator.warehouse_url()))
    assert isinstance(warehouse, BigQueryWarehouse)
    yield warehouse
    warehouse.close()


def test_a_403_on_looking_up_an_operator_provisioned_dataset_is_logged_not_fatal(
    denied: BigQueryWarehouse, project: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Real GCP IAM cannot be reached here (bqemulator has none): the 403 comes from a test
    double of the google client, at that boundary only; the tables are real, on the emulator.

    The loader's account may not read `raw`'s metadata (403): it is the operator's (Terraform
    made it), so the loader goes on to its tables, and the log names what was skipped and why.
    """
    project.create_dataset(f"{denied.project}.raw")
    client = Denying(denied.client, hidden={"raw"}, no_create={"raw"})
    denied.client = client  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, "shopstream.warehouse.bigquery.database"):
        denied.ensure_layers(ROLE_LAYERS["loader"])
    assert "raw" not in client.created  # a create would be refused too
    assert tables(project, "raw") >= RAW_TABLES
    (warning,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert f"dataset {denied.project}.raw" in warning
    assert "403 Forbidden" in warning and "deploy/terraform" in warning


def test_a_hidden_table_is_skipped_but_a_missing_one_it_may_not_create_is_fatal(
    denied: BigQueryWarehouse, project: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Real GCP IAM cannot be reached here (bqemulator has none): the 403s come from a test
    double of the google client, at that boundary only.

    A raw table the loader may not look up is skipped with a warning (appends will say if it
    is missing); one that is missing (404) and that it may not create stops the loader with an
    error naming the table, the permission and the way out."""
    project.create_dataset(f"{denied.project}.raw")
    client = Denying(
        denied.client, hidden={"raw.events"}, no_create={"raw.events", "raw.dead_letter"}
    )
    denied.client = client  # type: ignore[assignment]
    with (
        caplog.at_level(logging.WARNING, "shopstream.warehouse.bigquery.database"),
        pytest.raises(WarehouseUnavailable) as refused,
    ):
        denied.ensure_layers(ROLE_LAYERS["loader"])
    assert any(f"table {denied.project}.raw.events" in r.getMessage() for r in caplog.records)
    message = str(refused.value)
    assert f"table {denied.project}.raw.dead_letter does not exist" in message
    assert "bigquery.tables.create" in message
    assert "create it with deploy/terraform or grant" in message
    assert "roles/bigquery.dataEditor on dataset raw" in message
    assert tables(project, "raw") == set()
