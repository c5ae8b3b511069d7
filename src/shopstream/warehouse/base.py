"""The Warehouse protocol: what every warehouse backend provides (today DuckDB), the
capabilities a backend declares, and the errors callers may catch.

Adding a backend is one module implementing these methods plus one line in the registry
(:data:`shopstream.warehouse.WAREHOUSES`); see the README's "Adding a backend".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import pyarrow as pa

LAYERS = ("raw", "staging", "mart", "monitoring")

#: The layers each role makes sure of at start (``Warehouse.ensure_layers(layers)``): those it
#: writes (with ``raw``, the fixed raw tables too), under the least-privilege grants of
#: deploy/terraform. The transform gets all four: dbt writes staging, mart and monitoring and
#: reads the raw tables, which must exist. A role never looks at the other layers.
ROLE_LAYERS: dict[str, tuple[str, ...]] = {
    "loader": ("raw",),  # also a collector or CDC reader writing straight to the warehouse
    "beam": ("raw", "mart"),  # the Dataflow workers: raw rows and real-time marts
    "quality": ("monitoring",),
    "transform": LAYERS,
}


class WarehouseError(RuntimeError):
    """A warehouse operation failed; the message says what to do next."""


class QueryError(WarehouseError):
    """The query itself is wrong or not allowed (the asker's to fix, HTTP 400): bad SQL, a
    statement that is not a read, a file it may not read."""


class QueryTimeout(WarehouseError):
    """A query ran past the time limit its caller gave (``Warehouse.query(timeout_seconds=)``)
    and was stopped; nothing of it is returned."""


class WarehouseInUse(WarehouseError):
    """Another process holds a warehouse that allows one writer process
    (``capabilities.single_writer_process``): that process must answer for it."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse cannot be reached right now (its writer process is restarting, say).

    Nothing was refused: the same rows may be sent again later. Callers must not treat the
    rows as bad (no dead letters for them) and must not acknowledge them.
    """


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; callers ask these instead of checking a backend's type."""

    #: One process at a time may open the warehouse (DuckDB's file lock): the running
    #: platform answers queries for other processes (``shopstream sql``) on a local socket.
    single_writer_process: bool
    #: ``append`` of several raw tables lands all or nothing (the sink groups tables in one
    #: commit and relies on it).
    atomic_multi_table_append: bool
    #: ``checkpoint`` does useful work (the sink calls it when idle).
    checkpoints: bool
    #: A query's cost can be estimated before it runs (a dry run, as BigQuery offers).
    dry_run_cost: bool


@dataclass(frozen=True)
class WarehouseHealth:
    """``ok``: writes work. ``recovering``: they fail now but the warehouse is fixing itself
    (restarting its writer). ``failed``: it gave up; only a restart of the process helps."""

    state: Literal["ok", "recovering", "failed"] = "ok"
    reason: str = ""


class Warehouse(Protocol):
    #: What this backend can do (the same for every instance of it).
    capabilities: Capabilities

    def ensure_layers(self, layers: Collection[str] = LAYERS) -> None:
        """Create the schemas ``layers`` (all four by default) and, with ``raw``, the fixed
        raw tables. A backend with per-layer permissions (BigQuery) looks only at ``layers``
        (see :data:`ROLE_LAYERS`); one without (DuckDB) may make all four."""

    def ensure_raw_table(self, table: str) -> None:
        """Create ``raw.<table>`` (e.g. ``cdc_orders``) if it does not exist."""

    def append(self, batches: Mapping[str, pa.Table]) -> None:
        """Append Arrow batches to raw tables, all in one transaction: all land or none."""

    def append_monitoring(
        self, table: str, batch: pa.Table, *, json_columns: Collection[str] = ()
    ) -> None:
        """Append ``batch`` to ``monitoring.<table>`` (the quality agent's results and
        reports), creating the table from the batch's Arrow schema when it does not exist;
        ``json_columns`` (strings of JSON) become the warehouse's JSON type."""

    def append_mart(self, table: str, batch: pa.Table) -> None:
        """Append ``batch`` to ``mart.<table>``: marts computed outside the transform (the
        Beam pipeline's real-time aggregates), the table created from the batch's Arrow
        schema when it does not exist, as :meth:`append_monitoring` does. Arrow decimals
        become exact decimals (money); the rows land whole or not at all."""

    def query(
        self,
        sql: str,
        parameters: list[Any] | None = None,
        *,
        max_rows: int | None = None,
        timeout_seconds: float | None = None,
    ) -> pa.Table:
        """Run one read-only query; refuse anything else with :class:`QueryError`. With
        ``max_rows``, return at most ``max_rows + 1`` rows (one more than asked for says the
        result was longer). With ``timeout_seconds``, stop it after that long and raise
        :class:`QueryTimeout`."""

    def dry_run_bytes(self, sql: str, parameters: list[Any] | None = None) -> int:
        """The bytes the read ``sql`` would scan, from the warehouse's own dry run (nothing
        runs, nothing is billed). Only where ``capabilities.dry_run_cost``; elsewhere a
        :class:`QueryError`: ask the capability first."""

    def table_counts(self) -> dict[str, int]:
        """Row count of every table, as ``schema.table``."""

    def checkpoint(self) -> None:
        """Make the latest commits cheap to reopen (idle-time housekeeping)."""

    def health(self) -> WarehouseHealth:
        """Whether writes can work now (for readiness and liveness probes)."""

    def close(self) -> None: ...
