"""What the CDC reader remembers between runs, beside the slot: how far its snapshot got.

The slot itself keeps the stream's position (its confirmed LSN); what PostgreSQL cannot keep
is whether the snapshot read in the slot's exported snapshot finished. That lives in
``<data_dir>/cdc-<slot>.json`` (Debezium keeps the same in its offset store).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SavedState", "StateStore"]


@dataclass(frozen=True)
class SavedState:
    """``slot`` is the slot the snapshot flags belong to (None: nothing saved yet)."""

    slot: str | None = None
    snapshot_started: bool = False
    snapshot_done: bool = False


class StateStore:
    """One slot's state file: load (missing or unreadable reads as nothing saved) and save."""

    def __init__(self, data_dir: Path, slot: str) -> None:
        self.path = data_dir / f"cdc-{slot}.json"

    def load(self) -> SavedState:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return SavedState()
        if not isinstance(data, dict):
            return SavedState()
        slot = data.get("slot")
        return SavedState(
            slot=slot if isinstance(slot, str) else None,
            snapshot_started=bool(data.get("snapshot_started")),
            snapshot_done=bool(data.get("snapshot_done")),
        )

    def save(self, state: SavedState) -> None:
        """Replace the file whole: written beside it, synced, then renamed over it, so a
        crash leaves the old state or the new one, never half a file. Private (0600), as
        everything in the data directory."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {
                "slot": state.slot,
                "snapshot_started": state.snapshot_started,
                "snapshot_done": state.snapshot_done,
            }
        )
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(fd, 0o600)  # a temporary file a killed write left keeps its own mode
            handle.write(text)
            handle.flush()
            os.fsync(fd)
        os.replace(tmp, self.path)
