"""The change handler, fed pgoutput messages built byte by byte: no database.

That PostgreSQL sends these messages for these statements, and that the envelope matches
Debezium's, is shown against real servers in tests/integration (test_cdc_reader.py,
test_cdc_types.py, test_debezium_equivalence.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pytest

from shopstream.cdc.handler import HEARTBEAT_PREFIX, ChangeHandler
from shopstream.cdc.pgoutput import (
    PG_EPOCH_OFFSET_US,
    UNCHANGED_TOAST,
    Decoder,
    ProtocolError,
    Relation,
)
from shopstream.cdc.snapshot import plan_snapshot
from tests.support.pgoutput import (
    begin_msg,
    commit_msg,
    delete_msg,
    insert_msg,
    logical_msg,
    relation_msg,
    truncate_msg,
    update_msg,
)

INT4, TEXT = 23, 25
STOCK = relation_msg(7, "public", "stock", [(1, "id", INT4, -1), (0, "qty", INT4, -1)])
NOTES = relation_msg(
    8, "public", "notes", [(1, "id", INT4, -1), (1, "body", TEXT, -1)], identity=b"f"
)


class Keys:
    """The catalogue's answer, counting how often it is asked."""

    def __init__(self, keys: Mapping[tuple[str, str], Sequence[str]]) -> None:
        self.keys = keys
        self.calls = 0

    def __call__(self) -> Mapping[tuple[str, str], Sequence[str]]:
        self.calls += 1
        return self.keys


def handler_for(*messages: bytes, keys: Keys | None = None) -> ChangeHandler:
    handler = ChangeHandler("shop", keys or Keys({("public", "stock"): ["id"]}))
    handler.refresh_keys()
    for lsn, payload in enumerate(messages, start=0x4000):
        handler.handle(payload, lsn)
    return handler


def column(handler: ChangeHandler, table: str, name: str) -> list[object]:
    values: list[object] = getattr(handler.columns.tables[table], name)
    return [json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v for v in values]


def test_a_transaction_becomes_changes_and_its_end_a_safe_lsn() -> None:
    handler = handler_for(
        STOCK,
        begin_msg(0x5000, 901, commit_ts=1_000_001),
        insert_msg(7, ["1", "10"]),
        update_msg(7, ["1", "11"]),
        delete_msg(7, ["1", None]),
    )
    assert handler.tx is not None and handler.safe_lsn is None  # open: nothing safe yet
    handler.handle(commit_msg(0x5000, 0x5028, commit_ts=1_000_001), 0x5000)
    assert handler.tx is None and handler.safe_lsn == 0x5028
    assert column(handler, "cdc_stock", "op") == ["c", "u", "d"]
    assert column(handler, "cdc_stock", "change_id") == [
        f"0000000000005000-{n:08d}" for n in (1, 2, 3)
    ]
    assert column(handler, "cdc_stock", "before") == [None, None, {"id": 1, "qty": None}]
    after = [{"id": 1, "qty": 10}, {"id": 1, "qty": 11}, None]
    assert column(handler, "cdc_stock", "after") == after
    assert column(handler, "cdc_stock", "key") == [{"id": 1}] * 3
    assert column(handler, "cdc_stock", "tx_id") == [901] * 3
    # pgoutput counts µs from 2000-01-01; the envelope, ms from 1970.
    assert handler.stats.last_commit_us == 1_000_001 + PG_EPOCH_OFFSET_US
    source = column(handler, "cdc_stock", "source")[0]
    assert isinstance(source, dict)
    assert source["ts_ms"] == (1_000_001 + PG_EPOCH_OFFSET_US) // 1000
    assert (source["db"], source["schema"], source["table"]) == ("shop", "public", "stock")
    assert handler.stats.transactions == 1


def test_a_key_change_is_a_delete_of_the_old_key_and_a_create_of_the_new() -> None:
    handler = handler_for(
        STOCK,
        begin_msg(0x5000, 901),
        update_msg(7, ["2", "10"], old=["1", None], old_kind=b"K"),
        commit_msg(0x5000, 0x5028),
    )
    assert column(handler, "cdc_stock", "op") == ["d", "c"]
    assert column(handler, "cdc_stock", "key") == [{"id": 1}, {"id": 2}]
    assert column(handler, "cdc_stock", "lsn") == [0x4002, 0x4002]


def test_with_replica_identity_full_unchanged_toasted_values_come_from_the_old_row() -> None:
    handler = handler_for(
        NOTES,
        begin_msg(0x5000, 901),
        update_msg(8, ["1", UNCHANGED_TOAST], old=["1", "a long text"]),
        commit_msg(0x5000, 0x5028),
        keys=Keys({("public", "notes"): []}),
    )
    assert column(handler, "cdc_notes", "after") == [{"id": 1, "body": "a long text"}]


def test_truncate_is_one_change_per_table() -> None:
    handler = handler_for(STOCK, NOTES, begin_msg(0x5000, 9), truncate_msg(7, 8))
    assert column(handler, "cdc_stock", "op") == ["t"]
    assert column(handler, "cdc_notes", "op") == ["t"]
    assert column(handler, "cdc_stock", "after") == [None]


def test_our_heartbeat_between_transactions_is_a_safe_lsn_and_nothing_else_is() -> None:
    handler = handler_for(logical_msg("someone.else"))
    assert handler.safe_lsn is None
    handler.handle(logical_msg(HEARTBEAT_PREFIX), 0x7000)
    assert handler.safe_lsn == 0x7000
    # Inside a transaction a heartbeat says nothing: the transaction is still open.
    handler.handle(begin_msg(0x9000, 5), 0x8000)
    handler.handle(logical_msg(HEARTBEAT_PREFIX), 0x8800)
    assert handler.safe_lsn == 0x7000
    assert handler.pending == 0


def test_a_table_not_seen_before_makes_the_handler_ask_for_keys_again() -> None:
    keys = Keys({("public", "stock"): ["id"]})
    handler = handler_for(STOCK, keys=keys)
    assert keys.calls == 1  # the refresh at the start only: stock was known
    keys.keys = {("public", "stock"): ["id"], ("public", "notes"): ["body"]}
    handler.handle(NOTES, 0x5000)
    assert keys.calls == 2
    handler.handle(begin_msg(0x6000, 3), 0x5001)
    handler.handle(insert_msg(8, ["1", "x"]), 0x5002)
    # The key the catalogue named, not the key flags (all columns, identity FULL).
    assert column(handler, "cdc_notes", "key") == [{"body": "x"}]


@pytest.mark.parametrize(
    "message", [insert_msg(7, ["1", "2"]), delete_msg(7, ["1", None]), truncate_msg(7)]
)
def test_a_change_outside_a_transaction_is_a_protocol_error(message: bytes) -> None:
    with pytest.raises(ProtocolError, match="outside a transaction"):
        handler_for(STOCK, message)


def test_take_hands_over_the_batch_and_starts_afresh() -> None:
    handler = handler_for(STOCK)
    assert handler.take() is None  # nothing gathered, nothing safe
    handler.handle(begin_msg(0x5000, 1), 0x4100)
    handler.handle(insert_msg(7, ["1", "1"]), 0x4101)
    handler.handle(insert_msg(7, ["2", "2"]), 0x4102)
    mid = handler.take()  # a batch can end mid-transaction: no LSN is safe then
    assert mid is not None and (mid.count, mid.safe_lsn) == (2, None)
    assert mid.rows["cdc_stock"].column("change_id").to_pylist() == [
        "0000000000005000-00000001",
        "0000000000005000-00000002",
    ]
    handler.handle(insert_msg(7, ["3", "3"]), 0x4103)
    handler.handle(commit_msg(0x5000, 0x5028), 0x5000)
    end = handler.take()
    assert end is not None and (end.count, end.safe_lsn) == (1, 0x5028)
    assert end.rows["cdc_stock"].column("change_id").to_pylist() == ["0000000000005000-00000003"]
    assert handler.stats.changes == 3
    assert handler.pending == 0 and handler.take() is None
    # A transaction with no captured change still moves the safe LSN: an empty batch.
    handler.handle(begin_msg(0x6000, 2), 0x5100)
    handler.handle(commit_msg(0x6000, 0x6028), 0x6000)
    empty = handler.take()
    assert empty is not None and (empty.count, empty.safe_lsn, empty.rows) == (0, 0x6028, {})


def test_snapshot_rows_are_reads_at_the_consistent_lsn() -> None:
    relation = Decoder().decode(STOCK)
    assert isinstance(relation, Relation)
    handler = handler_for()
    decoder = handler.snapshot_table(relation, {})
    tx = plan_snapshot([("public", "stock")], "snap", 0x16B3748, 100).transaction(0)
    handler.snapshot_row(relation, decoder, ["1", "5"], tx)
    handler.snapshot_row(relation, decoder, ["2", "five"], tx)
    assert column(handler, "cdc_stock", "op") == ["r"]
    assert column(handler, "cdc_stock", "lsn") == [0x16B3748]
    assert column(handler, "cdc_stock", "change_id") == ["00000000016B3748-r00000001"]
    assert handler.stats.snapshot_rows == 1 and handler.stats.dead_letters == 1
    batch = handler.take()
    assert batch is not None and batch.safe_lsn is None  # the slot starts after it anyway
    assert "five" in batch.rows["dead_letter"][0]["payload"]
    assert handler.stats.changes == 0  # snapshot reads are counted as such, not as changes
