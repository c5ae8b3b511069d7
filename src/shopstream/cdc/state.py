"""What the CDC reader remembers between runs, beside the slot: how far its snapshot got,
and the last schema version recorded per raw table.

The slot itself keeps the stream's position (its confirmed LSN); what PostgreSQL cannot keep
is whether the snapshot read in the slot's exported snapshot finished. That lives in
``<data_dir>/cdc-<slot>.json`` (Debezium keeps the same in its offset store).

The schema versions live in ``<data_dir>/cdc-<slot>-schemas.json`` (:class:`SchemaStore`),
written only once the rows of ``raw.source_schemas`` they name are durable, so the file is
never ahead of the warehouse: after a crash a version is at worst recorded twice (the same
version and fingerprint; the table is at-least-once), never skipped. A file of its own, not a
field of the snapshot state: a slot dropped and made anew starts its snapshot state afresh,
but the raw tables, and so their versions, go on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shopstream.cdc.schemas import SchemaVersion

__all__ = ["SavedState", "SchemaStore", "StateStore"]


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
        _replace_file(self.path, text)


class SchemaStore:
    """The last durable schema version per raw table: ``{raw_table: [version, fingerprint]}``.

    A missing file reads as nothing recorded; an unreadable one is an error (reading it as
    nothing would start every table at version 1 again, beside the versions in the warehouse).
    """

    def __init__(self, data_dir: Path, slot: str) -> None:
        self.path = data_dir / f"cdc-{slot}-schemas.json"

    def load(self) -> dict[str, SchemaVersion]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
            return {
                str(table): SchemaVersion(int(version), str(fingerprint))
                for table, (version, fingerprint) in data.items()
            }
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"{self.path} is not a schema version file ({exc}); move it away only if "
                "raw.source_schemas is empty too"
            ) from exc

    def save(self, versions: Mapping[str, SchemaVersion]) -> None:
        text = json.dumps({table: list(v) for table, v in sorted(versions.items())})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _replace_file(self.path, text)


def _replace_file(path: Path, text: str) -> None:
    """Replace the file whole: written beside it, synced, then renamed over it, so a crash
    leaves the old content or the new one, never half a file."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(fd, 0o600)  # a temporary file a killed write left keeps its own mode
        handle.write(text)
        handle.flush()
        os.fsync(fd)
    os.replace(tmp, path)
