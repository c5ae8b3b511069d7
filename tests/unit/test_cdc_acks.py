"""The acknowledgement tracker: an LSN is confirmed only once everything before it is durable.

Batches are futures completed by hand here, as the sink completes them once a batch is
committed; the end-to-end proof with a real, stalled sink and SIGKILL is
tests/integration/test_cdc_durability.py.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shopstream.cdc.acks import AckTracker


class SinkFailed(Exception):
    pass


def batch() -> Future[Any]:
    return Future()


def durable(future: Future[Any]) -> Future[Any]:
    future.set_result(None)
    return future


def test_nothing_is_confirmed_before_its_batch_is_durable() -> None:
    acks = AckTracker()
    first = batch()
    acks.submitted(first, 100)
    assert acks.settle(block=False) is None
    assert acks.confirmed_lsn == 0 and acks.in_flight == 1
    durable(first)
    assert acks.settle(block=False) == 100
    assert acks.confirmed_lsn == 100 and acks.in_flight == 0
    assert acks.settle(block=False) is None  # told once


def test_a_later_batch_landing_first_confirms_nothing_past_an_earlier_one() -> None:
    acks = AckTracker(max_in_flight=3)
    first, second = batch(), durable(batch())
    acks.submitted(first, 100)
    acks.submitted(second, 200)
    assert acks.settle(block=False) is None
    assert acks.confirmed_lsn == 0
    durable(first)
    assert acks.settle(block=False) == 200


def test_a_batch_ending_mid_transaction_makes_no_lsn_safe() -> None:
    acks = AckTracker()
    acks.submitted(durable(batch()), None)  # the first part of a large transaction
    assert acks.settle(block=False) is None
    assert acks.in_flight == 0
    acks.submitted(durable(batch()), 300)  # the rest, and its commit
    assert acks.settle(block=False) == 300


def test_a_failed_batch_stops_settling_and_nothing_after_it_is_confirmed() -> None:
    acks = AckTracker(max_in_flight=3)
    ok, failed, later = durable(batch()), batch(), durable(batch())
    acks.submitted(ok, 100)
    acks.submitted(failed, 200)
    acks.submitted(later, 300)
    failed.set_exception(SinkFailed("the writer died"))
    with pytest.raises(SinkFailed):
        acks.settle(block=False)
    # Nothing is confirmed past the failure; not even the batch before it in this call (the
    # session ends here, and the server sends that again too: at least once).
    assert acks.confirmed_lsn == 0
    assert acks.in_flight == 2
    with pytest.raises(SinkFailed):
        acks.settle(block=True, drain=True)
    assert acks.confirmed_lsn == 0
    # The reader reconnects: the server resends everything after what was confirmed.
    acks.clear()
    assert acks.in_flight == 0
    assert acks.settle(block=False) is None


def test_the_confirmed_lsn_never_moves_backwards() -> None:
    acks = AckTracker()
    acks.resume_from(500)  # the slot's confirmed LSN when streaming starts
    acks.resume_from(400)
    assert acks.confirmed_lsn == 500
    acks.submitted(durable(batch()), 450)  # resent from before the slot's position
    assert acks.settle(block=False) is None
    assert acks.confirmed_lsn == 500
    assert acks.idle_confirm(480, open_transaction=False, buffered=0) is None
    assert acks.confirmed_lsn == 500


def test_blocking_waits_oldest_first_until_there_is_room_and_draining_until_none() -> None:
    waited: list[int] = []
    futures = [batch() for _ in range(4)]

    def wait(future: Future[Any]) -> None:  # the sink makes the batch durable meanwhile
        waited.append(futures.index(future))
        durable(future)

    acks = AckTracker(max_in_flight=2)
    for lsn, future in enumerate(futures, start=1):
        acks.submitted(future, lsn * 100)
    assert acks.full
    assert acks.settle(block=True, wait=wait) == 300  # room for one more: one left in flight
    assert waited == [0, 1, 2] and acks.in_flight == 1 and not acks.full
    assert acks.settle(block=True, drain=True, wait=wait) == 400
    assert waited == [0, 1, 2, 3] and acks.in_flight == 0


def test_without_blocking_nothing_is_waited_for() -> None:
    def wait(_future: Future[Any]) -> None:
        raise AssertionError("waited without block")

    acks = AckTracker()
    acks.submitted(batch(), 100)
    assert acks.settle(block=False, wait=wait) is None


@pytest.mark.parametrize(
    ("open_transaction", "buffered", "in_flight"),
    [(True, 0, False), (False, 3, False), (False, 0, True)],
    ids=["open transaction", "changes buffered", "batch in flight"],
)
def test_idle_confirm_only_when_nothing_is_pending(
    open_transaction: bool, buffered: int, in_flight: bool
) -> None:
    acks = AckTracker()
    if in_flight:
        acks.submitted(batch(), None)
    assert acks.idle_confirm(900, open_transaction=open_transaction, buffered=buffered) is None
    assert acks.confirmed_lsn == 0


def test_idle_confirm_moves_to_the_servers_wal_end_when_nothing_is_pending() -> None:
    acks = AckTracker()
    acks.submitted(durable(batch()), 100)
    assert acks.settle(block=False) == 100
    assert acks.idle_confirm(900, open_transaction=False, buffered=0) == 900
    assert acks.confirmed_lsn == 900
    assert acks.idle_confirm(900, open_transaction=False, buffered=0) is None  # not again


# Any order of hand-overs, completions and settles: the confirmed LSN never passes a batch
# that is not durable, and settling confirms all it may.
_STEP = st.one_of(
    st.tuples(st.just("submit"), st.booleans()),  # with a safe LSN, or mid-transaction
    st.tuples(st.just("complete"), st.integers(0, 30)),  # the i-th batch becomes durable
    st.tuples(st.just("settle"), st.booleans()),
)


@given(st.lists(_STEP, max_size=60), st.integers(0, 50))
def test_never_confirmed_past_a_batch_that_is_not_durable(
    steps: list[tuple[str, Any]], resume: int
) -> None:
    acks = AckTracker(max_in_flight=1_000, confirmed_lsn=0)
    acks.resume_from(resume)
    submitted: list[tuple[Future[Any], int | None]] = []
    told = [resume]
    floor = resume  # what was confirmed when nothing was pending
    lsn = 0
    for kind, arg in steps:
        if kind == "submit":
            lsn += 10
            future = batch()
            submitted.append((future, lsn if arg else None))
            acks.submitted(future, lsn if arg else None)
        elif kind == "complete" and arg < len(submitted) and not submitted[arg][0].done():
            durable(submitted[arg][0])
        elif kind == "settle":
            confirmed = acks.settle(block=False)
            if confirmed is not None:
                told.append(confirmed)
            # Allowed: the last safe LSN of the oldest batches that are all durable.
            allowed = floor
            for future, safe in submitted:
                if not future.done():
                    break
                allowed = max(allowed, safe or 0)
            assert acks.confirmed_lsn == allowed  # never past it, and all of it
            if arg:
                idle = acks.idle_confirm(lsn + 5, open_transaction=False, buffered=0)
                if acks.in_flight:
                    assert idle is None
                elif idle is not None:
                    told.append(idle)
                    floor = idle
    assert told == sorted(told)  # what the server is told only ever moves forward
