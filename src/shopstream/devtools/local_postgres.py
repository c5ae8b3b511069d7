"""A PostgreSQL cluster of our own, for development: the shop database of ``make run``
(:mod:`shopstream.devtools.shop_database`), the test fixtures and ``bench/cdc.py``. Not part of
change data capture; the CDC reader works against any PostgreSQL with ``wal_level=logical``.

    with LocalPostgres(Path("data/postgres")) as pg:
        dsn = pg.create_database("shop")  # host=127.0.0.1 port=54321 user=postgres dbname=shop

The server listens on 127.0.0.1 only (plus a Unix socket in the data directory when its path is
short and plain), trusts every local connection (replication included) and runs with
``wal_level=logical``, so the CDC reader can open a pgoutput slot on it. The superuser is
``postgres`` whatever the OS user is. ``port=None`` reuses the port remembered from the last
start when it is free, else picks a free one (and another if it is taken before the bind).

Binaries: the system's PostgreSQL is preferred (``pg_config --bindir``,
``/usr/lib/postgresql/*/bin`` newest first, ``/usr/pgsql-*/bin``, then ``PATH``); the
PostgreSQL 16 that the ``pgserver`` wheel bundles is the fallback. An existing cluster is
started with binaries of its own major version when several are installed.

Running as root: initdb and postgres refuse to, so they run as the OS user owning an existing
cluster, else ``postgres``, else a system user ``shopstream-pg`` that this module creates with
``useradd``; an existing cluster owned by root is chowned to that user. The user must be able
to traverse every directory above the binaries and the data directory. The pgserver wheel's
binaries, when out of its reach (a virtualenv under ``/root``), are copied once to
``/var/tmp/shopstream-pginstall-<hash>`` and run from there. Any other binaries or data
directory out of its reach make :meth:`LocalPostgres.start` refuse
(:class:`UnreachableDirectoryError`), naming the directory to open up or advising another
place: this class never moves data elsewhere on its own (the demo's
:func:`~shopstream.devtools.shop_database.local_shop_database` does, and says where). What we
put under the world-writable ``/var/tmp`` goes only into a directory that we created and own
(:func:`claim_directory`).

Processes: on Linux, ``/proc`` tells which processes belong to the cluster (name ``postgres``,
working directory the data directory). So a ``postmaster.pid`` left by a crash is recognised as
stale even when its pid names another process by now, and backends a killed postmaster left
behind are SIGKILLed before the next start (they hold the shared memory a new postmaster
needs). :meth:`LocalPostgres.stop` signals the postmaster directly, :meth:`LocalPostgres.kill`
crashes the cluster on purpose (for tests), and :meth:`LocalPostgres.start` adopts a server
already running on the data directory.

Files in the data directory besides PostgreSQL's own: ``shopstream.conf`` (our settings,
rewritten at every start and included from ``postgresql.conf``; ``ALTER SYSTEM`` still
overrides them), ``shopstream.port`` (the port last used, so a restarted ``make run`` finds
the same one) and ``postgresql.log`` (the server log; it is not rotated).

Concurrent :meth:`LocalPostgres.start` calls on one data directory from several processes are
not coordinated; one of them fails with PostgreSQL's lock-file error.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import make_conninfo

__all__ = [
    "LocalPostgres",
    "LocalPostgresError",
    "PostgresNotFoundError",
    "StopMode",
    "UnreachableDirectoryError",
    "claim_directory",
    "find_bin_dir",
    "pgserver_bin_dir",
    "pid_alive",
]

_log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SUPERUSER = "postgres"
LOG_FILE = "postgresql.log"
PORT_FILE = "shopstream.port"
SETTINGS_FILE = "shopstream.conf"

#: OS users that run the server when we are root: the distribution's own, else one of ours.
SYSTEM_USER = "postgres"
DEDICATED_USER = "shopstream-pg"

START_TIMEOUT_S = 120  # crash recovery of a busy cluster can take a while
STOP_TIMEOUT_S = 60
_KILL_TIMEOUT_S = 10
_BIND_RETRIES = 3  # another process may grab a free port between our check and the bind

StopMode = Literal["smart", "fast", "immediate"]
_STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
_SERVER_EXECUTABLES = ("initdb", "pg_ctl", "postgres")


class LocalPostgresError(RuntimeError):
    """The local server could not be set up, started or stopped; the message says what to do."""


class UnreachableDirectoryError(LocalPostgresError):
    """The unprivileged user PostgreSQL runs as (when we are root) cannot reach the data dir."""


class PostgresNotFoundError(LocalPostgresError):
    """No PostgreSQL server binaries on this machine."""


# --- binaries -------------------------------------------------------------------------------


def find_bin_dir() -> Path:
    """The preferred directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    bin_dir = next(_candidate_bin_dirs(), None)
    if bin_dir is not None:
        return bin_dir
    raise PostgresNotFoundError(
        "No PostgreSQL server binaries (initdb, pg_ctl, postgres) found: looked at "
        "`pg_config --bindir`, /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, PATH and the "
        "pgserver package. Install one of: `pip install pgserver` (bundles PostgreSQL 16), "
        "`apt-get install postgresql`, `brew install postgresql@16`; or pass bin_dir=."
    )


def pgserver_bin_dir() -> Path | None:
    """The binaries bundled in the ``pgserver`` wheel, if it is installed.

    Found without importing pgserver: importing it sets up lock files and an atexit hook.
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    return bin_dir if _has_server_executables(bin_dir) else None


def claim_directory(path: Path) -> Path:
    """``path`` as a directory of ours with mode 0755: created, or reused when we made it before.

    For what the server's user must reach under the world-writable ``/var/tmp``: another user
    may have taken the name first (a symlink to elsewhere, a directory of theirs in which to
    plant binaries or a cluster), so anything but a real directory owned by us is refused.
    """
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o755)
    found = path.lstat()  # the name itself: a symlink to a directory of ours is not ours
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
        raise LocalPostgresError(f"{path} exists and is not ours; remove it and retry")
    # In sticky /var/tmp nobody else can swap a directory of ours after the check. The mode:
    # mkdir's was cut by the umask, or an earlier run left another.
    path.chmod(0o755)
    return path


def _reachable_copy(bin_dir: Path) -> Path:
    """A copy of the pgserver wheel's PostgreSQL under /var/tmp, readable by every user; made
    once per installation and reused. The wheel's binaries find their vendored libraries at
    ``$ORIGIN/../../../pgserver.libs``, so the copy keeps that layout."""
    install = bin_dir.parent  # .../site-packages/pgserver/pginstall
    package = install.parent  # .../site-packages/pgserver
    libs = package.parent / f"{package.name}.libs"
    stamp = f"{install}:{(bin_dir / 'postgres').stat().st_mtime_ns}"
    digest = hashlib.sha256(stamp.encode()).hexdigest()[:12]
    home = claim_directory(Path("/var/tmp") / f"shopstream-pginstall-{digest}")  # noqa: S108
    target = home / "site"
    if not (target / package.name / install.name / "bin" / "postgres").exists():
        partial = home / "site.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(install, partial / package.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        for path in [partial, *partial.rglob("*")]:
            if not path.is_symlink():
                mode = path.stat().st_mode
                # Readable by all; directories and executables enterable/runnable by all.
                path.chmod(mode | 0o444 | (0o111 if mode & 0o111 or path.is_dir() else 0))
        partial.rename(target)
        _log.info("copied PostgreSQL from %s to %s for the server's user", install, target)
    return target / package.name / install.name / "bin"


def _candidate_bin_dirs() -> Iterator[Path]:
    seen: set[Path] = set()
    for candidate in _candidate_bin_dirs_unchecked():
        if candidate is None:
            continue
        resolved = candidate.resolve()
        if resolved not in seen and _has_server_executables(resolved):
            seen.add(resolved)
            yield resolved


def _candidate_bin_dirs_unchecked() -> Iterator[Path | None]:
    # Debian's pg_config also ships with libpq-dev alone, so its answer may lack a server:
    # every candidate is checked for the executables.
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            yield Path(out.stdout.strip())
    yield from _newest_first(Path("/usr/lib/postgresql").glob("*/bin"), lambda p: p.parent.name)
    yield from _newest_first(Path("/").glob("usr/pgsql-*/bin"), lambda p: p.parent.name[6:])
    for name in _SERVER_EXECUTABLES:
        found = shutil.which(name)
        # /usr/local/bin/initdb may be a symlink into the real bin dir; the others sit there.
        yield Path(found).resolve().parent if found else None
    yield pgserver_bin_dir()


def _newest_first(dirs: Iterable[Path], version_of: Callable[[Path], str]) -> list[Path]:
    def key(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", version_of(path))) or (-1,)

    return sorted(dirs, key=key, reverse=True)


def _has_server_executables(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in _SERVER_EXECUTABLES)


def _major_version(bin_dir: Path) -> int | None:
    # `postgres --version` is answered before the root check, so this works as root too.
    try:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


# --- the OS user that runs the server -------------------------------------------------------


@dataclass(frozen=True)
class _OsUser:
    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def from_pwd(cls, entry: pwd.struct_passwd) -> _OsUser:
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def groups(self) -> list[int]:
        try:
            return os.getgrouplist(self.name, self.gid)
        except OSError:
            return [self.gid]

    def can_traverse(self, directory: Path) -> bool:
        st = directory.stat()
        if st.st_uid == self.uid:
            bits = st.st_mode >> 6
        elif st.st_gid in self.groups():
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        return bool(bits & 0o1)


def _unprivileged_user() -> _OsUser:
    for name in (SYSTEM_USER, DEDICATED_USER):
        with contextlib.suppress(KeyError):
            return _OsUser.from_pwd(pwd.getpwnam(name))
    useradd = shutil.which("useradd")
    if useradd is None:
        raise LocalPostgresError(
            f"Running as root, PostgreSQL must run as an unprivileged OS user, but neither "
            f"{SYSTEM_USER!r} nor {DEDICATED_USER!r} exists and `useradd` is not available to "
            f"create one. Create a user named {SYSTEM_USER!r} (e.g. `adduser -S {SYSTEM_USER}`), "
            f"or run shopstream as a non-root user."
        )
    _log.warning("creating system user %r to run the local PostgreSQL server", DEDICATED_USER)
    result = subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            DEDICATED_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LocalPostgresError(
            f"Running as root, PostgreSQL must run as an unprivileged OS user; creating "
            f"{DEDICATED_USER!r} failed: {result.stderr.strip()}. Create a user named "
            f"{SYSTEM_USER!r} yourself, or run shopstream as a non-root user."
        )
    return _OsUser.from_pwd(pwd.getpwnam(DEDICATED_USER))


# --- processes (Linux /proc; elsewhere only the postmaster itself is known) ------------------


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, it just is not ours to signal
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # An unreaped zombie holds no locks, files or shared memory: it is gone for our purposes.
    return proc_stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cwd_of(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def _is_postgres_process(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except OSError:
        return False


def _wait_until_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # PostgreSQL binds with SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


# --- the server -----------------------------------------------------------------------------


class LocalPostgres:
    """One PostgreSQL cluster in ``data_dir``, served on 127.0.0.1.

    ``port=None`` reuses the port remembered in the data directory when it is free, or picks a
    free one. ``bin_dir=None`` finds binaries (see the module docstring).
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, bin_dir: Path | None = None):
        self.data_dir = Path(data_dir).resolve()
        self._requested_port = port
        self._port = port
        self._requested_bin_dir = bin_dir
        self._bin_dir: Path | None = None
        self._user: _OsUser | None = None

    # -- public ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalPostgresError("The port is chosen at start(); call start() first.")
        return self._port

    @property
    def dsn(self) -> str:
        """libpq keyword string for the superuser on the ``postgres`` database."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return make_conninfo("", host=HOST, port=self.port, user=SUPERUSER, dbname=dbname)

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def is_running(self) -> bool:
        return self._postmaster_pid() is not None

    def start(self) -> None:
        """Create the cluster if ``data_dir`` is empty, start it and wait until it is ready.

        Reuses an existing cluster, and a server already running on it.
        """
        begun = time.monotonic()
        self._user = self._server_user()
        if self._postmaster_pid() is not None and self._adopt_running_server():
            return
        self._clear_remains_of_crash()
        created = self._ensure_cluster()
        self._write_settings()
        self._start_server()
        _log.info(
            "PostgreSQL %s on %s:%d (data %s, %s in %.2fs)",
            "created and started" if created else "started",
            HOST,
            self.port,
            self.data_dir,
            self._bin_dir,
            time.monotonic() - begun,
        )

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server and wait for it to exit; a stopped server is left alone.

        ``smart`` waits for clients to disconnect, ``fast`` disconnects them and checkpoints,
        ``immediate`` exits without a checkpoint (the next start recovers from WAL).
        """
        if mode not in _STOP_SIGNALS:
            raise ValueError(f"mode must be one of {sorted(_STOP_SIGNALS)}, not {mode!r}")
        pid = self._postmaster_pid()
        if pid is None:
            return
        # Signalled directly rather than through pg_ctl, which would have to run as the
        # server user and, with a stale postmaster.pid, could signal an unrelated process.
        os.kill(pid, _STOP_SIGNALS[mode])
        if not _wait_until_gone([pid], STOP_TIMEOUT_S):
            raise LocalPostgresError(
                f"PostgreSQL (pid {pid}) did not stop within {STOP_TIMEOUT_S}s in {mode!r} "
                f"mode; try stop('immediate') or kill().{self._log_tail_text()}"
            )
        _log.info("PostgreSQL in %s stopped (%s)", self.data_dir, mode)

    def restart(self) -> None:
        self.stop("fast")
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, as a crash would; the next start recovers.

        The children die too so that none of them still holds the old shared memory when the
        server is started again (PostgreSQL refuses to start then).
        """
        pid = self._postmaster_pid()
        if pid is None:
            raise LocalPostgresError(f"No PostgreSQL is running in {self.data_dir}; start() it.")
        os.kill(pid, signal.SIGKILL)
        victims = [pid, *(p for p in self._cluster_processes() if p != pid)]
        for victim in victims[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        if not _wait_until_gone(victims, _KILL_TIMEOUT_S):
            raise LocalPostgresError(f"PostgreSQL processes {victims} survived SIGKILL.")
        _log.info("PostgreSQL in %s killed (pids %s)", self.data_dir, victims)

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its DSN."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalPostgres({str(self.data_dir)!r}, port={self._port})"

    # -- who runs it, and where -----------------------------------------------------------

    def _server_user(self) -> _OsUser | None:
        """None: run as ourselves. As root: the owner of an existing cluster, else a system user."""
        if os.geteuid() != 0:
            return None
        user = self._cluster_owner() or _unprivileged_user()
        self._check_reachable(self.data_dir, user, "data directory")
        return user

    def _cluster_owner(self) -> _OsUser | None:
        try:
            st = self.data_dir.stat()
        except OSError:
            return None
        if st.st_uid == 0 or not (self.data_dir / "PG_VERSION").exists():
            return None
        try:
            return _OsUser.from_pwd(pwd.getpwuid(st.st_uid))
        except KeyError:
            # A volume written by a uid this machine has no name for still works.
            return _OsUser(str(st.st_uid), st.st_uid, st.st_gid, "/")

    def _check_reachable(self, path: Path, user: _OsUser, what: str) -> None:
        # Only the directories above: ``path`` itself we hand to the user (chown) if needed.
        for directory in reversed(path.parents):
            if not directory.exists():
                return  # the rest we create ourselves
            if not user.can_traverse(directory):
                raise UnreachableDirectoryError(
                    f"PostgreSQL refuses to run as root, so it runs as the OS user "
                    f"{user.name!r}, who cannot enter {directory} and so cannot reach the "
                    f"{what} {path}. Choose a {what} outside {directory} (e.g. under /var/lib "
                    f"or /tmp), or let the user through with `chmod o+x {directory}`."
                )

    def _resolve_bin_dir(self) -> Path:
        if self._requested_bin_dir is not None:
            bin_dir = Path(self._requested_bin_dir).resolve()
            if not _has_server_executables(bin_dir):
                raise PostgresNotFoundError(
                    f"{bin_dir} does not hold the PostgreSQL server executables "
                    f"{', '.join(_SERVER_EXECUTABLES)}; pass the server's bin directory "
                    "(`pg_config --bindir`)."
                )
            return bin_dir
        version_file = self.data_dir / "PG_VERSION"
        if not version_file.exists():
            return find_bin_dir()
        wanted = int(version_file.read_text().strip().split(".")[0])
        candidates = list(_candidate_bin_dirs())
        for bin_dir in candidates:
            if _major_version(bin_dir) == wanted:
                return bin_dir
        if not candidates:
            find_bin_dir()  # raises with installation advice
        raise PostgresNotFoundError(
            f"The cluster in {self.data_dir} was created by PostgreSQL {wanted}, but only "
            f"{', '.join(str(c) for c in candidates)} are installed. Install PostgreSQL "
            f"{wanted} (or `pip install pgserver` for 16), pass its bin_dir, or remove "
            f"{self.data_dir} to start afresh."
        )

    # -- the cluster on disk --------------------------------------------------------------

    def _ensure_cluster(self) -> bool:
        """initdb when the data directory is empty; True when it created the cluster."""
        self._bin_dir = self._resolve_bin_dir()
        if self._user is not None:
            try:
                self._check_reachable(self._bin_dir / "postgres", self._user, "PostgreSQL binaries")
            except UnreachableDirectoryError:
                if self._bin_dir != pgserver_bin_dir():
                    raise
                # pip put the pgserver wheel where the server's user cannot go (a virtualenv
                # under /root, run as root): run a copy of its installation from outside.
                self._bin_dir = _reachable_copy(self._bin_dir)
                self._check_reachable(self._bin_dir / "postgres", self._user, "PostgreSQL binaries")
        if (self.data_dir / "PG_VERSION").exists():
            self._adopt_cluster()
            return False
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise LocalPostgresError(
                f"{self.data_dir} is neither empty nor a PostgreSQL cluster; point the data "
                "directory at an empty or missing directory, or empty this one."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(self.data_dir, self._user.uid, self._user.gid)
        begun = time.monotonic()
        result = self._run(
            [
                str(self._bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",  # pg_hba: trust local and 127.0.0.1/::1, replication included
                "--encoding=UTF8",
                "--no-locale",  # the machine's locale may not exist where the cluster moves
            ],
            timeout=300,
        )
        if result.returncode != 0:
            raise LocalPostgresError(
                f"initdb failed in {self.data_dir} (exit {result.returncode}):\n"
                f"{result.stdout.strip()}"
            )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# Added by shopstream.\ninclude '{SETTINGS_FILE}'\n")
        _log.info("initdb %s took %.2fs", self.data_dir, time.monotonic() - begun)
        return True

    def _adopt_cluster(self) -> None:
        conf = self.data_dir / "postgresql.conf"
        if not conf.exists():
            raise LocalPostgresError(
                f"{self.data_dir} holds an incomplete cluster (no postgresql.conf; an "
                "interrupted initdb?). Remove the directory and start again."
            )
        text = conf.read_text()
        if SETTINGS_FILE not in text:
            # A cluster made elsewhere (pgserver, an earlier run of someone's own) gets our
            # settings too; it would be useless for CDC without wal_level=logical.
            with conf.open("a") as out:
                out.write(f"\n# Added by shopstream.\ninclude '{SETTINGS_FILE}'\n")
        if self._user is not None and self.data_dir.stat().st_uid == 0:
            # PostgreSQL must own its files and root cannot run it: hand the cluster over.
            for path in [self.data_dir, *self.data_dir.rglob("*")]:
                os.lchown(path, self._user.uid, self._user.gid)

    def _write_settings(self) -> None:
        socket_dir = str(self.data_dir)
        # A Unix socket path is limited to ~107 bytes and the list syntax to plain paths;
        # beyond that there is no socket, and TCP on 127.0.0.1 still serves everyone.
        if len(socket_dir) > 90 or not re.fullmatch(r"[\w./-]+", socket_dir):
            socket_dir = ""
        self._write_owned(
            self.data_dir / SETTINGS_FILE,
            "# Managed by shopstream and rewritten at every start; ALTER SYSTEM overrides it.\n"
            f"listen_addresses = '{HOST}'\n"
            f"unix_socket_directories = '{socket_dir}'\n"
            "wal_level = logical\n"
            "max_replication_slots = 20\n"
            "max_wal_senders = 20\n",
        )

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)
        if self._user is not None:
            os.chown(path, self._user.uid, self._user.gid)

    # -- the server process ---------------------------------------------------------------

    def _start_server(self) -> None:
        assert self._bin_dir is not None
        for attempt in range(_BIND_RETRIES):
            port = self._choose_port(fresh=attempt > 0)
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            result = self._run(
                [
                    str(self._bin_dir / "pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-o",
                    f"-p {port}",
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                ],
                timeout=START_TIMEOUT_S + 30,
            )
            if result.returncode == 0:
                self._port = port
                self._write_owned(self.data_dir / PORT_FILE, f"{port}\n")
                return
            log_tail = self._log_tail(since=log_offset)
            taken = "could not bind" in log_tail or "Address already in use" in log_tail
            if taken and self._requested_port is None and attempt + 1 < _BIND_RETRIES:
                _log.info("port %d was taken meanwhile; trying another", port)
                continue
            if self._postmaster_pid() is not None:
                detail = f"it is still starting after {START_TIMEOUT_S}s; call start() to wait"
            elif taken:
                detail = f"port {port} is in use; pass another port or port=None"
            else:
                detail = "see the log below"
            raise LocalPostgresError(
                f"PostgreSQL in {self.data_dir} did not start: {detail}.\n"
                f"pg_ctl said: {result.stdout.strip()}\n"
                f"Last lines of {self.log_path}:\n{log_tail}"
            )

    def _choose_port(self, *, fresh: bool) -> int:
        if self._requested_port is not None:
            return self._requested_port
        if not fresh:
            with contextlib.suppress(OSError, ValueError):
                remembered = int((self.data_dir / PORT_FILE).read_text().strip())
                if _port_is_free(remembered):
                    return remembered
        return _free_port()

    def _adopt_running_server(self) -> bool:
        """Take over a server already serving this data directory (an earlier run's).

        False when it turns out to be dying (killed a moment ago): then start afresh.
        """
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._postmaster_pid() is None:
                return False
            lines = self._postmaster_lines()
            status = lines[7].strip() if lines else "starting"
            # The pid file says "ready" until the very end of a killed postmaster; only a
            # connection proves it serves.
            if lines and status == "ready" and self._accepts_connections(int(lines[3])):
                port = int(lines[3])
                break
            if time.monotonic() > deadline:
                raise LocalPostgresError(
                    f"PostgreSQL in {self.data_dir} is running but not ready after "
                    f"{START_TIMEOUT_S}s (status {status!r}); stop or kill it, or call start() "
                    f"to wait longer.{self._log_tail_text()}"
                )
            time.sleep(0.05)
        if self._requested_port is not None and port != self._requested_port:
            raise LocalPostgresError(
                f"PostgreSQL already runs on {self.data_dir} at port {port}, not "
                f"{self._requested_port}; stop it first or ask for port {port}."
            )
        self._port = port
        self._write_owned(self.data_dir / PORT_FILE, f"{port}\n")
        _log.info("PostgreSQL already running on %s:%d (data %s)", HOST, port, self.data_dir)
        return True

    def _accepts_connections(self, port: int) -> bool:
        # PQping, as pg_isready: a server that rejects our credentials still counts as serving.
        conninfo = make_conninfo(
            "", host=HOST, port=port, user=SUPERUSER, dbname="postgres", connect_timeout=5
        )
        return pq.PGconn.ping(conninfo.encode()) == pq.Ping.OK

    def _postmaster_lines(self) -> list[str] | None:
        """postmaster.pid once complete: pid, data dir, start time, port, socket dir,
        listen address, shared memory key, status."""
        with contextlib.suppress(OSError):
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            if len(lines) >= 8:
                return lines
        return None

    def _postmaster_pid(self) -> int | None:
        """The pid of the live postmaster of this data directory, if any.

        postmaster.pid alone cannot tell: after a crash it stays behind, and its pid may by
        now belong to another process (containers restart with the same small pids).
        """
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
            pid = abs(int(first))  # negative in single-user mode
        except (OSError, ValueError):
            return None
        if pid == 0 or not pid_alive(pid):
            return None
        if not Path("/proc").is_dir():
            return pid
        # The postmaster works in its data directory; a stranger reusing the pid does not.
        return pid if self._belongs_here(pid) else None

    def _belongs_here(self, pid: int) -> bool:
        cwd = _cwd_of(pid)
        if cwd is not None:
            return cwd == self.data_dir and _is_postgres_process(pid)
        with contextlib.suppress(OSError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            return _is_postgres_process(pid) and str(self.data_dir).encode() in args
        return False

    def _cluster_processes(self) -> list[int]:
        proc = Path("/proc")
        if not proc.is_dir():
            return []
        pids = []
        for entry in proc.iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                pid = int(entry.name)
                if _cwd_of(pid) == self.data_dir and _is_postgres_process(pid):
                    pids.append(pid)
        return pids

    def _clear_remains_of_crash(self) -> None:
        """Make a crashed cluster startable: orphaned backends and a stale postmaster.pid."""
        orphans = self._cluster_processes()
        if orphans:
            # Backends of a dead postmaster are doomed anyway, and while they hold its shared
            # memory a new postmaster refuses to start.
            _log.warning("killing orphaned PostgreSQL processes %s in %s", orphans, self.data_dir)
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _wait_until_gone(orphans, _KILL_TIMEOUT_S)
        # PostgreSQL would refuse to start if a pid recorded in these now named a live process.
        stale = [self.data_dir / "postmaster.pid", *self.data_dir.glob(".s.PGSQL.*")]
        for path in stale:
            if path.exists():
                _log.info("removing stale %s", path)
                path.unlink()

    def _run(self, argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program as the server user, output captured in a file.

        A file, not a pipe: the postmaster that pg_ctl leaves behind could inherit a pipe
        and keep us waiting for its end.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        user = self._user
        if user is not None:
            env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
        cwd = self.data_dir if self.data_dir.is_dir() else Path("/")
        with tempfile.TemporaryFile("w+") as output:
            try:
                completed = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    timeout=timeout,
                    check=False,
                    text=True,
                    user=user.uid if user else None,
                    group=user.gid if user else None,
                    extra_groups=[] if user else None,
                )
            except subprocess.TimeoutExpired as exc:
                raise LocalPostgresError(
                    f"{Path(argv[0]).name} did not finish within {timeout}s"
                    f" (killed).{self._log_tail_text()}"
                ) from exc
            output.seek(0)
            return subprocess.CompletedProcess(argv, completed.returncode, output.read(), "")

    def _log_tail(self, since: int = 0, lines: int = 40) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(since)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:]) or "(the server log is empty)"

    def _log_tail_text(self) -> str:
        return f"\nLast lines of {self.log_path}:\n{self._log_tail()}"
