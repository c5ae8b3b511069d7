"""Doctest collection over the package (``--doctest-modules``, see pyproject's pytest options).

Not part of the package (the wheel ships ``src/shopstream`` only); pytest loads it for anything
collected under ``src/``.

Collecting doctests imports every module of the package, so a module must do nothing when it is
imported (``__main__.py``, the one that does, is never collected by pytest). A module that needs
an optional extra (``pip install 'shopstream[bigquery]'``, ...) cannot be imported after a plain
``make install``: its doctests are reported as skipped, naming the missing package, instead of
breaking collection. Any other import error, including a ``shopstream`` module that is missing,
still fails the run.
"""

from __future__ import annotations

import importlib
from collections.abc import Generator
from pathlib import Path

import pytest

_SRC = Path(__file__).resolve().parent
_PACKAGE = "shopstream"


class _NeedsMissingPackage(pytest.File):
    """Stands in for a module's doctests when the module cannot be imported without an extra."""

    reason = ""

    def collect(self) -> list[pytest.Item]:
        pytest.skip(self.reason)


def _missing_package(file_path: Path) -> str | None:
    """The third-party package that ``file_path`` fails to import for lack of, if any."""
    parts = file_path.resolve().relative_to(_SRC).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    try:
        importlib.import_module(".".join(parts))
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.partition(".")[0] != _PACKAGE:
            return exc.name
        return None  # one of ours is missing: the doctest collector imports again and reports it
    except Exception:
        return None  # a broken module: likewise reported by the doctest collector, as an error
    return None


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(
    file_path: Path, parent: pytest.Collector
) -> Generator[None, list[pytest.Collector | None], list[pytest.Collector | None]]:
    nodes = yield
    # Only files some plugin collects (the doctest one, under --doctest-modules) are imported.
    if file_path.suffix != ".py" or not any(nodes):
        return nodes
    missing = _missing_package(file_path)
    if missing is None:
        return nodes
    node = _NeedsMissingPackage.from_parent(parent, path=file_path)
    where = file_path.resolve().relative_to(_SRC.parent)
    node.reason = f"doctests of {where} not run: it needs {missing!r}, which is not installed"
    return [node]
