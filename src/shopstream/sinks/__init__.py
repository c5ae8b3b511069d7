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
    "pubsub": "shopstream.sinks.pubsub",
}
SINK_EXAMPLE = "warehouse"


@dataclass(frozen=True)
class SinkBackend:
    scheme: str
    #: ``open(url, settings, warehouse)``: a sink, not yet started.
    open: Callable[[str, Settings, Warehouse], Sink]


def sink_backend(url: str) -> SinkBackend:
    """The sink ``url`` names (a ValueError naming the known schemes if none does)."""
    return registered(url, SINKS, "sink URL", SINK_EXAMPLE, SinkBackend)


def open_sink(settings: Settings, warehouse: Warehouse) -> Sink:
    """The sink ``settings.sink_url`` names, writing (if it is the warehouse sink) to
    ``warehouse``; not yet started."""
    return sink_backend(settings.sink_url).open(settings.sink_url, settings, warehouse)
