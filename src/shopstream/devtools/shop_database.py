"""The shop database of ``shopstream run --local-postgres`` (``make run``).

A :class:`~shopstream.devtools.local_postgres.LocalPostgres` cluster in ``<data_dir>/postgres``
holding database ``shop`` with the shop's schema, for the CDC reader to capture and the order
workload to write to. Running as root with a data directory that PostgreSQL's unprivileged
user cannot enter (typically a clone under ``/root``), the cluster goes to
``/var/tmp/shopstream-<hash of the data dir>`` instead, with a warning naming it: for a demo a
working ``make run`` is worth more than :class:`LocalPostgres`'s refusal. The same data dir
always maps to the same place there, so the next run finds its database again.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import psycopg

from shopstream.config import Settings
from shopstream.devtools.local_postgres import (
    LocalPostgres,
    UnreachableDirectoryError,
    claim_directory,
)
from shopstream.generators.shop import setup_shop_schema

log = logging.getLogger(__name__)


def local_shop_database(settings: Settings) -> tuple[LocalPostgres, str]:
    """Start (or reuse) the shop's PostgreSQL and create database ``shop`` and its schema if
    they are missing. Returns the server and the database's DSN."""
    server = LocalPostgres(settings.data_dir.resolve() / "postgres")
    try:
        server.start()
    except UnreachableDirectoryError as exc:
        home = _fallback_home(settings.data_dir)
        log.warning("%s Using %s for the local shop database instead.", exc, home)
        server = LocalPostgres(claim_directory(home) / "postgres")
        server.start()
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'shop'").fetchone()
    dsn = server.dsn_for("shop") if exists else server.create_database("shop")
    setup_shop_schema(dsn)
    return server, dsn


def _fallback_home(data_dir: Path) -> Path:
    """Where the cluster goes when the server's user cannot reach ``data_dir``: one place per
    data dir, so that two checkouts do not share (or fight over) a database."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"shopstream-{digest}"  # noqa: S108 - claim_directory checks it
