"""The logical replication stream, on libpq directly (psycopg 3's ``psycopg.pq`` binding).

Why not psycopg2's ``LogicalReplicationConnection``: it answers the server's keepalives by
itself, and since 2.8.4 it moves its own flush LSN to a keepalive's ``wal_end`` whenever the
LSN we last confirmed is at or past the ``data_start`` of the last message received. In
logical decoding ``data_start`` goes backwards (a Begin or a change carries its own record's
LSN, older than commits already confirmed; Relation and Type carry 0/0), so the check passes
while commits we received but have not made durable lie below ``wal_end``: the slot was
confirmed past them, and a crash lost them. Nothing here sends feedback on its own: every
Standby status update carries :attr:`ReplicationStream.durable_lsn`, which only the reader
moves (:meth:`ReplicationStream.confirm`).

The protocol ("Streaming Replication Protocol" in the PostgreSQL documentation): inside the
COPY BOTH started by ``START_REPLICATION``, the server sends XLogData (``w``: data start,
WAL end, send time, payload) and Primary keepalive (``k``: WAL end, send time, reply
requested) messages; the client sends Standby status updates (``r``: written, flushed and
applied LSN, send time, reply requested).
"""

from __future__ import annotations

import select
import struct
import time

import psycopg
import psycopg.errors
from psycopg import pq
from psycopg.conninfo import make_conninfo

from shopstream.cdc.catalog import parse_lsn
from shopstream.cdc.pgoutput import PG_EPOCH_OFFSET_US

__all__ = ["ReplicationStream"]

_XLOG_DATA = 0x77  # 'w'
_KEEPALIVE = 0x6B  # 'k'
_XLOG_HEADER = struct.Struct(">QQq")  # data start, WAL end, send time
_KEEPALIVE_BODY = struct.Struct(">QqB")  # WAL end, send time, reply requested
_STATUS = struct.Struct(">cQQQqB")  # 'r', written, flushed, applied, send time, reply
_PAYLOAD_AT = 1 + _XLOG_HEADER.size


class ReplicationStream:
    """One ``replication=database`` connection: slot creation, then one logical stream."""

    def __init__(self, dsn: str, *, options: str, status_interval: float) -> None:
        # standard_conforming_strings on: then libpq's escape_string only doubles quotes,
        # which is all the replication command grammar undoes (see _quote).
        conninfo = make_conninfo(
            dsn,
            replication="database",
            options=f"{options} -c standard_conforming_strings=on",
            client_encoding="UTF8",
        )
        self._pgconn = pq.PGconn.connect(conninfo.encode())
        if self._pgconn.status != pq.ConnStatus.OK:
            message = self._error_message()
            self._pgconn.finish()
            raise psycopg.OperationalError(f"cannot open the replication connection: {message}")
        self._escaping = pq.Escaping(self._pgconn)
        self.status_interval = status_interval
        #: The only LSN ever reported to the server: everything before it is durable.
        self.durable_lsn = 0
        #: The server's WAL position from its last keepalive: safe to confirm only when the
        #: reader holds nothing unconfirmed (see the reader's idle confirmation).
        self.server_wal_end = 0
        self.streaming = False
        self._last_status = 0.0

    # -- commands before streaming --------------------------------------------------------

    def create_slot(self, slot: str, *, export_snapshot: bool) -> tuple[int, str | None]:
        """Create a pgoutput slot; returns its consistent LSN and the exported snapshot's name.

        The exported snapshot lives until the next command on this connection, so read it
        before :meth:`start`.
        """
        how = "EXPORT_SNAPSHOT" if export_snapshot else "NOEXPORT_SNAPSHOT"
        result = self._exec(f"CREATE_REPLICATION_SLOT {self._ident(slot)} LOGICAL pgoutput {how}")
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise self._result_error(result)
        consistent = parse_lsn((result.get_value(0, 1) or b"").decode())
        snapshot = result.get_value(0, 2)
        return consistent, snapshot.decode() if snapshot else None

    def start(self, slot: str, options: dict[str, str]) -> None:
        """``START_REPLICATION`` from the slot's confirmed position (the server's choice)."""
        pairs = ", ".join(f"{self._ident(k)} {self._quote(v)}" for k, v in options.items())
        result = self._exec(f"START_REPLICATION SLOT {self._ident(slot)} LOGICAL 0/0 ({pairs})")
        if result.status != pq.ExecStatus.COPY_BOTH:
            raise self._result_error(result)
        self.streaming = True
        self._last_status = time.monotonic()

    # -- the stream ---------------------------------------------------------------------------

    def read(self) -> tuple[int, bytes] | None:
        """The next XLogData as (data start, payload), or None when nothing has arrived.

        Keepalives are consumed here: their WAL end is noted, and when the server asks for a
        reply it gets one, carrying our durable LSN and nothing else.
        """
        pgconn = self._pgconn
        consumed = False
        while True:
            nbytes, data = pgconn.get_copy_data(1)
            if nbytes > 0:
                kind = data[0]
                if kind == _XLOG_DATA:
                    return _XLOG_HEADER.unpack_from(data, 1)[0], bytes(data[_PAYLOAD_AT:])
                if kind == _KEEPALIVE:
                    wal_end, _sent, reply = _KEEPALIVE_BODY.unpack_from(data, 1)
                    if wal_end > self.server_wal_end:
                        self.server_wal_end = wal_end
                    if reply:
                        self.send_status()
                    continue
                raise psycopg.OperationalError(
                    f"unexpected replication message {bytes(data[:1])!r} ({nbytes} bytes)"
                )
            if nbytes == 0:
                if consumed:
                    return None
                # Once per socket read, not per message: a keepalive asking for a reply can
                # sit behind megabytes of data while we are busy, and the server drops a
                # client that stays silent for wal_sender_timeout.
                self.keep_alive()
                pgconn.consume_input()  # reads what the socket has, never blocks
                consumed = True
                continue
            raise self._stream_ended()

    def wait(self, timeout: float) -> None:
        """Sleep until the socket has something to read, at most ``timeout`` seconds."""
        select.select([self._pgconn.socket], [], [], timeout)

    def confirm(self, lsn: int) -> None:
        """Everything before ``lsn`` is durable: tell the server (never moves backwards)."""
        if lsn > self.durable_lsn:
            self.durable_lsn = lsn
            self.send_status()

    def keep_alive(self) -> None:
        """Send our durable LSN if the status interval has passed since the last update.

        Called while we cannot read (the sink is full, or we wait for a batch to be durable):
        the server's keepalives then sit unread behind data, and without replies it would drop
        the connection after ``wal_sender_timeout``.
        """
        if self.streaming and time.monotonic() - self._last_status >= self.status_interval:
            self.send_status()

    def send_status(self) -> None:
        """A Standby status update: written, flushed and applied are all the durable LSN."""
        lsn = self.durable_lsn
        now_us = time.time_ns() // 1000 - PG_EPOCH_OFFSET_US
        pgconn = self._pgconn
        # A blocking connection: put_copy_data and flush return once it is all sent (and
        # raise OperationalError when the connection is gone).
        pgconn.put_copy_data(_STATUS.pack(b"r", lsn, lsn, lsn, now_us, 0))
        pgconn.flush()
        self._last_status = time.monotonic()

    def close(self) -> None:
        self.streaming = False
        self._pgconn.finish()

    # -- commands: quoting by libpq -----------------------------------------------------------

    def _ident(self, name: str) -> str:
        return self._escaping.escape_identifier(name.encode()).decode()

    def _quote(self, value: str) -> str:
        """A string literal. Not ``escape_literal``: given a backslash it writes ``E'...'``,
        which the replication command grammar does not know (a syntax error); quoted by
        ``escape_string`` (quotes doubled, backslashes kept: the session has
        standard_conforming_strings on) the value reaches the server unchanged."""
        return "'" + self._escaping.escape_string(value.encode()).decode() + "'"

    # -- errors -------------------------------------------------------------------------------

    def _exec(self, command: str) -> pq.abc.PGresult:
        return self._pgconn.exec_(command.encode())

    def _result_error(self, result: pq.abc.PGresult) -> psycopg.Error:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            return psycopg.errors.error_from_result(result)
        status = pq.ExecStatus(result.status).name
        return psycopg.OperationalError(f"unexpected answer to a replication command: {status}")

    def _stream_ended(self) -> psycopg.Error:
        """The server ended the COPY (an error, a shutdown): say why, from its result."""
        self.streaming = False
        result = self._pgconn.get_result()
        if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
            return psycopg.errors.error_from_result(result)
        return psycopg.OperationalError(
            f"the replication stream ended: {self._error_message() or 'no reason given'}"
        )

    def _error_message(self) -> str:
        # The raw text, severity included ("FATAL: ..."): the reader tells refusals no retry
        # can fix by it.
        return bytes(self._pgconn.error_message).decode("utf-8", "replace").strip()
