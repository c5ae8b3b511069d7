"""The warehouse's files hold personal data (IPs, user ids): only their owner may read them.

New directories are created 0700 and files 0600 (DuckDB creates its files with the process's
umask, so the writer runs under umask 077). What already exists with wider modes:

- files of the warehouse (the database, its WAL) are tightened to 0600, with a warning;
- a directory is left as it is, with a warning: it may be a mounted volume or hold the local
  PostgreSQL, whose own OS user must be able to enter it. ``chmod 700`` it if it is ours alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
_umask_lock = threading.RLock()  # reentrant: a DDL inside an append


def private_directory(path: Path) -> None:
    """Create ``path`` (and missing parents) 0700; warn if it exists open to others."""
    with private_umask():
        path.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "%s is open to other users (mode %o) and holds the warehouse's personal data; "
            "`chmod 700 %s` unless something else there needs it open",
            path,
            mode,
            path,
        )


def tighten(path: Path) -> None:
    """Make an existing warehouse file 0600 (it may predate this rule)."""
    with contextlib.suppress(FileNotFoundError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(0o600)
            log.warning("%s was mode %o; made it 0600 (it holds personal data)", path, mode)


def warehouse_files(path: Path) -> list[Path]:
    """The database file and the WAL DuckDB keeps beside it."""
    return [path, path.with_name(path.name + ".wal")]


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created meanwhile, by any thread of this process, are private to its user.

    The umask is per process: threads take turns under a lock, so one cannot restore a
    value another has just set. A writer process of its own sets it once instead.
    """
    with _umask_lock:
        previous = os.umask(PRIVATE_UMASK)
        try:
            yield
        finally:
            os.umask(previous)
