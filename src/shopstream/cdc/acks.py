"""The acknowledgement tracker: which LSN is safe to confirm to PostgreSQL, and when.

The CDC guarantee lives here: an LSN is confirmed only once every change before it is durable
in the sink. Batches are handed to the sink in order, each with the LSN that becomes safe
once it is durable (its last complete transaction's end; None when it ends mid-transaction).
They are settled oldest first: a later batch that happens to land first confirms nothing
while an earlier one is still on its way, and a batch that failed stops the settling (its
error goes up; nothing after it is confirmed, and the server sends it all again).

When nothing is pending at all (no open transaction, nothing buffered, nothing in flight),
everything the server sent is durable, so the WAL end of its last keepalive is safe too:
that keeps a slot whose tables are quiet from holding WAL.

Pure: futures in, LSNs out; the reader does the waiting and tells the server.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["AckTracker"]


def _wait(future: Future[Any]) -> None:
    future.result()


class AckTracker:
    """Batches in flight and the LSN confirmed so far (never moving backwards)."""

    def __init__(self, *, max_in_flight: int = 2, confirmed_lsn: int = 0) -> None:
        #: Batches written but not yet durable; a bound on memory.
        self.max_in_flight = max_in_flight
        #: Everything before it is durable (and may be, or has been, told to the server).
        self.confirmed_lsn = confirmed_lsn
        self._in_flight: deque[tuple[Future[Any], int | None, Callable[[], None] | None]] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def full(self) -> bool:
        """Wait for the oldest batch before handing over another."""
        return len(self._in_flight) >= self.max_in_flight

    def resume_from(self, lsn: int) -> None:
        """The slot's confirmed LSN when streaming starts: the server sends from there, so
        that much is durable (and a lower LSN could move the slot backwards)."""
        self.confirmed_lsn = max(self.confirmed_lsn, lsn)

    def submitted(
        self,
        future: Future[Any],
        safe_lsn: int | None,
        on_durable: Callable[[], None] | None = None,
    ) -> None:
        """A batch was handed to the sink; ``future`` completes once it is durable.
        ``on_durable`` is called when it settles: in submission order, after every earlier
        batch did (so a later batch landing first tells nothing before they have)."""
        self._in_flight.append((future, safe_lsn, on_durable))

    def settle(
        self,
        *,
        block: bool,
        drain: bool = False,
        wait: Callable[[Future[Any]], None] = _wait,
    ) -> int | None:
        """Take the durable batches off, oldest first; returns a newly safe LSN, or None.

        ``block``: wait (with ``wait``, which raises if the batch failed) until fewer than
        ``max_in_flight`` batches are in flight; ``drain``: until none is. A sink failure is
        raised as it is met: what settled before it stays settled, it and what follows stay
        in flight (see :meth:`clear`).
        """
        confirmed = None
        while self._in_flight:
            future, safe_lsn, on_durable = self._in_flight[0]
            if not future.done():
                if not block:
                    break
                wait(future)
            future.result()  # a failed batch: raised here, nothing after it settles
            self._in_flight.popleft()
            if on_durable is not None:
                on_durable()
            if safe_lsn is not None:
                confirmed = safe_lsn
            if block and not drain:
                block = self.full
        if confirmed is not None and confirmed > self.confirmed_lsn:
            self.confirmed_lsn = confirmed
            return confirmed
        return None

    def idle_confirm(
        self, server_wal_end: int, *, open_transaction: bool, buffered: int
    ) -> int | None:
        """The server's WAL end when nothing is pending (see the module's docstring); None
        when something is, or when it is not past what is confirmed."""
        if open_transaction or buffered or self._in_flight:
            return None
        if server_wal_end > self.confirmed_lsn:
            self.confirmed_lsn = server_wal_end
            return server_wal_end
        return None

    def clear(self) -> None:
        """The connection was lost: the server resends everything after the confirmed LSN.

        Batches already handed to the sink still land; staging drops the repeats by
        change_id.
        """
        self._in_flight.clear()
