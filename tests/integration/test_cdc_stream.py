"""The replication stream's commands, quoted by libpq, on a real server."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from shopstream.cdc import catalog
from shopstream.cdc.pgoutput import Decoder, Insert
from shopstream.cdc.stream import ReplicationStream

# A quote and a backslash: the two characters a literal's quoting can get wrong.
PUBLICATION = "shop's\\pub"


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_names_with_quotes_and_backslashes_reach_the_server_unchanged(
    postgres: Any, conforming: str
) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        # Whatever the database's setting, the stream's session quotes the same way.
        conn.execute(
            f'ALTER DATABASE "{postgres.dbname}" SET standard_conforming_strings = {conforming}'
        )
        conn.execute("CREATE TABLE stock (id int PRIMARY KEY)")
        conn.execute('CREATE PUBLICATION "shop\'s\\pub" FOR TABLE stock')
    stream = ReplicationStream(postgres.dsn, options=catalog.SESSION_OPTIONS, status_interval=1)
    try:
        consistent, snapshot = stream.create_slot("shop_slot", export_snapshot=False)
        assert snapshot is None
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots"
                " WHERE slot_name = 'shop_slot'"
            ).fetchone()
            assert row is not None and consistent == catalog.parse_lsn(row[0]) > 0
            stream.start("shop_slot", {"proto_version": "1", "publication_names": PUBLICATION})
            conn.execute("INSERT INTO stock VALUES (7)")
        decoder = Decoder()
        for _ in range(200):
            message = stream.read()
            if message is None:
                stream.wait(0.05)
                continue
            decoded = decoder.decode(message[1])
            if isinstance(decoded, Insert):
                assert decoded.relation.name == "stock" and decoded.new == ["7"]
                break
        else:
            raise AssertionError("the insert never arrived")
    finally:
        stream.close()
