"""Segment's HTTP Tracking API, mapped onto the behaviour-event contract.

Existing Segment and RudderStack tracker SDKs send to shopstream unchanged. ``messageId``
becomes ``event_id``; Segment's e-commerce spec names map to event types; any other track
name is kept as event type ``custom`` with its name. The message as received is kept in the
``payload`` column.

>>> to_native({"type": "track", "event": "Product Viewed", "anonymousId": "a",
...            "messageId": "m1", "timestamp": "2026-11-27T10:00:00Z",
...            "properties": {"product_id": "P1", "price": 9.5}})["event_type"]
'product_view'
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

#: Segment e-commerce and mobile spec names → our event types (matched case-insensitively,
#: with ``snake_case`` spellings too, as RudderStack and some SDKs send them).
TRACK_NAMES: dict[str, str] = {
    "products searched": "search",
    "product clicked": "product_click",
    "product viewed": "product_view",
    "product added": "add_to_cart",
    "product removed": "remove_from_cart",
    "checkout started": "begin_checkout",
    "order completed": "purchase",
    "product added to wishlist": "wishlist_add",
    "product reviewed": "review_write",
    "promotion clicked": "banner_click",
    "push notification tapped": "push_click",
    "application opened": "app_open",
    "application backgrounded": "app_close",
}

SEGMENT_TYPES = ("track", "page", "screen", "identify", "group", "alias")


class SegmentError(ValueError):
    pass


def _name_key(name: str) -> str:
    return name.strip().replace("_", " ").lower()


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def event_time(message: dict[str, Any], batch_sent_at: Any, received_at: datetime) -> Any:
    """Segment's rule: correct the device clock by how far its ``sentAt`` was off ours.

    ``timestamp = receivedAt - (sentAt - originalTimestamp)``; without ``sentAt`` the client's
    timestamp stands; without any client time, the server's receive time.
    """
    field = "originalTimestamp" if message.get("originalTimestamp") else "timestamp"
    original = message.get(field)
    original_ts = _parse_ts(original)
    own_sent_at = message.get("sentAt")
    sent_at = _parse_ts(own_sent_at or batch_sent_at)
    if original_ts is not None and sent_at is not None:
        try:
            return (received_at - (sent_at - original_ts)).isoformat()
        except OverflowError:
            # Both are valid dates, but far enough apart (year 1 and year 9999) that the
            # corrected time falls off the calendar: this message's error, not the batch's.
            whose = "sentAt" if own_sent_at else "the batch's sentAt"
            raise SegmentError(
                f"{field} {original!r} corrected by {whose} "
                f"{own_sent_at or batch_sent_at!r} (receivedAt - (sentAt - {field})) is out of "
                "range (years 1 to 9999); check the device clock"
            ) from None
    if original is not None:
        return original  # validated (and reported) by the contract
    return received_at.isoformat()


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _device_type(context: dict[str, Any]) -> str | None:
    device = _object(context.get("device"))
    os_info = _object(context.get("os"))
    for value in (device.get("type"), os_info.get("name")):
        if isinstance(value, str):
            lowered = value.lower()
            if lowered in ("ios", "iphone", "ipad", "ipados"):
                return "ios"
            if lowered == "android":
                return "android"
    agent = context.get("userAgent")
    if isinstance(agent, str) and agent:
        return "web_mobile" if "Mobi" in agent else "web_desktop"
    return None


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None and value != "":
            return value
    return None


def _product_properties(props: dict[str, Any]) -> dict[str, Any]:
    out = dict(props)
    out["product_id"] = _first(props.get("product_id"), props.get("sku"), props.get("id"))
    return out


def _map_properties(event_type: str, props: dict[str, Any]) -> dict[str, Any]:
    if event_type in ("product_view", "product_click", "add_to_cart", "remove_from_cart"):
        return _product_properties(props)
    if event_type == "wishlist_add":
        return _product_properties(props)
    if event_type == "search":
        return {**props, "query": props.get("query")}
    if event_type == "purchase":
        out = dict(props)
        products = out.pop("products", None)
        out["revenue"] = _first(props.get("revenue"), props.get("total"))
        if isinstance(products, list):
            out["items"] = [_product_properties(p) if isinstance(p, dict) else p for p in products]
        if isinstance(out.get("currency"), str):
            out["currency"] = out["currency"].upper()
        return out
    if event_type == "begin_checkout":
        out = dict(props)
        products = out.pop("products", None)
        out["cart_value"] = _first(props.get("value"), props.get("revenue"), props.get("total"))
        if isinstance(products, list):
            out["items_count"] = len(products)
        if isinstance(out.get("currency"), str):
            out["currency"] = out["currency"].upper()
        return out
    if event_type == "review_write":
        return {**_product_properties(props), "review_id": props.get("review_id")}
    if event_type == "banner_click":
        return {
            **props,
            "banner_id": _first(
                props.get("promotion_id"), props.get("creative"), props.get("name")
            ),
            "placement": props.get("position"),
        }
    if event_type == "push_click":
        return {**props, "campaign_id": _first(props.get("campaign_id"), props.get("campaign"))}
    return props


def to_native(
    message: dict[str, Any],
    *,
    kind: str | None = None,
    batch_sent_at: Any = None,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """Map one Segment message to a native event dict (validated later by the contract).

    ``kind`` is the message type implied by the route (``/v1/track`` → track); inside a batch
    the message's own ``type`` decides.
    """
    received_at = received_at or datetime.now(UTC)
    message_type = message.get("type") or kind
    if message_type not in SEGMENT_TYPES:
        expected = ", ".join(SEGMENT_TYPES)
        raise SegmentError(f"unknown Segment message type {message_type!r}; expected: {expected}")
    context = _object(message.get("context"))
    page = _object(context.get("page"))
    campaign = _object(context.get("campaign"))
    raw_props = message.get("properties")
    props: dict[str, Any] = dict(raw_props) if isinstance(raw_props, dict) else {}

    event_name: str | None
    if message_type == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name.strip():
            raise SegmentError("a track message needs an 'event' name")
        event_type = TRACK_NAMES.get(_name_key(name), "custom")
        event_name = name
        properties = _map_properties(event_type, props)
    elif message_type in ("page", "screen"):
        event_type = "page_view"
        event_name = message.get("name") if isinstance(message.get("name"), str) else None
        properties = {
            **props,
            "page_title": _first(props.get("title"), event_name),
            "page_type": _first(message.get("category"), props.get("category")),
        }
    else:  # identify, group, alias: kept, as custom events named after the call
        event_type = "custom"
        event_name = message_type
        traits = message.get("traits")
        properties = dict(traits) if isinstance(traits, dict) else props
        if message_type == "group":
            properties["group_id"] = message.get("groupId")
        if message_type == "alias":
            properties["previous_id"] = message.get("previousId")

    native: dict[str, Any] = {
        "event_type": event_type,
        "event_id": message.get("messageId"),
        "event_ts": event_time(message, batch_sent_at, received_at),
        "user_id": message.get("userId"),
        "anonymous_id": message.get("anonymousId"),
        "session_id": _first(
            context.get("sessionId"), context.get("session_id"), props.get("session_id")
        ),
        "device_type": _device_type(context),
        "page_url": _first(page.get("url"), props.get("url")),
        "referrer": _first(page.get("referrer"), props.get("referrer")),
        "utm_source": campaign.get("source"),
        "utm_medium": campaign.get("medium"),
        "utm_campaign": campaign.get("name"),
        "properties": {k: v for k, v in properties.items() if v is not None},
    }
    if event_type == "custom" or event_name:
        native["event_name"] = event_name
    for key in ("user_id", "anonymous_id", "session_id", "event_id"):
        if native[key] is not None and not isinstance(native[key], str):
            native[key] = str(native[key])  # SDKs send numeric user ids; the contract has text
    return native
