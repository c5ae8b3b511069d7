"""An undecodable change goes to raw.dead_letter with its reason; the stream goes on.

PostgreSQL itself never sends a value our converters reject (that is what the integration
tests show), so the bad input here is built by hand, byte for byte, and fed to the reader's
message handling.
"""

from __future__ import annotations

import struct
from pathlib import Path

from shopstream.cdc.changes import ChangeColumns
from shopstream.cdc.pgoutput import Decoder
from shopstream.cdc.reader import ChangeReader, _Batch
from shopstream.cdc.values import RowDecoders
from shopstream.config import CdcSettings
from tests.support.pgoutput import insert_msg, relation_msg

INT4 = 23


def begin(final_lsn: int, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, 0, xid)


def commit(lsn: int) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, lsn, lsn + 40, 0)


def test_bad_value_and_garbage_are_dead_lettered_between_good_changes(tmp_path: Path) -> None:
    reader = ChangeReader("", CdcSettings(), sink=None, state_dir=tmp_path)  # type: ignore[arg-type]
    reader._decoder = Decoder()
    reader._keys[("public", "stock")] = ["id"]
    reader._row_decoders = RowDecoders(reader._decoder.types, reader._keys)
    reader._columns = ChangeColumns("shop")
    reader._batch = _Batch(reader._columns)

    messages = [
        relation_msg(7, "public", "stock", [(1, "id", INT4, -1), (0, "qty", INT4, -1)]),
        begin(0x5000, 901),
        insert_msg(7, ["1", "10"]),
        insert_msg(7, ["2", "ten"]),  # int4 column holding text: cannot convert
        b"\xfe-not-a-message",
        insert_msg(7, ["3", "30"]),
        commit(0x5000),
    ]
    for lsn, payload in enumerate(messages, start=0x4000):
        reader._handle(payload, lsn, admin=None)  # type: ignore[arg-type]

    batch = reader._batch
    assert batch.safe_lsn == 0x5000 + 40  # the transaction completed despite the bad change
    letters = batch.dead_letters
    assert [d["source"] for d in letters] == ["cdc", "cdc"]
    assert "qty" in letters[0]["reason"] and "'ten'" in letters[0]["reason"]
    assert "undecodable pgoutput message" in letters[1]["reason"]
    stock = batch.columns.tables["cdc_stock"]
    # Good neighbours keep their ids; the bad change's position is not reused.
    assert stock.change_id == ["0000000000005000-00000001", "0000000000005000-00000003"]
    assert stock.after == ['{"id":1,"qty":10}', '{"id":3,"qty":30}']
    assert reader.stats.dead_letters == 2
