"""The image's HEALTHCHECK: ask the running role's ``/healthz``.

The role is the command PID 1 runs (``shopstream collector``, ``shopstream cdc``,
``shopstream load ...``); the port is the one its settings give (the same environment
variables the pod sets). One-shot commands (``transform``, ``quality run``) serve nothing and
pass. Standard library only: the runtime image has no curl.

    python healthcheck.py            # exit 0: healthy, 1: not
    python healthcheck.py collector  # the role given instead of read from /proc/1/cmdline
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

#: role -> (environment variable holding the port, the port when it is unset)
PORTS = {
    "collector": ("SHOPSTREAM_COLLECTOR__PORT", "8080"),
    "cdc": ("SHOPSTREAM_CDC__METRICS_PORT", "9464"),
    "load": ("SHOPSTREAM_LOADER__METRICS_PORT", "9464"),
}


def running_role() -> str | None:
    """The shopstream command of PID 1 (``collector`` for ``.../shopstream collector``)."""
    try:
        argv = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [arg.decode(errors="replace") for arg in argv if arg]
    for index, word in enumerate(words):
        if word.endswith("shopstream") and index + 1 < len(words):
            return words[index + 1]
    return None


def health_url(role: str | None, environ: dict[str, str]) -> str | None:
    """Where ``role`` answers /healthz, or None when it serves nothing."""
    if role not in PORTS:
        return None
    variable, default = PORTS[role]
    return f"http://127.0.0.1:{environ.get(variable) or default}/healthz"


def main(argv: list[str]) -> int:
    role = argv[1] if len(argv) > 1 else running_role()
    url = health_url(role, dict(os.environ))
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=4) as answer:  # noqa: S310 (a fixed http URL)
            return 0 if answer.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
