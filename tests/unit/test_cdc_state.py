"""The CDC reader's state file (how far the snapshot got), on a real directory."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopstream.cdc.state import SavedState, StateStore


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask, under which a plain write makes a file readable by everyone."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_nothing_saved_reads_as_the_empty_state(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "missing-dir", "s").load() == SavedState()


def test_saved_state_reads_back_and_names_the_slot_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "data", "shop_slot")
    state = SavedState(slot="shop_slot", snapshot_started=True, snapshot_done=False)
    store.save(state)
    assert store.path == tmp_path / "data" / "cdc-shop_slot.json"
    assert store.load() == state
    store.save(SavedState(slot="shop_slot", snapshot_started=True, snapshot_done=True))
    assert store.load().snapshot_done is True


def test_a_file_written_by_an_earlier_version_still_reads(tmp_path: Path) -> None:
    # The reader wrote free-form JSON before the store existed; extra keys are ignored.
    (tmp_path / "cdc-s.json").write_text(
        '{"slot": "s", "snapshot_started": true, "snapshot_done": true, "other": 1}'
    )
    assert StateStore(tmp_path, "s").load() == SavedState("s", True, True)


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", '"text"'])
def test_an_unreadable_file_reads_as_nothing_saved(tmp_path: Path, text: str) -> None:
    # The safe reading: no snapshot known to be done, so when_needed snapshots again.
    (tmp_path / "cdc-s.json").write_text(text)
    assert StateStore(tmp_path, "s").load() == SavedState()


@pytest.mark.usefixtures("open_umask")
def test_the_file_is_private_to_its_owner(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "s")
    # A temporary file left by a write that was killed, open to everyone.
    stale = tmp_path / "cdc-s.tmp"
    stale.write_text("{half a wr")
    stale.chmod(0o644)
    store.save(SavedState("s", False, True))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.save(SavedState("s", True, True))  # replacing keeps it private
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load() == SavedState("s", True, True)
    # Written beside and renamed over: no temporary file is left, no other file appears.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdc-s.json"]
