"""What each pipeline's code does, read from its source text with :mod:`ast` (never imported).

For the collector, cdc, loader, transform and quality pipelines (the packages of those names):

- summary: the first paragraph of the package's docstring;
- entry points: the ``shopstream`` commands (cli.py's Typer decorators) that are the
  pipeline's: named after it (``shopstream cdc``, ``shopstream load`` for the loader, the
  ``quality`` group), importing its package, taking an option named after it (``run
  --transform``), or saying in their first sentence that they run it ("Run the platform on one
  machine: collector, CDC ...");
- settings read: attribute chains on values typed as config.py's models (parameters and
  attributes annotated ``CdcSettings``, ``self.limits = settings.collector``, and names called
  ``settings`` otherwise), matched against config.py's fields, also read with :mod:`ast`;
- tables written: batches keyed by a raw table's name (``rows["events"] = ...``),
  ``cdc_table_name(...)`` (``raw.cdc_<table>``), ``append_monitoring``/``append_mart``/
  ``ensure_raw_table`` calls, and for transform the dbt models it builds;
- sinks: the transports (Kafka, Pub/Sub) of :mod:`shopstream.sinks` a pipeline's records can
  go to (it writes through the Sink protocol) or that it uses itself;
- metrics: the Prometheus metrics named after the pipeline (``shopstream_cdc_...``) or updated
  in its modules, as exported (counters with ``_total``).

>>> pipelines = analyse_pipelines()
>>> "raw.events" in pipelines["collector"].tables_written
True
>>> pipelines["cdc"].entry_points["shopstream cdc"].startswith("Capture the shop database")
True
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from shopstream.genai.docs.model import PipelineCode

PIPELINES = ("collector", "cdc", "loader", "transform", "quality")
#: prometheus_client's metric types; a counter is exported with ``_total`` appended.
_METRIC_TYPES = frozenset({"Counter", "Gauge", "Histogram", "Summary"})
#: Warehouse calls that write a table, and the layer of the table named by their first argument.
_WRITE_CALLS = {"append_monitoring": "monitoring", "append_mart": "mart", "ensure_raw_table": "raw"}
#: The transports among shopstream.sinks' modules (the others are the warehouse and helpers).
_TRANSPORTS = ("kafka", "pubsub")
_TABLE_PLACEHOLDER = "<table>"


def analyse_pipelines(package_dir: Path | None = None) -> dict[str, PipelineCode]:
    """What the collector, cdc, loader, transform and quality code does, by pipeline name.

    ``package_dir``: the ``shopstream`` package's directory (default: the one this module is
    in). Only reads files: nothing of the pipelines is imported or run.
    """
    package = _Package(package_dir or Path(__file__).resolve().parents[2])
    commands = _commands(package)
    metrics = _metrics(package)
    config = _config(package)
    raw = _raw_tables(package)
    return {
        name: PipelineCode(
            name=name,
            summary=_first_paragraph(package.docstring(f"shopstream.{name}")),
            modules=tuple(package.modules_of(name)),
            entry_points={c.invocation: c.help for c in commands if name in c.pipelines},
            settings_read=tuple(sorted(_settings_read(package, config, name))),
            tables_written=tuple(sorted(_tables_written(package, raw, name))),
            sinks=tuple(sorted(_sinks(package, name))),
            metrics=tuple(sorted(m.exported for m in metrics if m.belongs_to(name))),
            reads_from=tuple(sorted(_reads_from(package, name))),
        )
        for name in PIPELINES
    }


# -- reading the package ------------------------------------------------------------------------


class _Package:
    """The package's modules, parsed once, with what each imports."""

    def __init__(self, root: Path) -> None:
        if not (root / "__init__.py").is_file():
            raise ValueError(
                f"{root} is not the shopstream package (no __init__.py): pass the directory "
                "of src/shopstream"
            )
        self.root = root
        self.trees: dict[str, ast.Module] = {}
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join(("shopstream", *parts))
            self.trees[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self._constants: dict[str, dict[str, ast.expr]] = {}
        self._imports: dict[str, dict[str, str]] = {}

    def modules_of(self, pipeline: str) -> list[str]:
        prefix = f"shopstream.{pipeline}"
        return [m for m in self.trees if m == prefix or m.startswith(prefix + ".")]

    def docstring(self, module: str) -> str:
        tree = self.trees.get(module)
        return (ast.get_docstring(tree) if tree else None) or ""

    def imports(self, module: str) -> dict[str, str]:
        """Local name -> what it is (``shopstream.observability.metrics`` for a module,
        ``shopstream.events.raw.SOURCE_SCHEMAS`` for a name), anywhere in the module (the CLI
        imports inside its commands)."""
        if module in self._imports:
            return self._imports[module]
        found: dict[str, str] = {}
        self._imports[module] = found
        for node in ast.walk(self.trees[module]):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node, self._is_package(module))
                for alias in node.names:
                    found[alias.asname or alias.name] = f"{base}.{alias.name}"
        return found

    def imported_modules(self, module: str) -> set[str]:
        """Modules ``module`` imports (``from a import b``: ``a``, and ``a.b`` when a module)."""
        found: set[str] = set()
        for node in ast.walk(self.trees[module]):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node, self._is_package(module))
                found.add(base)
                found.update(
                    f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.trees
                )
        return found

    def constant(self, module: str, name: str) -> ast.expr | None:
        """The value of a module-level ``NAME = ...`` in ``module``, following ``from x import``."""
        if module not in self._constants:
            values: dict[str, ast.expr] = {}
            for node in self.trees[module].body:
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            values[target.id] = node.value
                elif (
                    isinstance(node, ast.AnnAssign)
                    and isinstance(node.target, ast.Name)
                    and node.value is not None
                ):
                    values[node.target.id] = node.value
            self._constants[module] = values
        if name in self._constants[module]:
            return self._constants[module][name]
        origin = self.imports(module).get(name)
        if origin and "." in origin:
            owner, _, attr = origin.rpartition(".")
            if owner in self.trees:
                return self.constant(owner, attr)
        return None

    def string(self, module: str, node: ast.expr) -> str | None:
        """A string literal, or a name bound to one (in the module or imported)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            value = self.constant(module, node.id)
            if value is not None and value is not node:
                return self.string(module, value)
        return None

    def _is_package(self, module: str) -> bool:
        return (self.root / Path(*module.split(".")[1:]) / "__init__.py").is_file()


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    base = ".".join(parts[:keep])
    return f"{base}.{node.module}" if node.module else base


def _first_paragraph(text: str) -> str:
    """The first paragraph on one line, its Sphinx markup read as text.

    >>> _first_paragraph("Reads :mod:`.spec`, :func:`~shopstream.x.run`, ``--all``.")
    'Reads .spec, run, --all.'
    """
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    return _plain(paragraph)


def _plain(text: str) -> str:
    """Sphinx roles (``:mod:`x```, ``:func:`~a.b```) as their text, ````literals```` bare."""
    text = re.sub(r":[\w:]+:`~?([^`]+)`", lambda m: _role_text(m.group(0), m.group(1)), text)
    return re.sub(r"``([^`]+)``", r"\1", text)


def _role_text(whole: str, target: str) -> str:
    # :func:`~a.b.run` shows as "run"; :mod:`.spec` as ".spec".
    return target.rsplit(".", 1)[-1] if whole.split("`", 1)[1].startswith("~") else target


def _first_sentence(text: str) -> str:
    paragraph = _first_paragraph(text)
    return re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]


# -- entry points -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Command:
    invocation: str
    help: str
    pipelines: frozenset[str]


def _commands(package: _Package) -> list[_Command]:
    """The CLI's commands, from cli.py's ``@<app>.command(...)`` decorators."""
    module = "shopstream.cli"
    tree = package.trees[module]
    groups = {"app": ""}  # Typer app variable -> its group's name ("" for the top level)
    for node in ast.walk(tree):
        call = node.value if isinstance(node, ast.Expr) else None
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "add_typer"
            and call.args
            and isinstance(call.args[0], ast.Name)
        ):
            group_name = next((k.value for k in call.keywords if k.arg == "name"), None)
            if isinstance(group_name, ast.Constant) and isinstance(group_name.value, str):
                groups[call.args[0].id] = group_name.value
    commands = []
    for function in tree.body:
        if not isinstance(function, ast.FunctionDef):
            continue
        for decorator in function.decorator_list:
            if not (
                isinstance(decorator, ast.Call)
                and isinstance(decorator.func, ast.Attribute)
                and decorator.func.attr == "command"
                and isinstance(decorator.func.value, ast.Name)
                and decorator.func.value.id in groups
            ):
                continue
            group = groups[decorator.func.value.id]
            named: list[ast.expr] = [a for a in decorator.args[:1] if isinstance(a, ast.Constant)]
            named += [k.value for k in decorator.keywords if k.arg == "name"]
            explicit = package.string(module, named[0]) if named else None
            name = explicit or function.name.replace("_", "-")
            helps = [k.value for k in decorator.keywords if k.arg == "help"]
            text = (package.string(module, helps[0]) if helps else None) or (
                ast.get_docstring(function) or ""
            )
            invocation = " ".join(p for p in ("shopstream", group, name) if p)
            commands.append(
                _Command(
                    invocation,
                    _first_paragraph(text),
                    frozenset(_pipelines_of(package, module, function, group, name, text)),
                )
            )
    return sorted(commands, key=lambda c: c.invocation)


def _pipelines_of(
    package: _Package, module: str, function: ast.FunctionDef, group: str, name: str, text: str
) -> Iterator[str]:
    imported = {f"{node.module}" for node in ast.walk(function) if isinstance(node, ast.ImportFrom)}
    parameters = {a.arg for a in function.args.args + function.args.kwonlyargs}
    sentence = _first_sentence(text).lower()
    for pipeline in PIPELINES:
        if (
            pipeline in {group, name}
            or pipeline.startswith(name)  # shopstream load: the loader
            or any(
                m == f"shopstream.{pipeline}" or m.startswith(f"shopstream.{pipeline}.")
                for m in imported
            )
            or pipeline in parameters
            or (sentence.startswith("run ") and re.search(rf"\b{pipeline}\b", sentence))
        ):
            yield pipeline


# -- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    """config.py's models: model -> field -> the model it holds (None for a plain value)."""

    fields: dict[str, dict[str, str | None]]
    #: model -> its dotted path from Settings ("" for Settings, "collector" for CollectorSettings).
    paths: dict[str, str]

    def typed(self, annotation: ast.expr | None) -> str | None:
        """The config model an annotation names (``CdcSettings``, ``CdcSettings | None``)."""
        if annotation is None:
            return None
        for node in ast.walk(annotation):
            name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value.split("|")[0].strip()
            if name in self.fields:
                return name
        return None


def _config(package: _Package) -> _Config:
    fields: dict[str, dict[str, str | None]] = {}
    classes = [n for n in package.trees["shopstream.config"].body if isinstance(n, ast.ClassDef)]
    names = {c.name for c in classes}
    for cls in classes:
        if not any(getattr(b, "id", "") in {"BaseModel", "BaseSettings"} for b in cls.bases):
            continue
        fields[cls.name] = {}
        for statement in cls.body:
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                models = {
                    n.id for n in ast.walk(statement.annotation) if isinstance(n, ast.Name)
                } & names
                fields[cls.name][statement.target.id] = min(models) if models else None
    paths = {"Settings": ""}
    todo = ["Settings"]
    while todo:
        model = todo.pop()
        for name, held in sorted(fields.get(model, {}).items()):
            if held and held not in paths:
                paths[held] = f"{paths[model]}.{name}".lstrip(".")
                todo.append(held)
    return _Config(fields, paths)


#: Names that hold the whole Settings where nothing says otherwise.
_SETTINGS_NAMES = frozenset({"settings", "_settings"})


def _settings_read(package: _Package, config: _Config, pipeline: str) -> set[str]:
    found: set[str] = set()
    for module in package.modules_of(pipeline):
        tree = package.trees[module]
        for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
            attributes = _class_attributes(config, cls)
            for function in cls.body:
                if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    found |= _reads(config, function, attributes)
        for function in tree.body:
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                found |= _reads(config, function, {})
    return found


def _class_attributes(config: _Config, cls: ast.ClassDef) -> dict[str, str]:
    """``self.<attr>`` -> config model, from the class's annotations and assignments."""
    attributes: dict[str, str] = {}
    for statement in cls.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            model = config.typed(statement.annotation)
            if model:
                attributes[statement.target.id] = model
    for function in cls.body:
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        env = _parameters(config, function)
        for node in ast.walk(function):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                        and node.value is not None
                    ):
                        model = _type_of(config, node.value, env, attributes)
                        if model:
                            attributes.setdefault(target.attr, model)
    return attributes


def _parameters(
    config: _Config, function: ast.FunctionDef | ast.AsyncFunctionDef
) -> dict[str, str]:
    arguments = function.args
    env = {}
    for argument in arguments.posonlyargs + arguments.args + arguments.kwonlyargs:
        model = config.typed(argument.annotation)
        if model:
            env[argument.arg] = model
    return env


def _type_of(
    config: _Config, node: ast.expr, env: dict[str, str], attributes: dict[str, str]
) -> str | None:
    """The config model ``node`` evaluates to, when it is one."""
    if isinstance(node, ast.Name):
        return env.get(node.id) or ("Settings" if node.id in _SETTINGS_NAMES else None)
    if isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            return attributes.get(node.attr) or (
                "Settings" if node.attr in _SETTINGS_NAMES else None
            )
        owner = _type_of(config, node.value, env, attributes)
        if owner:
            return config.fields[owner].get(node.attr)
    return None


def _reads(
    config: _Config, function: ast.FunctionDef | ast.AsyncFunctionDef, attributes: dict[str, str]
) -> set[str]:
    env = _parameters(config, function)
    assignments = sorted(
        (n for n in ast.walk(function) if isinstance(n, ast.Assign)), key=lambda n: n.lineno
    )
    for assignment in assignments:  # cfg = self.settings; limits = settings.collector
        model = _type_of(config, assignment.value, env, attributes)
        for target in assignment.targets:
            if model and isinstance(target, ast.Name):
                env[target.id] = model
    found = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Attribute):
            owner = _type_of(config, node.value, env, attributes)
            if owner and node.attr in config.fields[owner] and not config.fields[owner][node.attr]:
                found.add(f"{config.paths.get(owner, '')}.{node.attr}".lstrip("."))
    return found


# -- tables -------------------------------------------------------------------------------------


def _raw_tables(package: _Package) -> set[str]:
    """The raw tables events/raw.py defines (the keys of its ``JSON_COLUMNS``)."""
    module = "shopstream.events.raw"
    names = set()
    for node in ast.walk(package.trees[module]):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "JSON_COLUMNS"
                ):
                    name = package.string(module, target.slice)
                    if name:
                        names.add(name)
    return names


#: The transport's message codec: a pipeline that decodes messages with it lands every raw
#: table the messages carry (the loader).
_MESSAGES = "shopstream.events.messages"


def _tables_written(package: _Package, raw: set[str], pipeline: str) -> set[str]:
    found = set()
    modules = package.modules_of(pipeline)
    if _MESSAGES in package.trees and any(
        _MESSAGES in package.imported_modules(m) for m in modules
    ):
        found |= _raw_tables_named(package, _MESSAGES, raw)
    for module in modules:
        imports = package.imports(module)
        for node in ast.walk(package.trees[module]):
            if isinstance(node, ast.Assign):  # rows["events"] = ...: a batch for raw.events
                for target in node.targets:
                    if isinstance(target, ast.Subscript):
                        key = package.string(module, target.slice)
                        if key in raw:
                            found.add(f"raw.{key}")
            elif isinstance(node, ast.Call):
                called = _called(node)
                if called == "cdc_table_name" or imports.get(called, "").endswith(
                    ".cdc_table_name"
                ):
                    found.add(f"raw.cdc_{_TABLE_PLACEHOLDER}")
                elif called in _WRITE_CALLS and node.args:
                    table = package.string(module, node.args[0])
                    if table:
                        found.add(f"{_WRITE_CALLS[called]}.{table}")
    if pipeline == "transform":
        found |= _models(package)
    return found


def _raw_tables_named(package: _Package, module: str, raw: set[str]) -> set[str]:
    """The raw tables ``module`` names: their names as strings, ``cdc_table_name`` calls."""
    found = set()
    for node in ast.walk(package.trees[module]):
        if isinstance(node, ast.Call) and _called(node) == "cdc_table_name":
            found.add(f"raw.cdc_{_TABLE_PLACEHOLDER}")
        elif isinstance(node, ast.Constant | ast.Name):
            name = package.string(module, node)
            if name in raw:
                found.add(f"raw.{name}")
    return found


def _called(call: ast.Call) -> str:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else ""


def _models(package: _Package) -> set[str]:
    """The dbt models the transform builds: the project's model files (layer from their
    ``config(schema=...)`` or dbt_project.yml's folder ``+schema``) and the models it generates
    for every captured table (the ``stg_{...}`` names and ``*_MODEL`` constants of its code)."""
    project = package.root / "transform" / "project"
    found = set()
    folders = yaml.safe_load((project / "dbt_project.yml").read_text(encoding="utf-8"))
    layers = folders.get("models", {}).get(folders.get("name", ""), {})
    for path in sorted((project / "models").rglob("*.sql")):
        folder = path.relative_to(project / "models").parts[0]
        configured = re.search(r"schema\s*=\s*['\"](\w+)['\"]", path.read_text(encoding="utf-8"))
        layer = configured.group(1) if configured else layers.get(folder, {}).get("+schema")
        if layer:
            found.add(f"{layer}.{path.stem}")
    staging = layers.get("staging", {}).get("+schema", "staging")
    for module in package.modules_of("transform"):
        tree = package.trees[module]
        layers_named = {
            match.group(1)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            for match in re.finditer(r"schema\s*=\s*'(\w+)'", node.value)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr) and _literal_head(node).startswith("stg_"):
                found.add(f"{staging}.{_pattern(node)}")
            elif (
                isinstance(node, ast.Assign)
                and len(layers_named) == 1
                and any(isinstance(t, ast.Name) and t.id.endswith("_MODEL") for t in node.targets)
            ):
                name = package.string(module, node.value)
                if name:
                    found.add(f"{next(iter(layers_named))}.{name}")
    return found


def _literal_head(node: ast.JoinedStr) -> str:
    first = node.values[0] if node.values else None
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""


def _pattern(node: ast.JoinedStr) -> str:
    """``f"stg_{stem}_history"`` -> ``stg_<table>_history``."""
    return "".join(
        str(v.value) if isinstance(v, ast.Constant) else _TABLE_PLACEHOLDER for v in node.values
    )


# -- sinks --------------------------------------------------------------------------------------


def _reads_from(package: _Package, pipeline: str) -> set[str]:
    """The transports a pipeline consumes: its own modules named for one (loader/kafka.py is
    the loader's Kafka consumer; writing goes through shopstream.sinks)."""
    names = {module.rsplit(".", 1)[-1] for module in package.modules_of(pipeline)}
    return names & set(_TRANSPORTS)


def _sinks(package: _Package, pipeline: str) -> set[str]:
    """The transports a pipeline writes its records to, through shopstream.sinks."""
    found = set()
    for module in package.modules_of(pipeline):
        imported = package.imported_modules(module)
        for transport in _TRANSPORTS:
            if any(m.startswith(f"shopstream.sinks.{transport}") for m in imported):
                found.add(transport)
        if "shopstream.sinks.base" in imported or "shopstream.sinks" in imported:
            # It hands its records to a Sink: the settings' sink URL picks the transport.
            found.update(t for t in _TRANSPORTS if f"shopstream.sinks.{t}" in package.trees)
    # A consumer of a transport uses the sinks' code to land what it read (and to set up its
    # subscription), not to send records back into it.
    return found - _reads_from(package, pipeline)


# -- metrics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Metric:
    name: str
    #: Counter, Gauge, Histogram, Summary.
    kind: str
    #: The modules that define or update it.
    users: frozenset[str]

    @property
    def exported(self) -> str:
        if self.kind == "Counter" and not self.name.endswith("_total"):
            return f"{self.name}_total"
        return self.name

    def belongs_to(self, pipeline: str) -> bool:
        if self.name.startswith(f"shopstream_{pipeline}_"):
            return True
        prefix = f"shopstream.{pipeline}"
        return any(u == prefix or u.startswith(prefix + ".") for u in self.users)


def _metrics(package: _Package) -> list[_Metric]:
    """Module-level prometheus_client metrics with a literal name, and the modules using them."""
    defined = []
    for module, tree in package.trees.items():
        imports = package.imports(module)
        for node in tree.body:
            if not (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                continue
            kind = _called(node.value)
            if kind not in _METRIC_TYPES or not imports.get(kind, "").startswith(
                "prometheus_client"
            ):
                continue
            name = _metric_name(package, module, node.value)
            if name:
                defined.append((module, node.targets[0].id, name, kind))
    uses: dict[tuple[str, str], set[str]] = {}
    for module, tree in package.trees.items():
        imports = package.imports(module)
        for origin in imports.values():  # from shopstream.observability.metrics import X
            owner, _, attr = origin.rpartition(".")
            uses.setdefault((owner, attr), set()).add(module)
        for ref in ast.walk(tree):  # metrics.X, metrics imported as a module
            if isinstance(ref, ast.Attribute) and isinstance(ref.value, ast.Name):
                imported = imports.get(ref.value.id)
                if imported:
                    uses.setdefault((imported, ref.attr), set()).add(module)
    return [
        _Metric(name, kind, frozenset({module} | uses.get((module, variable), set())))
        for module, variable, name, kind in defined
    ]


def _metric_name(package: _Package, module: str, call: ast.Call) -> str | None:
    if not call.args:
        return None
    first = call.args[0]
    if isinstance(first, ast.Starred):  # Gauge(*HELP["success"], ...): (name, help) pairs
        value = first.value
        if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name):
            table = package.constant(module, value.value.id)
            key = package.string(module, value.slice)
            if isinstance(table, ast.Dict) and key is not None:
                for k, v in zip(table.keys, table.values, strict=True):
                    if (
                        k is not None
                        and package.string(module, k) == key
                        and isinstance(v, ast.Tuple)
                        and v.elts
                    ):
                        return package.string(module, v.elts[0])
        return None
    return package.string(module, first)
