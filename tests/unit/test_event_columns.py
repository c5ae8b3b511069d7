"""``EventColumns`` holds one list per raw.events column, declared, and cannot drift from it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from shopstream.collector.intake import EventColumns, RequestInfo, take_native
from shopstream.config import CollectorSettings
from shopstream.events.raw import RAW_EVENTS

NOW = datetime.now(UTC)
INFO = RequestInfo(ip="10.0.0.1", user_agent="test", route="/v1/events", received_at=NOW)


def test_the_fields_are_the_raw_events_columns_in_order() -> None:
    declared = [f.name for f in dataclasses.fields(EventColumns)]
    # event_date is derived from event_ts when the columns become Arrow, never appended.
    assert declared == [name for name in RAW_EVENTS.names if name != "event_date"]
    assert not hasattr(EventColumns(), "__dict__")  # slots: an attribute typo fails loudly


def test_columns_become_the_raw_events_table() -> None:
    items = [
        {"event_type": "app_open", "user_id": f"u{i}", "event_ts": NOW.isoformat()}
        for i in range(3)
    ]
    columns = take_native(items, INFO, CollectorSettings()).events
    assert len(columns) == 3
    table = columns.to_arrow()
    assert table.schema == RAW_EVENTS
    assert table.column("user_id").to_pylist() == ["u0", "u1", "u2"]
    assert table.column("event_date").to_pylist() == [NOW.date()] * 3
    merged = EventColumns()
    merged.extend(columns)
    merged.extend(columns)
    assert merged.to_arrow().num_rows == 6 and len(columns) == 3
    kept = merged.without({1, 4})
    assert kept.to_arrow().column("user_id").to_pylist() == ["u0", "u2", "u0", "u2"]
    assert len(merged) == 6  # the original is left as it was
