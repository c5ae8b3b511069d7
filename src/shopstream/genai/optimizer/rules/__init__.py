"""The optimizer's rules: each finds one anti-pattern in a parsed query.

A rule is a function ``(query, settings) -> iterable of Finding``, registered by its id in its
module's ``RULES``; :data:`RULES` gathers them. Rules never run SQL: they read the query's tree
and the catalog (:class:`~shopstream.genai.optimizer.catalog.Catalog`). A rule whose fix is
mechanical puts the rewritten query in ``Finding.rewrite``; the optimizer verifies it before
anyone sees it.

- :mod:`.scans`: what a query reads (SELECT *, partition and cluster filters, wildcard tables,
  ORDER BY / LIMIT, COUNT(DISTINCT));
- :mod:`.joins`: how it combines (cartesian and exploding joins, repeated scans, self-joins,
  DISTINCT over a fan-out, NOT IN with NULLs).

What the rules share: :mod:`.evidence` (a finding's evidence and wording), :mod:`.columns` (the
columns a query really needs), :mod:`.table_filters` and :mod:`.partition_filters` (which
filters reach a table, and whether they prune), :mod:`.tree_edits` (a rewrite made on a copy),
:mod:`.join_sources`, :mod:`.join_rewrites` and :mod:`.join_self` (the join rules' sources,
rewrites and self-joins).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from shopstream.config import OptimizerSettings
from shopstream.genai.optimizer.findings import Finding
from shopstream.genai.optimizer.query import Query
from shopstream.genai.optimizer.rules import joins, scans

Rule = Callable[[Query, OptimizerSettings], Iterable[Finding]]

#: Every rule, by id.
RULES: dict[str, Rule] = {**scans.RULES, **joins.RULES}


def find_all(query: Query, settings: OptimizerSettings | None = None) -> list[Finding]:
    """Every rule's findings on ``query``, in the order they appear in the text."""
    settings = settings or OptimizerSettings()
    found = [f for rule in RULES.values() for f in rule(query, settings)]
    return sorted(found, key=lambda f: (f.position.offset if f.position else -1, f.rule))
