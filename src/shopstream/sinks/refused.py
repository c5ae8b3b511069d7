"""A record a broker can never take (too large, invalid): its dead letter, which takes its
place in the submission (Kafka's and Pub/Sub's sinks), so that the sender does not send it
again for ever and its neighbours land."""

from __future__ import annotations

import orjson

from shopstream.events.dead_letter import dead_letter_row
from shopstream.events.messages import Message, Topics, encode

#: The longest payload a dead letter keeps of a refused record (well under any broker's
#: message limit, so that the dead letter itself is taken).
_DEAD_LETTER_PAYLOAD_BYTES = 65_536
#: Who a raw table's rows come from: a dead letter's ``source``.
_ORIGIN = {"events": "collector", "source_schemas": "cdc"}


def dead_letter_message(
    message: Message, origin: tuple[str, int], reason: str, topics: Topics
) -> Message:
    """The dead-letter topic's record for ``message``, which the broker refused for ``reason``:
    the payload cut to what surely fits, with the record's size in the reason."""
    table, position = origin
    value = message.value or b""
    kept = value[:_DEAD_LETTER_PAYLOAD_BYTES]
    if len(kept) < len(value):
        reason += (
            f"; the record is {len(value):,} bytes, its payload cut to the first {len(kept):,}"
        )
    source = _ORIGIN.get(table, "cdc" if table.startswith("cdc_") else "")
    if not source:  # a dead letter refused: it keeps the source it had
        try:
            source = str(orjson.loads(value).get("source") or "loader")
        except orjson.JSONDecodeError:
            source = "loader"
    context = {
        "table": table,
        "position": position,
        "topic": message.topic,
        "key": None if message.key is None else message.key.decode("utf-8", "replace"),
        "bytes": len(value),
        **{
            name: message.headers[name]
            for name in ("event_id", "change_id")
            if name in message.headers
        },
    }
    row = dead_letter_row(source, reason, kept, context)
    return encode("dead_letter", [row], topics)[0]
