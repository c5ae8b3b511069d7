"""What every benchmark prints around its figures: how busy the machine was, and a progress bar.

A figure measured on a busy machine is not the code's: the scripts print the load at the start
and the end so a reader can tell.
"""

from __future__ import annotations

import os

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def machine_load() -> str:
    busy = psutil.cpu_percent(interval=1.0)
    one, five, _ = os.getloadavg()
    return f"{psutil.cpu_count()} cores, {busy:.0f}% busy, load average {one:.2f} / {five:.2f}"


def progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
