"""What every peer server a test fixture starts (a model server, an emulator) shares: the tail
of its log for error messages, and a stop that waits, then kills."""

from __future__ import annotations

import subprocess
from pathlib import Path


def log_tail(path: Path, chars: int = 4000) -> str:
    """The last ``chars`` of the server's log ('' when there is none yet)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def stop_server(process: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
