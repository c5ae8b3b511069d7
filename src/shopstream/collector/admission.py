"""What a request must pass before the collector reads its body.

Reading a body costs memory for as long as the request lives, so the decisions that need
only the headers come first: the browser origin (:class:`OriginPolicy`) and the room left in
the intake's memory budget (:class:`BodyBudget`). Both live in one place so that the fast
path and the FastAPI routes apply the same rules.

>>> budget = BodyBudget(10)
>>> held = budget.reserve(4, keyless=True)
>>> budget.reserve(4, keyless=True) is None  # keyless bodies may hold half of the budget
True
>>> budget.reserve(6, keyless=False) is not None
True
"""

from __future__ import annotations

from typing import Any


class Reservation:
    """Bytes of the budget held by one request until :meth:`release`."""

    def __init__(self, budget: BodyBudget, size: int, keyless: bool) -> None:
        self.budget, self.size, self.keyless = budget, size, keyless

    def release(self) -> None:
        self.budget.in_use -= self.size
        if self.keyless:
            self.budget.keyless_in_use -= self.size
        self.size = 0


class BodyBudget:
    """Bytes of request bodies in flight, bounded.

    Requests whose write key can only be in their body ("keyless": nobody known yet) may hold
    at most half of it, so strangers cannot keep clients with a key header out. Used from the
    event loop only, hence no lock.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.keyless_total = total // 2
        self.in_use = 0
        self.keyless_in_use = 0

    def reserve(self, size: int, *, keyless: bool) -> Reservation | None:
        if self.in_use + size > self.total:
            return None
        if keyless and self.keyless_in_use + size > self.keyless_total:
            return None
        self.in_use += size
        if keyless:
            self.keyless_in_use += size
        return Reservation(self, size, keyless)


class OriginPolicy:
    """Which browser origins may send events (``collector.cors_origins``; ``*``: any).

    A request without an ``Origin`` header is not a browser's cross-origin request (server
    SDKs, curl) and is not affected.
    """

    def __init__(self, origins: list[str]) -> None:
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)

    def allows(self, origin: str | None) -> bool:
        return origin is None or self.any_origin or origin in self.origins

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """The headers of an allowed simple (non-preflight) request, as CORSMiddleware sets."""
        if origin is None or not self.allows(origin):
            return {}
        if self.any_origin:
            return {"access-control-allow-origin": "*"}
        return {"access-control-allow-origin": origin, "vary": "Origin"}

    def middleware_options(self) -> dict[str, Any]:
        """Starlette's CORSMiddleware options for the same policy (it answers preflights)."""
        return {
            "allow_origins": sorted(self.origins),
            "allow_methods": ["POST", "GET", "OPTIONS"],
            "allow_headers": ["*"],
        }
