"""The CDC reader's running figures, for the live status line and the summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

__all__ = ["ReaderStats", "ReaderStatus"]


@dataclass
class ReaderStats:
    """Changes per table and op, and reconnects, are counted by the Prometheus metrics
    (shopstream_cdc_changes_total, shopstream_cdc_reconnects_total), not here."""

    changes: int = 0
    transactions: int = 0
    snapshot_rows: int = 0
    dead_letters: int = 0
    confirmed_lsn: int = 0
    last_commit_us: int | None = None
    lag_bytes: int | None = None
    retained_bytes: int | None = None
    state: str = "starting"
    #: When the last transaction committed here (monotonic): heartbeats and --idle-exit.
    last_change_at: float = field(default_factory=time.monotonic)

    @property
    def lag_seconds(self) -> float | None:
        if self.last_commit_us is None:
            return None
        return max(0.0, time.time() - self.last_commit_us / 1_000_000)

    def snapshot(self) -> ReaderStatus:
        """The figures as they are now, frozen (the reader thread keeps counting)."""
        return ReaderStatus(
            **{f.name: getattr(self, f.name) for f in fields(self)}, lag_seconds=self.lag_seconds
        )


@dataclass(frozen=True)
class ReaderStatus:
    """A frozen copy of :class:`ReaderStats`, what the CLI renders."""

    changes: int
    transactions: int
    snapshot_rows: int
    dead_letters: int
    confirmed_lsn: int
    last_commit_us: int | None
    lag_bytes: int | None
    retained_bytes: int | None
    state: str
    last_change_at: float
    lag_seconds: float | None
