"""Rules on joins (see :mod:`shopstream.genai.optimizer.rules`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shopstream.genai.optimizer.rules import Rule

RULES: dict[str, Rule] = {}
