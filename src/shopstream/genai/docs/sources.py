"""What the documentation is built from, gathered in one place.

- The dbt manifest (models, their descriptions, compiled SQL for the lineage, dbt tests) and
  catalog (every table's columns and types as the warehouse has them). When this process can
  open the warehouse, ``dbt docs generate`` runs in the transform workspace
  (:func:`shopstream.transform.runner.generate_docs`). When a running platform holds the DuckDB
  file, the manifest its last transform left in ``<data_dir>/transform/project/target/`` is
  used, and the column types come from the warehouse's ``information_schema`` (asked through
  the platform's query socket).
- The quality checks (:func:`shopstream.quality.spec.load_config`: the defaults plus
  ``quality.checks_file``).
- The alert rules and runbooks (``deploy/monitoring/``) and the Airflow DAG schedules
  (``deploy/airflow/dags/``): the wheel carries copies under ``shopstream/_deploy/``; an
  editable install reads them from the source checkout's ``deploy/``.

>>> [a.name for a in parse_alerts('''groups:
...   - name: shopstream.cdc
...     rules:
...       - alert: CdcReplicationLagHigh
...         expr: shopstream_cdc_replication_lag_seconds > 300
...         labels: {severity: warning}
...         annotations: {summary: CDC is behind}
... ''')]
['CdcReplicationLagHigh']
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shopstream.genai.docs.lineage import relation_name

if TYPE_CHECKING:
    from shopstream.config import Settings
    from shopstream.quality.spec import QualityConfig

#: Files of deploy/ the documentation reads, as paths under deploy/ (and under shopstream/_deploy/
#: in the wheel: pyproject.toml's force-include).
ALERT_RULES = "monitoring/rules/shopstream.rules.yml"
RUNBOOKS = "monitoring/runbooks.md"
DAGS = "airflow/dags"
#: What was read where, said in the docs (never an absolute path: rebuilds stay identical).
PACKAGED = "the installed package (shopstream/_deploy/)"
CHECKOUT = "the source checkout (deploy/)"


class DocsSourceError(RuntimeError):
    """A source the documentation needs is missing; the message says what to run."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str = ""
    description: str = ""


@dataclass(frozen=True)
class Model:
    """One dbt model, as the docs show it."""

    name: str
    #: ``layer.table`` (``mart.daily_sales``).
    table: str
    description: str
    materialized: str
    #: Where its SQL lives in the project (``models/marts/daily_sales.sql``).
    path: str
    columns: tuple[Column, ...]
    #: The dbt tests attached to it (``not_null_daily_sales_order_date``), sorted.
    tests: tuple[str, ...] = ()


@dataclass(frozen=True)
class Alert:
    name: str
    group: str
    severity: str
    expr: str
    summary: str
    description: str
    for_: str = ""


@dataclass(frozen=True)
class Schedule:
    """When something runs: ``what`` (transform, quality, docs), ``where`` and ``when``."""

    what: str
    where: str
    when: str


@dataclass(frozen=True)
class DocSources:
    #: sqlglot dialect of the warehouse's SQL (duckdb, bigquery).
    dialect: str
    manifest: Mapping[str, Any]
    models: tuple[Model, ...]
    #: Every known table (``layer.table``) -> its columns, types and descriptions.
    tables: Mapping[str, tuple[Column, ...]]
    #: Table -> its description (the sources' and the models' YAML): shown with its schema.
    descriptions: Mapping[str, str]
    checks: QualityConfig
    alerts: tuple[Alert, ...]
    #: Alert name -> its runbook section (Markdown, without its heading).
    runbooks: Mapping[str, str]
    schedules: tuple[Schedule, ...]
    #: Where each source came from, one line each (shown on the index page).
    provenance: tuple[str, ...] = field(default_factory=tuple)

    def table_columns(self) -> dict[str, list[str]]:
        """Table -> its column names: what the lineage qualifies the models' SQL against."""
        return {table: [c.name for c in columns] for table, columns in self.tables.items()}


# -- deploy/ files -------------------------------------------------------------------------------


def _checkout_deploy() -> Path:
    import shopstream

    # src/shopstream/__init__.py -> the checkout's root, when this is an editable install.
    return Path(shopstream.__file__).resolve().parents[2] / "deploy"


def deploy_text(relative: str) -> tuple[str, str]:
    """The text of ``deploy/<relative>`` and where it was read (:data:`PACKAGED` or
    :data:`CHECKOUT`)."""
    packaged = resources.files("shopstream").joinpath("_deploy", *relative.split("/"))
    if packaged.is_file():
        return _read_deploy(packaged, relative), PACKAGED
    checkout = _checkout_deploy() / relative
    if checkout.is_file():
        return _read_deploy(checkout, relative), CHECKOUT
    raise DocsSourceError(
        f"deploy/{relative} is neither in the installed package nor in a source checkout: "
        "reinstall shopstream from its wheel (it carries the file) or run from the checkout"
    )


def _read_deploy(path: Traversable, relative: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DocsSourceError(f"cannot read deploy/{relative}: {exc}") from exc


def deploy_files(relative_dir: str, suffix: str) -> tuple[list[tuple[str, str]], str]:
    """(name, text) of the files ending in ``suffix`` directly in ``deploy/<relative_dir>``,
    sorted by name, and where they were read; none found: ``([], "")``."""
    packaged = resources.files("shopstream").joinpath("_deploy", *relative_dir.split("/"))
    if packaged.is_dir():
        entries = [e for e in packaged.iterdir() if e.is_file() and e.name.endswith(suffix)]
        where = PACKAGED
    else:
        directory = _checkout_deploy() / relative_dir
        if not directory.is_dir():
            return [], ""
        entries = [e for e in directory.iterdir() if e.is_file() and e.name.endswith(suffix)]
        where = CHECKOUT
    files = sorted((e.name, _read_deploy(e, f"{relative_dir}/{e.name}")) for e in entries)
    return files, where


def parse_alerts(text: str) -> tuple[Alert, ...]:
    """The alerting rules of a Prometheus rules file, in the file's order."""
    document = yaml.safe_load(text) or {}
    alerts: list[Alert] = []
    for group in document.get("groups", []):
        for rule in group.get("rules", []):
            if "alert" not in rule:
                continue  # a recording rule
            annotations = rule.get("annotations") or {}
            alerts.append(
                Alert(
                    name=str(rule["alert"]),
                    group=str(group.get("name", "")),
                    severity=str((rule.get("labels") or {}).get("severity", "")),
                    expr=str(rule.get("expr", "")).strip(),
                    summary=_untemplated(str(annotations.get("summary", "")).strip()),
                    description=_untemplated(
                        " ".join(str(annotations.get("description", "")).split())
                    ),
                    for_=str(rule.get("for", "")),
                )
            )
    return tuple(alerts)


def _untemplated(text: str) -> str:
    """Prometheus's annotation templates as readable placeholders: ``{{ $value | humanize }}``
    is ``[value]``, ``{{ $labels.table }}`` is ``[table]`` (not ``<table>``: Markdown viewers
    take that for an HTML tag and hide it).

    >>> _untemplated("{{ $labels.job }} is {{ $value | humanizePercentage }} down")
    '[job] is [value] down'
    """

    def placeholder(match: re.Match[str]) -> str:
        name = re.match(r"\$(?:labels\.)?(\w+)", match.group(1).strip())
        return f"[{name.group(1)}]" if name else "[value]"

    return re.sub(r"\{\{(.*?)\}\}", placeholder, text)


def parse_runbooks(text: str) -> dict[str, str]:
    """``## AlertName`` sections of the runbooks file -> their bodies.

    >>> parse_runbooks("# Runbooks\\nintro\\n## A\\nfix a\\n\\n## B\\nfix b\\n")
    {'A': 'fix a', 'B': 'fix b'}
    """
    sections: dict[str, str] = {}
    for chunk in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = chunk.partition("\n")
        sections[heading.strip()] = body.strip()
    return sections


def parse_dag_schedules(name: str, source: str) -> list[Schedule]:
    """The schedule of each ``DAG(...)`` in an Airflow DAG file, read with ``ast`` (the DAG
    files import Airflow, which is not installed beside shopstream).

    >>> parse_dag_schedules("x.py", 'DAG_ID = "d"\\nwith DAG(dag_id=DAG_ID, schedule="0 4 * * 1",'
    ...                     ' tags=["shopstream", "docs"]): pass')
    [Schedule(what='docs', where='Airflow DAG d', when='0 4 * * 1')]
    """
    tree = ast.parse(source, filename=name)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def value(node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        if isinstance(node, ast.List):
            return [value(e) for e in node.elts]
        return None

    schedules = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DAG"):
            continue
        keywords = {k.arg: value(k.value) for k in node.keywords if k.arg}
        dag_id, schedule = keywords.get("dag_id"), keywords.get("schedule")
        if not isinstance(dag_id, str) or not isinstance(schedule, str):
            continue
        tags = [t for t in keywords.get("tags") or [] if isinstance(t, str) and t != "shopstream"]
        what = tags[0] if tags else dag_id
        schedules.append(Schedule(what, f"Airflow DAG {dag_id}", schedule))
    return schedules


# -- the dbt manifest and catalog ----------------------------------------------------------------


def models_of(manifest: Mapping[str, Any], types: Mapping[str, Mapping[str, str]]) -> list[Model]:
    """The manifest's models (sorted by table), their columns typed from ``types`` (table ->
    column -> type): the warehouse's columns in its order, described from the models' YAML;
    documented columns the warehouse lacks come last, untyped."""
    nodes: Mapping[str, Any] = manifest.get("nodes", {})
    sources: Mapping[str, Any] = manifest.get("sources", {})
    tables = {uid: relation_name(n) for uid, n in {**nodes, **sources}.items() if "schema" in n}
    tests: dict[str, list[str]] = {}
    for node in nodes.values():
        if node.get("resource_type") == "test":
            attached = node.get("attached_node") or ""
            if attached:
                tests.setdefault(attached, []).append(node["name"])
    models = []
    for uid, node in nodes.items():
        if node.get("resource_type") != "model":
            continue
        table = tables[uid]
        documented = {name.lower(): c for name, c in (node.get("columns") or {}).items()}
        typed = types.get(table, {})
        names = list(typed) + [c for c in documented if c not in typed]
        columns = tuple(
            Column(
                name,
                typed.get(name, "") or str((documented.get(name) or {}).get("data_type") or ""),
                " ".join(str((documented.get(name) or {}).get("description") or "").split()),
            )
            for name in names
        )
        models.append(
            Model(
                name=str(node["name"]),
                table=table,
                description=" ".join(str(node.get("description") or "").split()),
                materialized=str((node.get("config") or {}).get("materialized", "")),
                path=str(node.get("original_file_path", "")),
                columns=columns,
                tests=tuple(sorted(tests.get(uid, []))),
            )
        )
    return sorted(models, key=lambda m: m.table)


def catalog_types(catalog: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Table -> column -> type, in the warehouse's column order, from a dbt catalog."""
    types: dict[str, dict[str, str]] = {}
    for entry in [*catalog.get("nodes", {}).values(), *catalog.get("sources", {}).values()]:
        meta = entry.get("metadata") or {}
        if "schema" not in meta or "name" not in meta:
            continue
        columns = sorted((entry.get("columns") or {}).values(), key=lambda c: c.get("index", 0))
        table = f"{meta['schema']}.{meta['name']}".lower()
        types[table] = {str(c["name"]).lower(): str(c.get("type") or "") for c in columns}
    return types


#: The warehouse's own account of its columns, for when there is no dbt catalog.
INFORMATION_SCHEMA_SQL = (
    "SELECT lower(table_schema) AS layer, lower(table_name) AS name, lower(column_name) AS col, "
    "data_type FROM information_schema.columns "
    "WHERE lower(table_schema) IN ('raw', 'staging', 'mart', 'monitoring') "
    "ORDER BY layer, name, ordinal_position"
)


def information_schema_types(rows: list[tuple[Any, ...]]) -> dict[str, dict[str, str]]:
    types: dict[str, dict[str, str]] = {}
    for layer, name, column, data_type in rows:
        types.setdefault(f"{layer}.{name}", {})[str(column)] = str(data_type)
    return types


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DocsSourceError(
            f"no {what} at {path}: run `shopstream transform` first (it leaves the dbt "
            "manifest in the transform workspace), then build the docs again"
        ) from None
    except (OSError, ValueError) as exc:
        raise DocsSourceError(f"cannot read the {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DocsSourceError(f"{path} is not a dbt {what}")
    return data


@dataclass(frozen=True)
class _Artifacts:
    manifest: dict[str, Any]
    types: dict[str, dict[str, str]]
    provenance: tuple[str, ...]


def _generated_here(
    settings: Settings, warehouse: object, emit: Callable[[str], None]
) -> _Artifacts:
    """``dbt docs generate`` with the warehouse this process opened."""
    from shopstream.transform.runner import DocsArtifacts, TransformRequest, generate_docs
    from shopstream.transform.runs import make_job
    from shopstream.warehouse import WarehouseError

    emit("dbt docs generate")
    job = make_job(settings, TransformRequest())
    run_in_owner = getattr(warehouse, "run_in_owner", None)
    target = "shopstream.transform.runner:generate_docs"
    try:
        if run_in_owner is not None:
            artifacts = run_in_owner(target, job, lambda _: None)
        else:  # a warehouse many processes open (BigQuery): dbt connects from here on its own
            artifacts = generate_docs(warehouse, job, lambda _: None)  # type: ignore[arg-type]
    except WarehouseError:
        raise
    except (RuntimeError, ValueError, OSError) as exc:  # dbt, the project, the workspace
        raise DocsSourceError(str(exc)) from exc
    if not isinstance(artifacts, DocsArtifacts):  # pragma: no cover - a wrong job answer
        raise DocsSourceError(f"dbt docs generate answered {type(artifacts).__name__}")
    manifest = _read_json(artifacts.manifest, "dbt manifest")
    catalog = _read_json(artifacts.catalog, "dbt catalog")
    return _Artifacts(
        manifest,
        catalog_types(catalog),
        ("models, descriptions and column types: `dbt docs generate` (manifest and catalog)",),
    )


def _left_by_last_transform(settings: Settings, emit: Callable[[str], None]) -> _Artifacts:
    """A running platform holds the warehouse: the manifest its last transform left, the
    column types from information_schema through the platform's query socket."""
    from shopstream.runtime import query_warehouse
    from shopstream.transform.workspace import transform_root

    emit("reading the last transform's manifest")
    target = transform_root(settings.data_dir) / "project" / "target"
    manifest = _read_json(target / "manifest.json", "dbt manifest")
    answer = query_warehouse(settings, INFORMATION_SCHEMA_SQL, limit=settings.query.max_rows)
    return _Artifacts(
        manifest,
        information_schema_types([tuple(r) for r in answer.rows]),
        (
            "models and descriptions: the manifest of the running platform's last transform",
            "column types: the warehouse's information_schema",
        ),
    )


def _artifacts(settings: Settings, emit: Callable[[str], None]) -> _Artifacts:
    from shopstream.platform_runs import here_or_running_platform

    if settings.warehouse.startswith("duckdb://"):
        from shopstream.warehouse.duckdb import duckdb_path

        path = duckdb_path(settings.warehouse)
        if not path.exists():
            # Opening it would make an empty warehouse, documented as such: say what to do.
            raise DocsSourceError(
                f"no warehouse at {path} yet: run `shopstream transform` (after data arrived), "
                "then build the docs"
            )
    return here_or_running_platform(
        settings,
        lambda warehouse: _generated_here(settings, warehouse, emit),
        lambda: _left_by_last_transform(settings, emit),
        layers=(),
    )


def _dialect(settings: Settings) -> str:
    from shopstream.genai.optimizer.query import warehouse_dialect

    return warehouse_dialect(settings.warehouse)


def load_sources(settings: Settings, emit: Callable[[str], None] = lambda _: None) -> DocSources:
    """Everything the docs are built from. Raises QualityConfigError (the checks file is
    broken: read first, before dbt runs), DocsSourceError (what to run) or WarehouseError (the
    warehouse could not be reached)."""
    from shopstream.quality.spec import load_config

    checks = load_config(settings.quality.checks_file)
    artifacts = _artifacts(settings, emit)
    emit("reading checks, alerts and runbooks")
    manifest = artifacts.manifest
    models = models_of(manifest, artifacts.types)
    if models and not any(m.table in artifacts.types for m in models):
        # Documented anyway, every column would be "?" and every lineage empty.
        raise DocsSourceError(
            "the warehouse has none of the dbt models' tables (staging, marts): run "
            "`shopstream transform` first, then build the docs"
        )
    tables: dict[str, tuple[Column, ...]] = {
        table: tuple(Column(name, kind) for name, kind in columns.items())
        for table, columns in artifacts.types.items()
    }
    descriptions: dict[str, str] = {}
    for source in manifest.get("sources", {}).values():
        table = relation_name(source)
        descriptions[table] = " ".join(str(source.get("description") or "").split())
        documented = {
            str(name).lower(): " ".join(str(c.get("description") or "").split())
            for name, c in (source.get("columns") or {}).items()
        }
        if table in tables and documented:
            tables[table] = tuple(
                Column(c.name, c.type, documented.get(c.name, "")) for c in tables[table]
            )
    for model in models:
        tables[model.table] = model.columns
        descriptions[model.table] = model.description
    rules_text, rules_from = deploy_text(ALERT_RULES)
    runbooks_text, runbooks_from = deploy_text(RUNBOOKS)
    dag_files, dags_from = deploy_files(DAGS, ".py")
    schedules = [
        Schedule("transform", "running platform", _every(settings.transform.schedule_minutes)),
        Schedule("quality", "running platform", _every(settings.quality.schedule_minutes)),
    ]
    for name, text in dag_files:
        schedules += parse_dag_schedules(name, text)
    provenance = [
        *artifacts.provenance,
        f"quality checks: the package's default_checks.yml{_user_checks(settings)}",
        f"alert rules: deploy/{ALERT_RULES} from {rules_from}",
        f"runbooks: deploy/{RUNBOOKS} from {runbooks_from}",
    ]
    if dags_from:
        provenance.append(f"Airflow schedules: deploy/{DAGS}/ from {dags_from}")
    return DocSources(
        dialect=_dialect(settings),
        manifest=manifest,
        models=tuple(models),
        tables=dict(sorted(tables.items())),
        descriptions=dict(sorted(descriptions.items())),
        checks=checks,
        alerts=parse_alerts(rules_text),
        runbooks=parse_runbooks(runbooks_text),
        schedules=tuple(sorted(schedules, key=lambda s: (s.what, s.where))),
        provenance=tuple(provenance),
    )


def _user_checks(settings: Settings) -> str:
    checks_file = settings.quality.checks_file
    return f" with {checks_file.name} (quality.checks_file)" if checks_file else ""


def _every(minutes: float) -> str:
    """
    >>> _every(5.0), _every(30), _every(0), _every(1.5)
    ('every 5 minutes', 'every 30 minutes', 'only when asked', 'every 1.5 minutes')
    """
    if minutes <= 0:
        return "only when asked"
    return f"every {minutes:g} minutes"


__all__ = [
    "ALERT_RULES",
    "CHECKOUT",
    "DAGS",
    "INFORMATION_SCHEMA_SQL",
    "PACKAGED",
    "RUNBOOKS",
    "Alert",
    "Column",
    "DocSources",
    "DocsSourceError",
    "Model",
    "Schedule",
    "catalog_types",
    "deploy_files",
    "deploy_text",
    "information_schema_types",
    "load_sources",
    "models_of",
    "parse_alerts",
    "parse_dag_schedules",
    "parse_runbooks",
]
