"""Finding a node again in a copy of the tree, to rewrite the copy and leave the query alone.

>>> from sqlglot import parse_one, exp
>>> tree = parse_one("select a from t where b in (select b from u)")
>>> copy = tree.copy()
>>> inner = list(tree.find_all(exp.Select))[1]
>>> twin(inner, tree, copy).sql(), twin(inner, tree, copy) is inner
('SELECT b FROM u', False)
"""

from __future__ import annotations

from typing import TypeVar

from sqlglot import exp

Node = TypeVar("Node", bound=exp.Expr)


def twin(node: Node, tree: exp.Expr, copy: exp.Expr) -> Node:
    """The node of ``copy`` at the place ``node`` has in ``tree`` (``copy`` = ``tree.copy()``)."""
    for original, copied in zip(tree.walk(), copy.walk(), strict=True):
        if original is node:
            return copied  # type: ignore[return-value]  # same place, same type
    raise ValueError(f"{node.sql()!r} is not part of the query")
