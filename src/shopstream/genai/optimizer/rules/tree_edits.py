"""Rewrites as edits of a copy: the query the user gave stays as parsed (every rule reads it),
and a rule's rewrite is that query with one node replaced or removed.

>>> import sqlglot
>>> tree = sqlglot.parse_one("select a from t where b = 1 order by a")
>>> edited = replaced(tree, tree.args["order"], None)
>>> edited.sql(), tree.sql()
('SELECT a FROM t WHERE b = 1', 'SELECT a FROM t WHERE b = 1 ORDER BY a')
"""

from __future__ import annotations

from typing import TypeVar, cast

from sqlglot import exp

Node = TypeVar("Node", bound=exp.Expr)


def _path(node: exp.Expr) -> list[tuple[str, int | None]]:
    """The arg keys (and list indexes) from the root down to ``node``."""
    steps: list[tuple[str, int | None]] = []
    here: exp.Expr = node
    while here.parent is not None and here.arg_key is not None:
        parent_value = here.parent.args.get(here.arg_key)
        steps.append((here.arg_key, here.index if isinstance(parent_value, list) else None))
        here = here.parent
    return steps[::-1]


def counterpart(copy: exp.Expr, node: Node) -> Node:
    """The node of ``copy`` (a copy of ``node``'s root) at ``node``'s place: the one node both
    the scan and the join rules edit in their rewrites."""
    here = copy
    for key, index in _path(node):
        value = here.args[key]
        here = value[index] if index is not None else value
    return cast(Node, here)  # same place in an identical tree: same type


def replaced(
    tree: exp.Expression, node: exp.Expression, new: exp.Expression | None
) -> exp.Expression:
    """A copy of ``tree`` with ``node`` replaced by ``new`` (None: removed)."""
    copy = tree.copy()
    target = counterpart(copy, node)
    if new is None:
        target.pop()
        return copy
    if target is copy:
        return new.copy()
    target.replace(new.copy())
    return copy
