"""The BigQuery backend: the production shape's warehouse, a service (``bigquery://<project>``).

URL forms::

    bigquery://<project>?location=EU
    bigquery://<project>?location=EU&endpoint=http://127.0.0.1:9050&grpc=127.0.0.1:9060

The first reaches Google with application default credentials (``GOOGLE_APPLICATION_CREDENTIALS``
or the pod's workload identity: no key ever passes through shopstream's settings). The second
is an emulator (bqemulator): its REST endpoint and its Storage API's plaintext gRPC address,
with anonymous credentials (only then).

    >>> where = parse_url("bigquery://shop-prod?location=EU")
    >>> where.project, where.location, where.emulated
    ('shop-prod', 'EU', False)

Modules here:

- :mod:`.tables`: raw tables' BigQuery schemas, partitioning and clustering, derived from the
  Arrow schemas of :mod:`shopstream.events.raw`; the checks that name a bad column;
- :mod:`.appends`: the two ways rows are appended (Storage Write API, legacy streaming inserts);
- :mod:`.database`: :class:`~.database.BigQueryWarehouse`, the Warehouse protocol.

The client libraries (google-cloud-bigquery, -storage: the ``bigquery`` extra) are imported only
when a warehouse is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from shopstream.warehouse import WarehouseBackend
from shopstream.warehouse.base import Capabilities, Warehouse

if TYPE_CHECKING:
    from shopstream.config import Settings

EXAMPLE = "bigquery://<gcp project>?location=<region>"

CAPABILITIES = Capabilities(
    # A service: any number of processes write and read it at once.
    single_writer_process=False,
    # Each table's batch lands whole (a pending write stream, committed at once), but
    # BigQuery commits streams per table: two tables cannot land in one commit.
    atomic_multi_table_append=False,
    checkpoints=False,
    # A dry run says how many bytes a query would scan (and so what it would cost).
    dry_run_cost=True,
)


@dataclass(frozen=True)
class BigQueryLocation:
    """Where a BigQuery warehouse is, from its URL."""

    project: str
    location: str | None = None
    #: An emulator's REST endpoint (``http://127.0.0.1:9050``); None: Google's.
    endpoint: str | None = None
    #: An emulator's Storage API address (``127.0.0.1:9060``, plaintext gRPC).
    grpc: str | None = None

    @property
    def emulated(self) -> bool:
        return self.endpoint is not None


def parse_url(url: str) -> BigQueryLocation:
    """The project, location and (for an emulator) endpoints a ``bigquery://`` URL names.

    >>> parse_url("bigquery://p?endpoint=http://127.0.0.1:9050&grpc=127.0.0.1:9060").grpc
    '127.0.0.1:9060'
    >>> parse_url("bigquery://p?grpc=127.0.0.1:9060")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: bigquery://p?grpc=127.0.0.1:9060: grpc= names an emulator's ... give endpoint= too
    """
    parts = urlsplit(url)
    if parts.scheme != "bigquery" or not parts.netloc:
        raise ValueError(f"not a BigQuery warehouse URL: {url!r} (expected {EXAMPLE})")
    if parts.path not in ("", "/"):
        raise ValueError(
            f"{url}: a BigQuery URL names a project, not a dataset (the layers raw, staging, "
            f"mart and monitoring are its datasets): {EXAMPLE}"
        )
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"location", "endpoint", "grpc"}
    if unknown:
        raise ValueError(
            f"{url}: unknown parameter(s) {', '.join(sorted(unknown))} "
            "(known: location, endpoint, grpc)"
        )
    endpoint = query.get("endpoint")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"{url}: endpoint= must be an http(s):// URL, not {endpoint!r}")
    if "grpc" in query and endpoint is None:
        raise ValueError(
            f"{url}: grpc= names an emulator's Storage API (plaintext gRPC): give endpoint= too"
        )
    return BigQueryLocation(parts.netloc, query.get("location"), endpoint, query.get("grpc"))


def _open(url: str, settings: Settings, read_only: bool) -> Warehouse:
    from shopstream.warehouse.bigquery.database import BigQueryWarehouse

    return BigQueryWarehouse(parse_url(url), settings.bigquery, read_only=read_only)


BACKEND = WarehouseBackend("bigquery", CAPABILITIES, _open)

__all__ = ["BACKEND", "CAPABILITIES", "EXAMPLE", "BigQueryLocation", "parse_url"]
