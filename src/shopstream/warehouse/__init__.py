"""Warehouse backends behind one protocol, picked by URL from a registry.

``SHOPSTREAM_WAREHOUSE_URL=duckdb:///data/shopstream.duckdb`` names the backend by its scheme:
:data:`WAREHOUSES` maps each scheme to the module that implements it, imported only when
used (a backend's client library is not loaded unless it is chosen). That module's
``BACKEND`` is a :class:`WarehouseBackend`: its capabilities and how to open it from the URL
and the settings.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from shopstream.warehouse.base import (
    LAYERS,
    Capabilities,
    QueryError,
    Warehouse,
    WarehouseError,
    WarehouseInUse,
    WarehouseUnavailable,
)

if TYPE_CHECKING:
    from shopstream.config import Settings

__all__ = [
    "LAYERS",
    "WAREHOUSES",
    "Capabilities",
    "QueryError",
    "Warehouse",
    "WarehouseBackend",
    "WarehouseError",
    "WarehouseInUse",
    "WarehouseUnavailable",
    "open_warehouse",
    "registered",
    "url_scheme",
    "warehouse_backend",
]

B = TypeVar("B")

#: URL scheme -> the module whose ``BACKEND`` implements it. One line per backend.
WAREHOUSES: dict[str, str] = {
    "duckdb": "shopstream.warehouse.duckdb",
    "bigquery": "shopstream.warehouse.bigquery",
}
WAREHOUSE_EXAMPLE = "duckdb:///path/to/file.duckdb"


@dataclass(frozen=True)
class WarehouseBackend:
    scheme: str
    capabilities: Capabilities
    #: ``open(url, settings, read_only)``: a warehouse ready to use (layers not yet ensured).
    open: Callable[[str, Settings, bool], Warehouse]


def url_scheme(url: str, registry: Mapping[str, str], what: str, example: str) -> str:
    """The scheme of ``url`` (``duckdb`` in ``duckdb:///x``; a bare word is its own scheme,
    as in ``warehouse``), if ``registry`` knows it; otherwise a ValueError naming the known
    ones."""
    scheme = url.split("://", 1)[0] if "://" in url else url
    if scheme not in registry:
        known = ", ".join(registry)
        raise ValueError(
            f"{what} {url!r} has an unknown scheme {scheme!r}: known schemes are {known} "
            f"(e.g. {example})"
        )
    return scheme


def registered(url: str, registry: Mapping[str, str], what: str, example: str, kind: type[B]) -> B:
    """The ``BACKEND`` of the module ``registry`` holds for ``url``'s scheme, imported now
    (a ValueError naming the known schemes if it holds none)."""
    module = registry[url_scheme(url, registry, what, example)]
    backend = importlib.import_module(module).BACKEND
    if not isinstance(backend, kind):  # a registry line naming the wrong module
        raise TypeError(f"{module}.BACKEND is not a {kind.__name__}")
    return backend


def warehouse_backend(url: str) -> WarehouseBackend:
    """The backend ``url`` names (a ValueError naming the known schemes if none does)."""
    return registered(url, WAREHOUSES, "warehouse URL", WAREHOUSE_EXAMPLE, WarehouseBackend)


def open_warehouse(settings: Settings, *, read_only: bool = False) -> Warehouse:
    """Open the warehouse ``settings.warehouse`` points at.

    Raises :class:`WarehouseInUse` when a single-writer warehouse is held by another process.
    """
    url = settings.warehouse
    return warehouse_backend(url).open(url, settings, read_only)
