"""An undecodable change goes to raw.dead_letter with its reason; the stream goes on.

PostgreSQL itself never sends a value our converters reject (that is what the integration
tests show), so the bad input here is built by hand, byte for byte, and fed to the change
handler.
"""

from __future__ import annotations

import json

from shopstream.cdc.handler import ChangeHandler
from tests.support.pgoutput import begin_msg, commit_msg, insert_msg, relation_msg

INT4 = 23


def test_bad_value_and_garbage_are_dead_lettered_between_good_changes() -> None:
    handler = ChangeHandler("shop", lambda: {("public", "stock"): ["id"]})
    handler.refresh_keys()
    messages = [
        relation_msg(7, "public", "stock", [(1, "id", INT4, -1), (0, "qty", INT4, -1)]),
        begin_msg(0x5000, 901),
        insert_msg(7, ["1", "10"]),
        insert_msg(7, ["2", "ten"]),  # int4 column holding text: cannot convert
        b"\xfe-not-a-message",
        insert_msg(7, ["3", "30"]),
        commit_msg(0x5000, 0x5000 + 40),
    ]
    for lsn, payload in enumerate(messages, start=0x4000):
        handler.handle(payload, lsn)

    stock = handler.columns.tables["cdc_stock"]
    # Good neighbours keep their ids; the bad change's position is not reused.
    assert stock.change_id == ["0000000000005000-00000001", "0000000000005000-00000003"]
    assert stock.after == ['{"id":1,"qty":10}', '{"id":3,"qty":30}']
    assert handler.stats.dead_letters == 2

    batch = handler.take()
    assert batch is not None
    assert batch.safe_lsn == 0x5000 + 40  # the transaction completed despite the bad change
    assert batch.count == 4  # two changes, two dead letters
    letters = batch.rows["dead_letter"]
    assert [d["source"] for d in letters] == ["cdc", "cdc"]
    assert "qty" in letters[0]["reason"] and "'ten'" in letters[0]["reason"]
    # Where it was: the message's LSN, the transaction and the table.
    assert json.loads(letters[0]["context"]) == {
        "lsn": 0x4003,
        "tx_id": 901,
        "table": "public.stock",
    }
    assert "undecodable pgoutput message" in letters[1]["reason"]
    assert batch.rows["cdc_stock"].num_rows == 2
