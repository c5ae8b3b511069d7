"""Work that must run in the process that owns the DuckDB file (a dbt transform, say).

DuckDB lets one process open the file; a second ``duckdb.connect`` in that same process, with
the same configuration, shares its instance. So work such as ``dbt build`` runs where the file
is held: in the writer process when there is one (in a thread beside the appends, see
:mod:`.writer_process`), else in the platform's own process. Callers name the work as
``"module:function"``; it is called as ``function(warehouse, argument, emit)``, where ``emit``
sends progress back to the caller, and its return value is the answer (both picklable).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

#: Only functions of this package may be named (the name crosses a process boundary).
_ALLOWED_PREFIX = "shopstream."


def owner_job(target: str) -> Callable[[Any, Any, Callable[[Any], None]], Any]:
    """The function ``target`` (``"shopstream.module:function"``) names."""
    module_name, _, function_name = target.partition(":")
    if not module_name.startswith(_ALLOWED_PREFIX) or not function_name:
        raise ValueError(
            f"not a shopstream job: {target!r} (expected 'shopstream.module:function')"
        )
    function = getattr(importlib.import_module(module_name), function_name)
    if not callable(function):
        raise TypeError(f"{target} is not a function")
    return function


__all__ = ["owner_job"]
