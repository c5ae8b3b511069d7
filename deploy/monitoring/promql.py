"""Metric names in a PromQL expression, without a PromQL parser (none is installed here).

A small tokenizer: string literals, label matchers ``{...}`` and ranges ``[...]`` are skipped
(a ``__name__="..."`` matcher still names its metric), identifiers followed by ``(`` are
functions or aggregations, keywords and the label lists after ``by``/``without``/``on``/
``ignoring``/``group_left``/``group_right`` are skipped, Grafana variables (``$x``, ``${x}``)
are skipped. What remains are the selectors' metric names, as Prometheus stores them (with
their ``_total``/``_bucket``/``_count``/``_sum`` suffix).

>>> sorted(metric_names('sum by (route) (rate(shopstream_x_total{status=~"5.."}[5m])) > 0'))
['shopstream_x_total']
>>> family("shopstream_collector_request_seconds_bucket")
'shopstream_collector_request_seconds'
"""

from __future__ import annotations

import re

_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    }
)
#: Keywords followed by a parenthesised label list (not an expression).
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_GROUPING_FIRST = re.compile(r"(by|without)\s*\(", re.IGNORECASE)
_UNIT = re.compile(r"(ms|[smhdwy])(?![A-Za-z0-9_:])|(ms|[smhdwy])(?=\d)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_VARIABLE = re.compile(r"\$(\{[^}]*\}|[A-Za-z0-9_]+)")
_NAME_MATCHER = re.compile(r"""__name__\s*=\s*(["'`])([A-Za-z_:][A-Za-z0-9_:]*)\1""")
#: Sample-name suffixes of counters and histograms/summaries (family name + suffix).
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _close(text: str, start: int, opening: str, closing: str) -> int:
    """Index just past the bracket that closes ``text[start]``, skipping quoted strings."""
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char in "\"'`":
            i = _string_end(text, i)
            continue
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {opening!r} in {text!r}")


def _string_end(text: str, start: int) -> int:
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i] == "\\" and quote != "`":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    raise ValueError(f"unterminated string in {text!r}")


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects.

    >>> sorted(metric_names('a_total / on (job) group_left (x) b offset 5m'))
    ['a_total', 'b']
    >>> sorted(metric_names('{__name__="up", job="x"} == 0 and absent(c{d="e"})'))
    ['c', 'up']
    """
    names: set[str] = set()
    i, previous = 0, ""
    while i < len(expr):
        char = expr[i]
        if char.isspace():
            i += 1
            continue
        if char == "#":  # a comment, to the end of the line
            end = expr.find("\n", i)
            i = len(expr) if end < 0 else end
            continue
        if char in "\"'`":
            i = _string_end(expr, i)
            continue
        if char == "{":
            end = _close(expr, i, "{", "}")
            names.update(m.group(2) for m in _NAME_MATCHER.finditer(expr[i:end]))
            i = end
            continue
        if char == "[":
            i = _close(expr, i, "[", "]")
            continue
        if char == "(" and previous in _LABEL_LISTS:
            i = _close(expr, i, "(", ")")
            previous = ""
            continue
        variable = _VARIABLE.match(expr, i)
        if variable:
            i = variable.end()
            continue
        number = _NUMBER.match(expr, i)
        if number and not _IDENT.match(expr, i):
            i = number.end()
            # a duration's unit glued to its number (offset 5m, offset -1h30m)
            unit = _UNIT.match(expr, i)
            if unit:
                i = unit.end()
            continue
        ident = _IDENT.match(expr, i)
        if ident:
            word = ident.group()
            i = ident.end()
            after = expr[i:].lstrip()
            if word.lower() in _KEYWORDS:
                previous = word.lower()
                continue
            previous = word
            # a function, an aggregation, or an aggregation with its grouping first
            if after.startswith("(") or _GROUPING_FIRST.match(after):
                continue
            names.add(word)
            continue
        previous = char
        i += 1
    return names


def family(name: str) -> str:
    """The metric family a sample name belongs to (``x_total`` -> ``x``)."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


__all__ = ["SUFFIXES", "family", "metric_names"]
