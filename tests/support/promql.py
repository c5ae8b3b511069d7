"""deploy/monitoring's Python modules, loaded by path for the deploy tests (deploy/ is no
package): the PromQL tokenizer (promql.py) and the renderer (build.py, whose rule functions
need only PyYAML, so the project's virtualenv can call them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"


def load_monitoring_module(name: str) -> ModuleType:
    """deploy/monitoring/<name>.py as a module named ``monitoring_<name>``."""
    spec = importlib.util.spec_from_file_location(f"monitoring_{name}", MONITORING / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The tokenizer: ``promql.metric_names(expr)``, ``promql.family(sample)``.
promql = load_monitoring_module("promql")
