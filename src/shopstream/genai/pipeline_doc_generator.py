"""The pipeline documentation generator: ``shopstream docs build``.

:func:`build_docs` gathers the facts (:mod:`.docs.sources`: the dbt manifest and catalog, the
quality checks, the alert rules and runbooks, the schedules), derives the lineage from the
models' SQL (:mod:`.docs.lineage`) and what each pipeline's code does (:mod:`.docs.code_map`),
has the overview paragraphs written (:mod:`.docs.prose`: by the language model when one is
set, deterministic otherwise), renders one page per pipeline and per model plus an index
(:mod:`.docs.pages`) and writes them as Markdown and as a static site (:mod:`.docs.site`)::

    <out>/markdown/index.md, pipelines/<pipeline>.md, models/<layer>/<model>.md
    <out>/site/index.html, pipelines/<pipeline>.html, models/<layer>/<model>.html, style.css

``<out>`` is ``--out``, else ``docs.out_dir``, else ``<data_dir>/docs``. The same facts give
byte-identical files (no time stamps, host names or absolute paths in them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shopstream.config import Settings
    from shopstream.genai.docs.model import Lineage, PipelineCode
    from shopstream.genai.docs.pages import Page
    from shopstream.genai.docs.prose import Subject
    from shopstream.genai.docs.sources import DocSources


def docs_dir(settings: Settings, out_dir: Path | None = None) -> Path:
    return out_dir or settings.docs.out_dir or settings.data_dir / "docs"


def build_docs(
    settings: Settings,
    out_dir: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Build the documentation; the files written (sorted). Raises OutDirError (``out_dir``
    may not be written), QualityConfigError (the checks file), DocsSourceError (a source is
    missing or unreadable: the message says what to do), WarehouseError, or OSError (writing
    the pages failed)."""
    from shopstream.genai.docs.site import check_out_dir, write_site
    from shopstream.genai.docs.sources import load_sources

    emit = on_progress or (lambda _: None)
    target = docs_dir(settings, out_dir)
    check_out_dir(target)  # before dbt runs: a refused --out is said at once
    sources = load_sources(settings, emit)
    return write_site(render_pages(sources, settings, emit), target)


def render_pages(
    sources: DocSources, settings: Settings, emit: Callable[[str], None] = lambda _: None
) -> list[Page]:
    """Every page (index, pipelines, models) from the gathered facts."""
    from shopstream.genai.docs.code_map import PIPELINES, analyse_pipelines
    from shopstream.genai.docs.lineage import trace_lineage
    from shopstream.genai.docs.pages import index_page, model_page, pipeline_page
    from shopstream.genai.docs.prose import write_overviews

    emit("tracing the lineage of every model")
    traced = trace_lineage(sources.manifest, sources.table_columns(), sources.dialect)
    lineage = traced.lineage
    emit("reading the pipelines' code")
    pipelines = analyse_pipelines()
    subjects = _subjects(sources, lineage, pipelines)
    overviews = write_overviews(subjects, settings, emit)
    notes = [
        *traced.warnings,
        *(f"overview fell back to the deterministic text: {f}" for f in overviews.fallbacks),
    ]
    emit("writing the pages")
    text = overviews.text
    pages = [index_page(sources, pipelines, lineage, notes, text["index"])]
    pages += [
        pipeline_page(name, pipelines[name], sources, lineage, pipelines, text[f"pipeline:{name}"])
        for name in PIPELINES
        if name in pipelines
    ]
    pages += [
        model_page(
            m,
            sources,
            lineage,
            pipelines,
            text[f"model:{m.table}"],
            [w for w in traced.warnings if w.startswith(f"{m.table}: ")],
        )
        for m in sources.models
    ]
    return pages


def _names(items: list[str] | tuple[str, ...]) -> str:
    """
    >>> _names(["a"]), _names(["a", "b"]), _names(["a", "b", "c"]), _names([])
    ('a', 'a and b', 'a, b and c', 'nothing')
    """
    if not items:
        return "nothing"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" and {items[-1]}"


def _a(word: str) -> str:
    """
    >>> _a("incremental"), _a("table"), _a("view")
    ('an incremental', 'a table', 'a view')
    """
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _by_layer(sources: DocSources) -> str:
    """How many models each layer has: "3 in mart and 12 in staging"."""
    layers: dict[str, int] = {}
    for model in sources.models:
        layer = model.table.split(".", 1)[0]
        layers[layer] = layers.get(layer, 0) + 1
    return _names([f"{n} in {layer}" for layer, n in sorted(layers.items())])


def _subjects(
    sources: DocSources, lineage: Lineage, pipelines: Mapping[str, PipelineCode]
) -> list[Subject]:
    """Each page's facts for its overview paragraph, and the deterministic paragraph."""
    from shopstream.genai.docs.code_map import PIPELINES
    from shopstream.genai.docs.pages import alerts_of, checks_on
    from shopstream.genai.docs.prose import Subject

    checks = sources.checks.checks()
    subjects = []
    names = [n for n in PIPELINES if n in pipelines]
    facts: tuple[str, ...] = (
        f"The platform's pipelines: {_names(names)}.",
        f"The transform builds {len(sources.models)} dbt models: {_by_layer(sources)}.",
        f"{len(checks)} quality checks and {len(sources.alerts)} alerts watch the data and the "
        "pipelines.",
    )
    subjects.append(
        Subject(
            "index",
            "the shopstream data platform",
            facts,
            "shopstream takes clickstream events and the shop database's changes into the raw "
            f"layer of the warehouse ({_names(names[:3])}), builds staging and marts from them "
            "(transform) and watches the data (quality). " + " ".join(facts[1:]),
        )
    )
    for name in names:
        code = pipelines[name]
        alerts = [a.name for a in alerts_of(name, sources, pipelines)]
        written = list(code.tables_written) or ["no table"]
        facts = (
            f"What its code says: {code.summary}",
            f"It writes {_names(written)}.",
            *(
                [f"It reads its records from {_names(list(code.reads_from))}."]
                if code.reads_from
                else []
            ),
            *(
                [f"It can also send its records to {_names(list(code.sinks))}."]
                if code.sinks
                else []
            ),
            f"It is started by {_names(sorted(code.entry_points))}." if code.entry_points else "",
            f"Alerts that watch it: {_names(alerts)}.",
        )
        facts = tuple(f for f in facts if f)
        # The page quotes the code's summary right below: the paragraph need not repeat it.
        fallback = " ".join(facts[1:])
        subjects.append(Subject(f"pipeline:{name}", f"the {name} pipeline", facts, fallback))
    for model in sources.models:
        reads = list(lineage.tables.get(model.table, ()))
        read_by = sorted(c for c, parents in lineage.tables.items() if model.table in parents)
        own = checks_on(model.table, checks)
        upstream = {
            c.name for t in lineage.upstream_tables(model.table) for c in checks_on(t, checks)
        } - {c.name for c in own}
        facts = (
            f"{model.table} is {_a(model.materialized or 'dbt')} model built by the dbt transform.",
            *([f"Its YAML says: {model.description}"] if model.description else []),
            f"It reads {_names(reads)}.",
            f"It is read by {_names(read_by)}." if read_by else "No model reads it.",
            f"Quality checks: {len(own)} watch it, {len(upstream)} more the tables it is "
            "computed from.",
        )
        # The page shows the YAML's description right below: the paragraph need not repeat it.
        fallback = " ".join([facts[0], *facts[2:]] if model.description else facts)
        subjects.append(
            Subject(f"model:{model.table}", f"the table {model.table}", facts, fallback)
        )
    return subjects


__all__ = ["build_docs", "docs_dir", "render_pages"]
