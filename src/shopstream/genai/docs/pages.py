"""The documentation's pages, as Markdown: one per pipeline, one per model, and an index.

Pure functions of the facts (:class:`~.sources.DocSources`, the lineage, the code map and the
overview paragraphs): the same facts give the same bytes. Links are relative ``.md`` paths
(the site turns them into ``.html``); every diagram is Mermaid, with the same facts also as a
table so a page reads without JavaScript.

>>> mermaid_id("raw.cdc_order_items")
'raw_cdc_order_items'
>>> relative_link("models/mart/daily_sales.md", "pipelines/transform.md")
'../../pipelines/transform.md'
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shopstream.genai.docs.code_map import PIPELINES
from shopstream.genai.docs.model import ColumnRef, Lineage, PipelineCode
from shopstream.genai.docs.sources import Alert, DocSources, Model
from shopstream.quality.spec import PlannedCheck

#: Pipelines that run all the time (the others run on a schedule).
SERVICES = ("collector", "cdc", "loader")
#: More nodes than this and a Mermaid graph stops being readable: the tables still list all.
MAX_GRAPH_NODES = 40
INDEX = "index.md"


@dataclass(frozen=True)
class Page:
    #: Relative to the Markdown root (``models/mart/daily_sales.md``).
    path: str
    title: str
    markdown: str


def model_path(model: Model) -> str:
    layer = model.table.split(".", 1)[0]
    return f"models/{layer}/{model.name}.md"


def pipeline_path(name: str) -> str:
    return f"pipelines/{name}.md"


def relative_link(source: str, target: str) -> str:
    return posixpath.relpath(target, posixpath.dirname(source) or ".")


def mermaid_id(name: str) -> str:
    return re.sub(r"\W", "_", name)


def cell(text: object) -> str:
    """Text made safe for one Markdown table cell.

    >>> cell("a | b\\nc")
    'a \\\\| b c'
    """
    return " ".join(str(text).split()).replace("|", "\\|")


def _label(text: str) -> str:
    return text.replace('"', "#quot;")


def mermaid_graph(edges: Iterable[tuple[str, str]], *, highlight: str = "") -> str:
    """A left-to-right Mermaid flowchart of ``(from, to)`` edges (sorted, duplicates once)."""
    unique = sorted(set(edges))
    nodes = sorted({n for edge in unique for n in edge} | ({highlight} if highlight else set()))
    lines = ["```mermaid", "flowchart LR"]
    lines += [f'  {mermaid_id(n)}["{_label(n)}"]' for n in nodes]
    lines += [f"  {mermaid_id(a)} --> {mermaid_id(b)}" for a, b in unique]
    if highlight:
        lines.append(f"  style {mermaid_id(highlight)} stroke-width:3px")
    lines.append("```")
    return "\n".join(lines)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# -- who does what ------------------------------------------------------------------------------


def _written_pattern(table_name: str) -> re.Pattern[str]:
    """``raw.cdc_<table>`` in the code map stands for every captured table's raw table.

    >>> bool(_written_pattern("raw.cdc_<table>").match("raw.cdc_orders"))
    True
    """
    parts = re.split(r"<[^>]+>", table_name)
    return re.compile(r"\w+".join(re.escape(p) for p in parts) + "$")


def writers(table_name: str, pipelines: Mapping[str, PipelineCode]) -> list[str]:
    """The pipelines that write ``table_name`` (the transform writes every model's table)."""
    return sorted(
        name
        for name, code in pipelines.items()
        if any(_written_pattern(w).match(table_name) for w in code.tables_written)
    )


def checks_on(table_name: str, checks: Sequence[PlannedCheck]) -> list[PlannedCheck]:
    """The quality checks that watch ``table_name``: its own, and others' that read it (a
    relationship to it, a rule's SQL naming it)."""
    found = []
    for check in checks:
        options = check.spec.options
        mentioned = table_name == options.get("to") or re.search(
            rf"\b{re.escape(table_name)}\b", str(options.get("sql", ""))
        )
        if check.table == table_name or mentioned:
            found.append(check)
    return found


def alert_pipelines(alert: Alert, pipelines: Mapping[str, PipelineCode]) -> list[str]:
    """The pipelines an alert is about: those whose metrics its expression reads, those its
    group or ``job`` matcher names, and for the batch-run alerts the batch pipelines."""
    found = set()
    for name, code in pipelines.items():
        if any(
            re.search(rf"\b{re.escape(m)}(_total|_created|_bucket|_count|_sum)?\b", alert.expr)
            for m in code.metrics
        ):
            found.add(name)
        if alert.group.rsplit(".", 1)[-1] == name or re.search(rf"shopstream_{name}_", alert.expr):
            found.add(name)
        for matcher in re.findall(r'job=~?"([^"]+)"', alert.expr):
            if re.fullmatch(matcher, name):
                found.add(name)
    for table_name in sorted(alert_tables(alert)):
        # A raw table's own metric (its freshness): about the pipelines that write it.
        found |= set(writers(table_name, pipelines))
    if "shopstream_pipeline_last_" in alert.expr:
        # Pushed by every batch run (record-run): the transform and quality runs.
        found |= {"transform", "quality"} & set(pipelines)
    if 'namespace="shopstream"' in alert.expr and not found:
        # Any pod of the platform: the long-running services are the pods.
        found |= set(SERVICES) & set(pipelines)
    return sorted(found)


def alert_tables(alert: Alert) -> set[str]:
    """The raw tables an alert's ``table="x"`` matchers name (empty: it names none).

    >>> sorted(alert_tables(Alert("A", "g", "critical", 'm{table="events"} > 1', "", "")))
    ['raw.events']
    """
    return {f"raw.{name}" for name in re.findall(r'table="(\w+)"', alert.expr)}


def alerts_of(
    pipeline: str, sources: DocSources, pipelines: Mapping[str, PipelineCode]
) -> list[Alert]:
    return [a for a in sources.alerts if pipeline in alert_pipelines(a, pipelines)]


# -- shared sections ----------------------------------------------------------------------------


def _freshness_rows(tables: Iterable[str], checks: Sequence[PlannedCheck]) -> list[list[str]]:
    rows = []
    for table_name in tables:
        for check in checks:
            if check.table != table_name or check.spec.kind != "freshness":
                continue
            options = check.spec.options
            warn, fail = options.get("warn_after_minutes"), options.get("fail_after_minutes")
            column = check.table_spec.landed_column or "?"
            rows.append(
                [
                    table_name,
                    f"newest {column}",
                    f"{warn} min" if warn is not None else "-",
                    f"{fail} min" if fail is not None else "-",
                    check.name,
                ]
            )
    return rows


def _checks_section(checks: Sequence[PlannedCheck]) -> str:
    if not checks:
        return "No quality check watches it."
    rows = [
        [
            c.name,
            c.spec.kind,
            c.table,
            c.spec.column or "",
            c.spec.severity or "(the kind's default)",
            c.spec.description or "",
        ]
        for c in sorted(checks, key=lambda c: c.name)
    ]
    return table(["check", "kind", "table", "column", "severity", "what it says"], rows)


def _alerts_section(alerts: Sequence[Alert], runbooks: Mapping[str, str]) -> str:
    if not alerts:
        return "No alert watches it directly."
    parts = [
        table(
            ["alert", "severity", "fires when", "for"],
            [[a.name, a.severity, a.summary, a.for_ or "at once"] for a in alerts],
        )
    ]
    for alert in alerts:
        parts.append(f"### {alert.name}\n\n{alert.description}\n\n```promql\n{alert.expr}\n```")
        runbook = runbooks.get(alert.name)
        if runbook:
            # The runbook's own headings sit below this one.
            parts.append("Runbook:\n\n" + re.sub(r"^(#+) ", r"#\1\1 ", runbook, flags=re.M))
        else:
            parts.append("No runbook section for it in deploy/monitoring/runbooks.md.")
    return "\n\n".join(parts)


def _schedule_rows(what: str, sources: DocSources) -> list[list[str]]:
    return [[s.where, s.when] for s in sources.schedules if s.what == what]


# -- the pages ----------------------------------------------------------------------------------


TROUBLESHOOTING = {
    "collector": [
        "Refused events are kept in `raw.dead_letter` exactly as sent, with their reason: "
        '`shopstream sql "SELECT reason, count(*) FROM raw.dead_letter GROUP BY 1"`.',
        "A 5xx from the intake routes means the sink could not make events durable: the "
        "clients retry; see EventCollectorHighErrorRate and SinkBackPressure below.",
        "Replaying raw rows is safe: staging keeps one row per `event_id`, so duplicates "
        "count once.",
    ],
    "cdc": [
        "Changes land in `raw.cdc_<table>` before their position is confirmed to PostgreSQL: "
        "after a crash the reader resumes from the slot and duplicates count once in staging.",
        "A table whose changes cannot be decoded goes to `raw.dead_letter` (source `cdc`).",
        "Re-snapshot a table when its raw history is incomplete: `cdc.snapshot_mode` "
        "(`initial`, `never`, `when_needed`) decides what `shopstream cdc` snapshots at start.",
        "A replication slot that nobody reads retains WAL on the database: see "
        "CdcSlotRetainedWalHigh below.",
    ],
    "loader": [
        "Messages the loader cannot decode or the warehouse refuses are written to "
        "`raw.dead_letter` and acknowledged: the topic keeps flowing.",
        "A stalled loader shows as LoaderNotProgressing / LoaderConsumerLagHigh below; "
        "restarting it resumes from the committed offsets (Kafka) or unacknowledged "
        "messages (Pub/Sub); duplicates count once after staging.",
    ],
    "transform": [
        "Rebuild one model and what depends on it: `shopstream transform --select <model>+`.",
        "Incremental models re-read `transform.lookback_days` days for late data; rebuild "
        "them from raw with `shopstream transform --full-refresh`.",
        "Transforming again, or after raw rows are replayed, changes nothing.",
    ],
    "quality": [
        "Run a subset of the checks: `shopstream quality run --select <name prefix>`.",
        "Every result is stored in `monitoring.data_quality_checks`; the report explains "
        "what warned or failed.",
    ],
}


def _table_link(page: str, table_name: str, models: Mapping[str, Model]) -> str:
    """A link from ``page`` to the table's model page (a raw table has none: its name)."""
    model = models.get(table_name)
    if model is None or model_path(model) == page:
        return f"`{table_name}`"
    return f"[{table_name}]({relative_link(page, model_path(model))})"


def pipeline_page(
    name: str,
    code: PipelineCode,
    sources: DocSources,
    lineage: Lineage,
    pipelines: Mapping[str, PipelineCode],
    overview: str,
) -> Page:
    path = pipeline_path(name)
    models = {m.table: m for m in sources.models}
    written = _tables_written(code, sources, models)
    checks = sources.checks.checks()

    def link(table_name: str) -> str:
        return _table_link(path, table_name, models)

    reverse: dict[str, set[str]] = {}
    for child, parents in lineage.tables.items():
        for parent in parents:
            reverse.setdefault(parent, set()).add(child)
    own = [(name, t) for t in written] + [(name, s) for s in code.sinks]
    own += [(transport, name) for transport in code.reads_from]
    edges = own + [(t, child) for t in written for child in sorted(reverse.get(t, ()))]
    if len({n for e in edges for n in e}) > MAX_GRAPH_NODES:
        edges = own

    parts = [f"# Pipeline: {name}", overview, f"From the code: {code.summary}"]
    parts.append("## How it starts")
    if code.entry_points:
        commands = sorted(code.entry_points.items())
        parts.append(table(["command", "what it does"], [[f"`{c}`", h] for c, h in commands]))
    else:
        parts.append("No command of its own: another command runs it.")
    parts.append("## Data flow and lineage")
    parts.append(mermaid_graph(edges, highlight=name))
    rows = [
        [link(t), ", ".join(link(c) for c in sorted(reverse.get(t, ()))) or "-"] for t in written
    ]
    parts.append(table(["writes", "read next by"], rows) if rows else "It writes no table.")
    if code.reads_from:
        parts.append("Records are read from: " + ", ".join(f"`{s}`" for s in code.reads_from) + ".")
    if code.sinks:
        parts.append("Records also go to: " + ", ".join(f"`{s}`" for s in code.sinks) + ".")
    parts.append("## Schedules and freshness")
    if name in SERVICES:
        parts.append(
            "A long-running service: it runs all the time (`shopstream run`, or its "
            "own command above)."
        )
    schedule_rows = _schedule_rows(name, sources)
    if schedule_rows:
        parts.append(table(["where", "when"], schedule_rows))
    freshness = _freshness_rows(written, checks)
    parts.append(
        table(["table", "measures", "warn after", "fail after", "check"], freshness)
        if freshness
        else "No freshness check on the tables it writes."
    )
    parts.append("## Schemas of the tables it writes")
    parts.append(_schemas_section(path, code, written, sources, models))
    parts.append("## Quality checks on what it writes")
    guarding = {c.name: c for t in written for c in checks if c.table == t}
    parts.append(_checks_section(list(guarding.values())))
    parts.append("## Settings it reads")
    parts.append(
        "\n".join(f"- `{s}`" for s in code.settings_read) if code.settings_read else "None."
    )
    parts.append("## Metrics it exports")
    parts.append("\n".join(f"- `{m}`" for m in code.metrics) if code.metrics else "None.")
    parts.append("## Modules")
    parts.append("\n".join(f"- `{m}`" for m in code.modules))
    parts.append("## Alerts and runbooks")
    parts.append(_alerts_section(alerts_of(name, sources, pipelines), sources.runbooks))
    parts.append("## Troubleshooting")
    parts.append("\n".join(f"- {line}" for line in TROUBLESHOOTING.get(name, [])) or "-")
    return Page(path, f"Pipeline: {name}", _joined(parts))


def _schemas_section(
    path: str,
    code: PipelineCode,
    written: Sequence[str],
    sources: DocSources,
    models: Mapping[str, Model],
) -> str:
    """Each table a pipeline writes: its description and columns (types from the warehouse,
    descriptions from the YAML). A model's schema is on its own page: a link to it."""
    if not written:
        return "It writes no table."
    parts = []
    by_model = [t for t in written if t in models]
    if by_model:
        parts.append(
            table(
                ["table", "description"],
                [[_table_link(path, t, models), sources.descriptions.get(t, "")] for t in by_model],
            )
        )
    for name in (t for t in written if t not in models):
        columns = sources.tables.get(name, ())
        about = sources.descriptions.get(name, "")
        rows = [[f"`{c.name}`", c.type or "?", c.description] for c in columns]
        parts.append(
            "\n\n".join(
                p
                for p in (
                    f"### {name}",
                    about,
                    table(["column", "type", "description"], rows)
                    if rows
                    else "The warehouse has no such table yet.",
                )
                if p
            )
        )
    return "\n\n".join(parts)


def _tables_written(
    code: PipelineCode, sources: DocSources, models: Mapping[str, Model]
) -> list[str]:
    """The concrete tables a pipeline writes: patterns (``raw.cdc_<table>``) expanded against
    the known tables; the transform writes every model's table."""
    known = set(sources.tables) | set(models)
    found = set()
    for written in code.tables_written:
        pattern = _written_pattern(written)
        matches = {t for t in known if pattern.match(t)}
        found |= matches or ({written} if "<" not in written else set())
    if code.name == "transform":
        found |= set(models)
    return sorted(found)


def model_page(
    model: Model,
    sources: DocSources,
    lineage: Lineage,
    pipelines: Mapping[str, PipelineCode],
    overview: str,
    lineage_notes: Sequence[str] = (),
) -> Page:
    """``lineage_notes``: what the lineage could not trace about this model (also listed on
    the index)."""
    path = model_path(model)
    models = {m.table: m for m in sources.models}

    def link(table_name: str) -> str:
        return _table_link(path, table_name, models)

    upstream = sorted(lineage.upstream_tables(model.table))
    downstream = sorted(lineage.downstream_tables(model.table))
    direct_down = sorted(c for c, parents in lineage.tables.items() if model.table in parents)
    edges = [
        (parent, child)
        for child in [model.table, *upstream]
        for parent in lineage.tables.get(child, ())
    ] + [(model.table, child) for child in direct_down]
    if len({n for e in edges for n in e}) > MAX_GRAPH_NODES:
        edges = [(p, model.table) for p in lineage.tables.get(model.table, ())]
        edges += [(model.table, child) for child in direct_down]

    parts = [f"# {model.table}", overview]
    if model.description:
        parts.append(f"From the model's YAML: {model.description}")
    transform_link = f"[transform]({relative_link(path, pipeline_path('transform'))})"
    parts.append(
        table(
            ["", ""],
            [
                ["materialized", model.materialized],
                ["SQL", f"`{model.path}`"],
                ["built by", transform_link],
            ],
        )
    )
    parts.append("## Columns")
    column_rows = []
    for column in model.columns:
        ref = ColumnRef(model.table, column.name)
        computed = lineage.columns.get(ref)
        origin = (
            "-"
            if computed is None
            else ", ".join(f"{c.table}.{c.column}" for c in computed) or "(a constant or count)"
        )
        column_rows.append([f"`{column.name}`", column.type or "?", column.description, origin])
    parts.append(table(["column", "type", "description", "computed from"], column_rows))
    parts.append("## Lineage")
    parts.append(mermaid_graph(edges, highlight=model.table))
    parts.append(
        table(
            ["direction", "tables"],
            [
                [
                    "reads directly",
                    ", ".join(link(t) for t in lineage.tables.get(model.table, ())) or "-",
                ],
                ["upstream, all the way to raw", ", ".join(link(t) for t in upstream) or "-"],
                ["downstream, all the way", ", ".join(link(t) for t in downstream) or "-"],
            ],
        )
    )
    parts.append("### Column lineage")
    column_edges = [
        (f"{c.table}.{c.column}", f"{model.table}.{column.name}")
        for column in model.columns
        for c in lineage.columns.get(ColumnRef(model.table, column.name), ())
    ]
    if column_edges and len({n for e in column_edges for n in e}) <= MAX_GRAPH_NODES * 2:
        parts.append(mermaid_graph(column_edges))
    raw_rows = []
    for column in model.columns:
        ref = ColumnRef(model.table, column.name)
        if ref not in lineage.columns:
            continue
        origins = sorted(
            f"{c.table}.{c.column}"
            for c in lineage.upstream_columns(ref)
            if c.table.startswith("raw.")
        )
        raw_rows.append([f"`{column.name}`", ", ".join(origins) or "-"])
    parts.append(
        table(["column", "raw columns it comes from"], raw_rows)
        if raw_rows
        else "No column-level lineage for this model."
    )
    if lineage_notes:
        notes_link = f"[the index's lineage notes]({relative_link(path, INDEX)}#lineage-notes)"
        parts.append(
            f"What the lineage could not trace (also in {notes_link}):\n\n"
            + "\n".join(f"- {cell(n)}" for n in lineage_notes)
        )
    all_checks = sources.checks.checks()
    checks = checks_on(model.table, all_checks)
    # What guards a mart is mostly upstream: the staging and raw tables it is computed from.
    upstream_checks = {
        c.name: c
        for t in upstream
        for c in checks_on(t, all_checks)
        if c.name not in {own.name for own in checks}
    }
    parts.append("## Freshness and schedules")
    schedule_rows = _schedule_rows("transform", sources)
    parts.append("Rebuilt by the transform:\n\n" + table(["where", "when"], schedule_rows))
    # Its data is as fresh as the raw tables it comes from: their SLAs are its own.
    raw_upstream = [t for t in upstream if t.startswith("raw.")]
    freshness = _freshness_rows([model.table, *raw_upstream], all_checks)
    parts.append(
        table(["table", "measures", "warn after", "fail after", "check"], freshness)
        if freshness
        else "No freshness check on it or on the raw tables it comes from."
    )
    parts.append("## Quality checks that guard it")
    parts.append("On this table:\n\n" + _checks_section(checks))
    if upstream_checks:
        parts.append(
            "On the tables it is computed from:\n\n"
            + _checks_section(list(upstream_checks.values()))
        )
    if model.tests:
        parts.append(
            "dbt tests run with every build: " + ", ".join(f"`{t}`" for t in model.tests) + "."
        )
    parts.append("## Related alerts")
    related = _model_alerts(
        model, upstream, [*checks, *upstream_checks.values()], sources, pipelines
    )
    if related:
        parts.append(
            table(
                ["alert", "severity", "why it concerns this table", "runbook"],
                [
                    [a.name, a.severity, why, _runbook_link(path, a, pipeline)]
                    for a, why, pipeline in related
                ],
            )
        )
    else:
        parts.append("None.")
    parts.append("## Troubleshooting")
    rebuild = f"`shopstream transform --select {model.name}+`"
    lines = [f"Rebuild it and what reads it: {rebuild}."]
    if model.materialized == "incremental":
        lines.append(
            "Incremental: each run recomputes the days touched by data received within "
            "`transform.lookback_days`; `--full-refresh` rebuilds it from raw."
        )
    raw_inputs = raw_upstream
    if raw_inputs:
        lines.append(
            "Missing rows upstream? Look for them in `raw.dead_letter` and at the freshness "
            "of " + ", ".join(f"`{t}`" for t in raw_inputs) + " (`monitoring.pipeline_freshness`)."
        )
    parts.append("\n".join(f"- {line}" for line in lines))
    return Page(path, model.table, _joined(parts))


def _runbook_link(path: str, alert: Alert, pipeline: str) -> str:
    target = relative_link(path, pipeline_path(pipeline))
    return f"[{alert.name}]({target}#{alert.name.lower()})"


def _model_alerts(
    model: Model,
    upstream: Sequence[str],
    checks: Sequence[PlannedCheck],
    sources: DocSources,
    pipelines: Mapping[str, PipelineCode],
) -> list[tuple[Alert, str, str]]:
    """(alert, why, the pipeline page that carries its runbook) for the alerts that concern a
    model: those of the transform that builds it, of the pipelines that write the raw tables
    it comes from, and the quality alert when checks guard it."""
    reasons: dict[str, tuple[Alert, str, str]] = {}
    feeders = {"transform": "the transform builds it"}
    for raw in (t for t in upstream if t.startswith("raw.")):
        for writer in writers(raw, pipelines):
            feeders.setdefault(writer, f"{writer} writes {raw}, which it comes from")
    if checks:
        feeders["quality"] = f"{len(checks)} quality checks guard it"
    for pipeline, why in feeders.items():
        for alert in alerts_of(pipeline, sources, pipelines):
            if pipeline == "quality" and "quality" not in alert.expr:
                continue  # only the quality checks' own alert is about this table
            watched = alert_tables(alert)
            if watched and not watched & {model.table, *upstream}:
                continue  # about another raw table than the ones it comes from
            reasons.setdefault(alert.name, (alert, why, pipeline))
    return [reasons[n] for n in sorted(reasons)]


def index_page(
    sources: DocSources,
    pipelines: Mapping[str, PipelineCode],
    lineage: Lineage,
    notes: Sequence[str],
    overview: str,
) -> Page:
    parts = ["# shopstream: pipelines and data", overview, "## Pipelines"]
    parts.append(
        table(
            ["pipeline", "what it does"],
            [
                [f"[{name}]({pipeline_path(name)})", pipelines[name].summary]
                for name in PIPELINES
                if name in pipelines
            ],
        )
    )
    parts.append("## Models")
    parts.append(
        table(
            ["table", "materialized", "description"],
            [
                [f"[{m.table}]({model_path(m)})", m.materialized, m.description]
                for m in sources.models
            ],
        )
    )
    parts.append("## Lineage of every model")
    edges = [(p, c) for c, parents in lineage.tables.items() for p in parents]
    parts.append(mermaid_graph(edges))
    parts.append("## Schedules")
    parts.append(
        table(["what", "where", "when"], [[s.what, s.where, s.when] for s in sources.schedules])
    )
    parts.append("## Where these pages come from")
    parts.append("\n".join(f"- {line}" for line in sources.provenance))
    if notes:
        parts.append("## Lineage notes")
        parts.append("\n".join(f"- {cell(n)}" for n in notes))
    return Page(INDEX, "shopstream documentation", _joined(parts))


def _joined(parts: Iterable[str]) -> str:
    return "\n\n".join(p.strip() for p in parts if p and p.strip()) + "\n"


__all__ = [
    "INDEX",
    "Page",
    "alert_pipelines",
    "alert_tables",
    "alerts_of",
    "checks_on",
    "index_page",
    "mermaid_graph",
    "mermaid_id",
    "model_page",
    "model_path",
    "pipeline_page",
    "pipeline_path",
    "relative_link",
    "table",
    "writers",
]
