"""The shop database of ``shopstream run --local-postgres`` (``make run``)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import psycopg

from shopstream.config import Settings
from shopstream.devtools.local_postgres import LocalPostgres, UnreachableDirectoryError
from shopstream.generators.shop import setup_shop_schema

log = logging.getLogger(__name__)


def local_shop_database(settings: Settings) -> tuple[LocalPostgres, str]:
    """Start (or reuse) a PostgreSQL with wal_level=logical under the data dir, with the
    shop's schema in database ``shop``. Returns the server and the database's DSN."""
    server = LocalPostgres(settings.data_dir.resolve() / "postgres")
    try:
        server.start()
    except UnreachableDirectoryError as exc:
        # Typically a clone under /root, run as root: PostgreSQL runs as an unprivileged user
        # who cannot enter it. Keep the demo database where that user can, and say where.
        digest = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:12]
        home = Path("/var/tmp") / f"shopstream-{digest}"  # noqa: S108 - checked below
        log.warning("%s Using %s for the local shop database instead.", exc, home)
        home.mkdir(mode=0o755, exist_ok=True)
        if home.is_symlink() or home.stat().st_uid != os.getuid():
            raise RuntimeError(f"{home} exists and is not ours; remove it and retry") from exc
        home.chmod(0o755)
        server = LocalPostgres(home / "postgres")
        server.start()
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'shop'").fetchone()
    dsn = server.dsn_for("shop") if exists else server.create_database("shop")
    setup_shop_schema(dsn)
    return server, dsn
