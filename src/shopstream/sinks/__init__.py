"""Where accepted records go, picked by URL from a registry.

``SHOPSTREAM_SINK_URL=warehouse`` (the default) names the sink by its scheme: :data:`SINKS`
maps each scheme to the module that implements it, imported only when used. That module's
``BACKEND`` is a :class:`SinkBackend`: how to open it from the URL, the settings and the
platform's warehouse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shopstream.sinks.base import Sink, SinkError, SinkUnavailable
from shopstream.warehouse import registered

if TYPE_CHECKING:
    from shopstream.config import Settings
    from shopstream.warehouse import Warehouse

__all__ = ["SINKS", "Sink", "SinkBackend", "SinkError", "SinkUnavailable", "open_sink"]

#: URL scheme -> the module whose ``BACKEND`` implements it. One line per sink.
SINKS: dict[str, str] = {
    "warehouse": "shopstream.sinks.warehouse",
    "kafka": "shopstream.sinks.kafka",
    "pubsub": "shopstream.sinks.pubsub",
}
SINK_EXAMPLE = "warehouse"


@dataclass(frozen=True)
class SinkBackend:
    scheme: str
    #: ``open(url, settings, warehouse)``: a sink, not yet started. ``warehouse`` is the
    #: platform's when ``needs_warehouse``, else None (the process does not open one).
    open: Callable[..., Sink]
    #: The sink writes into the platform's warehouse: a process with this sink opens it
    #: (and, for DuckDB's file, takes its lock). A broker's sink does not: a collector
    #: publishing to Kafka or Pub/Sub leaves the warehouse to the loader.
    needs_warehouse: bool = False


def sink_backend(url: str) -> SinkBackend:
    """The sink ``url`` names (a ValueError naming the known schemes if none does)."""
    return registered(url, SINKS, "sink URL", SINK_EXAMPLE, SinkBackend)


def open_sink(settings: Settings, warehouse: Warehouse | None, url: str | None = None) -> Sink:
    """The sink ``url`` (default: ``settings.sink_url``) names, writing (if it is the
    warehouse sink) to ``warehouse``; not yet started."""
    url = url or settings.sink_url
    backend = sink_backend(url)
    if backend.needs_warehouse and warehouse is None:
        raise ValueError(f"the {backend.scheme} sink needs the warehouse opened")
    return backend.open(url, settings, warehouse if backend.needs_warehouse else None)
