"""The CDC reader's running figures, for the live status line and the summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["ReaderStats"]


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
