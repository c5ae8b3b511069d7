"""The SQL optimizer's corpus (tests/optimizer_corpus/*.yml): anti-pattern queries on the
shop's tables with the rule ids each must get, and whether a rule rewrite must verify. Read by
the rule tests, the corpus test on a real warehouse, and bench/optimizer.py.

Each entry: ``name`` (unique across files), ``dialect`` (duckdb or bigquery), ``sql``,
``findings`` (exactly the rule ids expected), ``rewrite`` (a rule rewrite must verify on the
generated shop; false: none may), optional ``note``; loaded with ``file`` added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).parents[1] / "optimizer_corpus"
REQUIRED = ("name", "dialect", "sql", "findings", "rewrite")
FIELDS = {*REQUIRED, "note"}


def load_corpus(directory: Path = CORPUS, pattern: str = "*.yml") -> list[dict[str, Any]]:
    """Every entry of ``directory``/``pattern``, in file then entry order; a ValueError naming
    the file and the entry that is malformed (a field missing or unknown, a name used twice)."""
    entries: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    files = sorted(directory.glob(pattern))
    if not files:
        raise ValueError(f"no corpus files {pattern} in {directory}")
    for path in files:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        if not isinstance(loaded, list):
            raise ValueError(f"{path.name}: the corpus is a YAML list of entries")
        for number, raw in enumerate(loaded, 1):
            where = f"{path.name} entry {number}"
            missing = [k for k in REQUIRED if k not in raw]
            unknown = sorted(set(raw) - FIELDS)
            if missing or unknown:
                raise ValueError(f"{where}: missing {missing}, unknown {unknown}")
            if raw["dialect"] not in ("duckdb", "bigquery"):
                raise ValueError(f"{where}: dialect {raw['dialect']!r} (duckdb or bigquery)")
            if raw["name"] in seen:
                raise ValueError(f"{where}: name {raw['name']!r} is also in {seen[raw['name']]}")
            seen[raw["name"]] = path.name
            entries.append({**raw, "findings": list(raw["findings"] or []), "file": path.name})
    return entries
