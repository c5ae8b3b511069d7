"""Why a request, an event or a row was refused: one closed set of reason codes.

A code's value is the wire format: the ``code``/``error`` of the collector's JSON answers, the
``reason`` label of the Prometheus counters and ``code`` in a raw.dead_letter row's context.
Clients, dashboards and dead-letter queries match these strings, so a member may be added but
never renamed. A :class:`~enum.StrEnum` member *is* its string (``==``, ``str()``, f-strings,
orjson and prometheus_client all give the value), so typed code writes the same bytes.

>>> ReasonCode.FUTURE_TIMESTAMP == "future_timestamp"
True
>>> f"{ReasonCode.BAD_GZIP}"
'bad_gzip'
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    # -- a whole request is refused (before or while its body is read) -------------------
    INVALID_JSON = "invalid_json"
    INVALID_BODY = "invalid_body"
    BAD_GZIP = "bad_gzip"
    BODY_TOO_LARGE = "body_too_large"
    TOO_MANY_EVENTS = "too_many_events"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    UNAUTHORIZED = "unauthorized"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    BUSY = "busy"
    REQUEST_TIMEOUT = "request_timeout"
    HEADERS_TOO_LARGE = "headers_too_large"
    CLIENT_DISCONNECTED = "client_disconnected"
    SINK_UNAVAILABLE = "sink_unavailable"
    SINK_ERROR = "sink_error"
    INTERNAL_ERROR = "internal_error"
    #: Every event of the request was rejected (each with its own code below).
    ALL_REJECTED = "all_rejected"

    # -- one event is rejected; its neighbours are not -----------------------------------
    INVALID_EVENT = "invalid_event"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    MISSING_EVENT_TYPE = "missing_event_type"
    MISSING_FIELD = "missing_field"
    FUTURE_TIMESTAMP = "future_timestamp"
    OLD_TIMESTAMP = "old_timestamp"
    NUMBER_OUT_OF_RANGE = "number_out_of_range"
    TOO_DEEP = "too_deep"
    UNREADABLE_EVENT = "unreadable_event"
    #: The warehouse refused the row (raw.dead_letter source ``loader``).
    LOAD_ERROR = "load_error"

    # -- change data capture -------------------------------------------------------------
    #: A pgoutput message that could not be decoded (raw.dead_letter source ``cdc``).
    UNDECODABLE = "undecodable"
