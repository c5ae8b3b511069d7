"""What the package declares is there: an optional extra comes with the code that uses it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "shopstream"


def _has_module(name: str) -> bool:
    return any(PACKAGE.rglob(f"{name}.py")) or any(path.is_dir() for path in PACKAGE.rglob(name))


def test_every_optional_extra_has_its_code() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    promised = []
    for extra, requirements in extras.items():
        if extra == "dev":  # the test and lint tools, not a feature
            continue
        # An umbrella extra ("all") only gathers others: each of those is checked itself.
        members = [m for r in requirements for m in re.findall(r"shopstream\[([^\]]*)\]", r)]
        if members and len(members) == len(requirements):
            promised += [m for group in members for m in group.split(",") if m not in extras]
        elif not _has_module(extra):
            promised.append(extra)
    assert not promised, f"extras without a module of that name in src/shopstream: {promised}"
