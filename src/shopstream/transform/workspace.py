"""Where dbt runs: a private working copy of the project, its profile and its vars.

The dbt project ships inside the package and is never run where it is installed (that may be
read-only, and dbt writes ``target/`` and ``logs/`` beside the project). Instead::

    <data_dir>/transform/            0700: compiled SQL and run results hold the e-mail salt
        profiles.yml                 generated from the settings (users never write one)
        project/                     a copy of the package's project, refreshed when it changes
            models/staging/generated/  the staging models of every captured table (regenerated)
            target/  logs/             dbt's own output, kept private

The profile comes from the warehouse URL's scheme (:data:`DIALECTS`): BigQuery's from the URL
alone (:mod:`.bigquery`). DuckDB's points dbt at the warehouse file with ``config_options``
equal to what the warehouse passed to ``duckdb.connect``: in the process that owns the file,
dbt then shares that DuckDB instance instead of failing on the file lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from shopstream.config import SALT_PATTERN
from shopstream.transform import cdc_models
from shopstream.transform.bigquery import bigquery_output
from shopstream.warehouse import WAREHOUSE_EXAMPLE, WAREHOUSES, url_scheme

if TYPE_CHECKING:
    import pyarrow as pa

    from shopstream.config import Settings

#: The project that ships in the package.
PACKAGED_PROJECT = Path(__file__).parent / "project"
#: Under the project copy: the staging models generated for the captured tables.
GENERATED_MODELS = Path("models") / "staging" / "generated"
PROFILE_NAME = "shopstream"
#: Written into the copy: which source it was made from (refreshed when this changes).
_FINGERPRINT = ".shopstream-source"
#: What dbt writes into the copy; kept when the copy is refreshed (partial parsing reuses it).
_DBT_OUTPUT = ("target", "logs")
SALT_FILE = "email_salt"


class QueryableWarehouse(Protocol):
    """What the workspace needs from the warehouse it generates models for."""

    def query(
        self, sql: str, parameters: list[Any] | None = None, *, max_rows: int | None = None
    ) -> pa.Table: ...


def transform_root(data_dir: Path) -> Path:
    return data_dir / "transform"


def _private_directory(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)


def _source_files(source: Path) -> Iterator[Path]:
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if relative.parts[0] in _DBT_OUTPUT or "__pycache__" in relative.parts:
            continue
        if path.is_file():
            yield path


def project_fingerprint(source: Path) -> str:
    """sha256 over the project's file names and contents (dbt output left out)."""
    digest = hashlib.sha256()
    for path in _source_files(source):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def prepare_project(root: Path, source: Path = PACKAGED_PROJECT) -> Path:
    """The working copy of ``source`` under ``root`` (made 0700), refreshed when ``source``
    changed since it was copied; dbt's ``target/`` and ``logs/`` survive a refresh."""
    if not (source / "dbt_project.yml").is_file():
        raise FileNotFoundError(f"no dbt project at {source} (dbt_project.yml is missing)")
    _private_directory(root)
    project = root / "project"
    fingerprint = project_fingerprint(source)
    marker = project / _FINGERPRINT
    if marker.is_file() and marker.read_text() == fingerprint:
        return project
    _private_directory(project)
    for entry in project.iterdir():
        if entry.name in _DBT_OUTPUT:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for path in _source_files(source):
        target = project / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    marker.write_text(fingerprint)
    return project


def generate_captured_models(
    warehouse: QueryableWarehouse, project: Path, raw_tables_sql: str
) -> list[str]:
    """Write the staging models of every captured table (from the schema record in the
    warehouse) into the project copy, replacing earlier ones; the model names, sorted.
    ``raw_tables_sql``: the warehouse's query for its raw tables' names (see
    :class:`WarehouseDialect`)."""
    directory = project / GENERATED_MODELS
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    rows = warehouse.query(cdc_models.LATEST_SCHEMAS_SQL).to_pylist()
    # A table the snapshot found empty has its schema recorded but no change table until its
    # first row: a model over it could not build, so it waits for that row.
    landed = {row["table_name"] for row in warehouse.query(raw_tables_sql).to_pylist()}
    tables = [t for t in cdc_models.captured_tables(rows) if t.raw_table in landed]
    cdc_models.write_models(tables, directory)
    # Only current-state models: the marts ask for these (a keyless table has history only).
    return sorted(table.model_name for table in tables if table.has_current_state)


def duckdb_output(
    path: Path, config_options: Mapping[str, Any], *, threads: int = 1
) -> dict[str, Any]:
    """The dbt-duckdb output for the warehouse file at ``path``.

    ``config_options`` must equal what the owner passed to ``duckdb.connect``: DuckDB hands a
    second connect in the same process the same instance only when its configuration is the
    same. One thread: DuckDB already uses every core for each query, and ingest needs its share.
    """
    return {
        "type": "duckdb",
        "path": str(path),
        "config_options": dict(config_options),
        "threads": threads,
    }


def _duckdb_profile(warehouse_url: str, warehouse: object | None) -> dict[str, Any]:
    """From the warehouse this process holds: its file, and the config it connected with."""
    path = getattr(warehouse, "path", None)
    if path is None:
        raise ValueError(f"{warehouse_url}: a DuckDB profile needs the open warehouse's file")
    return duckdb_output(Path(path), getattr(warehouse, "connect_config", {}))


def _bigquery_profile(warehouse_url: str, warehouse: object | None) -> dict[str, Any]:
    """From the URL alone: a service, reached the same way from any process."""
    return bigquery_output(warehouse_url)


def double_quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _backquoted(identifier: str) -> str:
    return "`" + identifier.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass(frozen=True)
class WarehouseDialect:
    """What the transform says differently to one kind of warehouse (by its URL's scheme)."""

    #: ``profile(url, warehouse)``: the dbt output (``warehouse``: open in this process).
    profile: Callable[[str, object | None], dict[str, Any]]
    #: The raw layer's tables, one column ``table_name`` (BigQuery keeps an
    #: INFORMATION_SCHEMA per dataset, DuckDB one per database).
    raw_tables_sql: str
    #: One identifier quoted for a query.
    quote: Callable[[str], str]


#: Warehouse URL scheme -> its dialect (one line per backend of
#: :data:`shopstream.warehouse.WAREHOUSES` that dbt can build in).
DIALECTS: dict[str, WarehouseDialect] = {
    "duckdb": WarehouseDialect(
        _duckdb_profile,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'",
        double_quoted,
    ),
    "bigquery": WarehouseDialect(
        _bigquery_profile, "SELECT table_name FROM raw.INFORMATION_SCHEMA.TABLES", _backquoted
    ),
}


def dialect(warehouse_url: str) -> WarehouseDialect:
    """The dialect of the warehouse at ``warehouse_url`` (a ValueError naming the known
    schemes when dbt cannot build there)."""
    scheme = url_scheme(warehouse_url, WAREHOUSES, "warehouse URL", WAREHOUSE_EXAMPLE)
    if scheme not in DIALECTS:
        raise ValueError(
            f"{warehouse_url}: the transform cannot run in a {scheme} warehouse "
            f"(it runs in: {', '.join(DIALECTS)})"
        )
    return DIALECTS[scheme]


def profile_output(warehouse_url: str, warehouse: object | None = None) -> dict[str, Any]:
    """The dbt output for the warehouse at ``warehouse_url`` (``warehouse``: that warehouse,
    open in this process; DuckDB's profile points at the file it holds)."""
    return dialect(warehouse_url).profile(warehouse_url, warehouse)


def write_profile(root: Path, output: Mapping[str, Any]) -> Path:
    """``<root>/profiles.yml`` (0600) with one target, the given output; the directory."""
    _private_directory(root)
    target = str(output["type"])
    document = {PROFILE_NAME: {"target": target, "outputs": {target: dict(output)}}}
    path = root / "profiles.yml"
    temporary = root / ".profiles.yml.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(document, handle, sort_keys=False)
    os.replace(temporary, path)
    return root


def email_salt(settings: Settings) -> str:
    """The salt for hashing e-mail-like values: the setting, or a random one made once in
    ``<data_dir>/email_salt`` (0600) and kept, so hashes stay comparable across runs."""
    configured = settings.transform.email_salt
    if configured is not None:
        return configured.get_secret_value()
    path = settings.data_dir / SALT_FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Made whole under a private name, then linked into place: another process never
        # reads a half-written salt, and if two make one at once the first link wins.
        salt = secrets.token_hex(32)
        draft = path.with_name(f".{SALT_FILE}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(salt + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            draft.unlink(missing_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
    salt = path.read_text().strip()
    if not SALT_PATTERN.fullmatch(salt):
        raise ValueError(
            f"{path} does not hold a salt (16 or more letters, digits or _.+/=-): delete it "
            "(a new salt is made; e-mail hashes change) or set SHOPSTREAM_TRANSFORM__EMAIL_SALT"
        )
    return salt


def dbt_vars(settings: Settings, salt: str, captured: Sequence[str]) -> dict[str, Any]:
    """The vars every run passes (the project's dbt_project.yml has their defaults)."""
    return {
        "timezone": settings.timezone,
        "lookback_days": settings.transform.lookback_days,
        "session_timeout_minutes": settings.transform.session_timeout_minutes,
        "email_salt": salt,
        "captured_tables": list(captured),
    }


def make_private(directory: Path) -> None:
    """Files under ``directory`` 0600, directories 0700: dbt writes compiled SQL and run
    results (the vars, the e-mail salt among them) with the process's umask."""
    if not directory.exists():
        return
    for path in [directory, *directory.rglob("*")]:
        if path.is_symlink():
            continue
        wanted = 0o700 if path.is_dir() else 0o600
        if stat.S_IMODE(path.stat().st_mode) != wanted:
            path.chmod(wanted)


__all__ = [
    "DIALECTS",
    "GENERATED_MODELS",
    "PACKAGED_PROJECT",
    "SALT_FILE",
    "WarehouseDialect",
    "dbt_vars",
    "dialect",
    "double_quoted",
    "duckdb_output",
    "email_salt",
    "generate_captured_models",
    "make_private",
    "prepare_project",
    "profile_output",
    "project_fingerprint",
    "transform_root",
    "write_profile",
]
