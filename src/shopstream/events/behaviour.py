"""Behaviour events: the one contract for everything a shopper does.

Each event type is a Pydantic model with a literal ``event_type`` and its own typed
``properties``; :data:`Event` is the discriminated union of all of them. The JSON Schema
published by the collector is generated from these models, so they are the documentation.

>>> event = parse_event({"event_type": "search", "anonymous_id": "a1",
...                      "event_ts": "2026-11-27T10:00:00Z", "properties": {"query": "socks"}})
>>> event.properties.query
'socks'
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

DeviceType = Literal["ios", "android", "web_mobile", "web_desktop"]

Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]
ProductId = Annotated[str, Field(min_length=1, max_length=128)]
ShortText = Annotated[str, Field(max_length=2048)]


class Properties(BaseModel):
    """Per-type properties. Unknown keys are kept (trackers send more than we type)."""

    model_config = ConfigDict(extra="allow")


class NoProperties(Properties):
    pass


class PageViewProperties(Properties):
    page_title: ShortText | None = None
    page_type: ShortText | None = None


class ProductProperties(Properties):
    product_id: ProductId
    name: ShortText | None = None
    category: ShortText | None = None
    price: Money | None = None


class ProductClickProperties(ProductProperties):
    list_name: ShortText | None = None
    position: Annotated[int, Field(ge=0)] | None = None


class SearchProperties(Properties):
    query: Annotated[str, Field(max_length=1024)]
    results_count: Annotated[int, Field(ge=0)] | None = None


class SearchClickProperties(Properties):
    query: Annotated[str, Field(max_length=1024)]
    product_id: ProductId
    position: Annotated[int, Field(ge=0)] | None = None


class CartProperties(ProductProperties):
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    cart_id: ShortText | None = None


class CheckoutProperties(Properties):
    cart_id: ShortText | None = None
    cart_value: Money | None = None
    items_count: Annotated[int, Field(ge=0)] | None = None
    currency: Annotated[str, Field(min_length=3, max_length=3)] | None = None


class LineItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    product_id: ProductId
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    price: Money | None = None
    category: ShortText | None = None


class PurchaseProperties(Properties):
    order_id: Annotated[str, Field(min_length=1, max_length=128)]
    revenue: Money
    currency: Annotated[str, Field(min_length=3, max_length=3)] = "KRW"
    items: list[LineItem] = Field(default_factory=list)
    shipping: Money | None = None
    discount: Money | None = None
    coupon: ShortText | None = None


class ReviewProperties(Properties):
    product_id: ProductId
    rating: Annotated[int, Field(ge=1, le=5)]
    review_id: ShortText | None = None


class PushClickProperties(Properties):
    campaign_id: ShortText | None = None
    push_id: ShortText | None = None


class BannerClickProperties(Properties):
    banner_id: Annotated[str, Field(min_length=1, max_length=256)]
    placement: ShortText | None = None


class EventBase(BaseModel):
    """Fields every event carries. ``received_at`` is the server's and is not accepted here."""

    model_config = ConfigDict(extra="ignore", str_max_length=8192)

    event_id: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="Client-supplied unique id; assigned by the server when absent."
    )
    event_ts: datetime = Field(description="Client clock; naive timestamps are taken as UTC.")
    user_id: Annotated[str, Field(max_length=256)] | None = None
    anonymous_id: Annotated[str, Field(max_length=256)] | None = None
    session_id: Annotated[str, Field(max_length=256)] | None = None
    device_type: DeviceType | None = None
    page_url: ShortText | None = None
    referrer: ShortText | None = None
    utm_source: Annotated[str, Field(max_length=256)] | None = None
    utm_medium: Annotated[str, Field(max_length=256)] | None = None
    utm_campaign: Annotated[str, Field(max_length=256)] | None = None

    @field_validator("event_ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00+14:00 is a valid timestamp whose UTC time is before year 1
            # (and 9999-12-31T23:00-14:00 after 9999): a ValueError makes it this field's
            # validation error instead of an exception that fails the whole request.
            raise ValueError(
                f"{value.isoformat()} is out of range once converted to UTC (years 1 to 9999)"
            ) from None

    @model_validator(mode="after")
    def _someone(self) -> EventBase:
        if not self.user_id and not self.anonymous_id:
            raise ValueError("either user_id or anonymous_id is required")
        return self


class PageView(EventBase):
    event_type: Literal["page_view"]
    properties: PageViewProperties = Field(default_factory=PageViewProperties)


class ProductView(EventBase):
    event_type: Literal["product_view"]
    properties: ProductProperties


class ProductClick(EventBase):
    event_type: Literal["product_click"]
    properties: ProductClickProperties


class Search(EventBase):
    event_type: Literal["search"]
    properties: SearchProperties


class SearchClick(EventBase):
    event_type: Literal["search_click"]
    properties: SearchClickProperties


class AddToCart(EventBase):
    event_type: Literal["add_to_cart"]
    properties: CartProperties


class RemoveFromCart(EventBase):
    event_type: Literal["remove_from_cart"]
    properties: CartProperties


class BeginCheckout(EventBase):
    event_type: Literal["begin_checkout"]
    properties: CheckoutProperties = Field(default_factory=CheckoutProperties)


class Purchase(EventBase):
    event_type: Literal["purchase"]
    properties: PurchaseProperties


class WishlistAdd(EventBase):
    event_type: Literal["wishlist_add"]
    properties: ProductProperties


class ReviewWrite(EventBase):
    event_type: Literal["review_write"]
    properties: ReviewProperties


class AppOpen(EventBase):
    event_type: Literal["app_open"]
    properties: NoProperties = Field(default_factory=NoProperties)


class AppClose(EventBase):
    event_type: Literal["app_close"]
    properties: NoProperties = Field(default_factory=NoProperties)


class PushClick(EventBase):
    event_type: Literal["push_click"]
    properties: PushClickProperties = Field(default_factory=PushClickProperties)


class BannerClick(EventBase):
    event_type: Literal["banner_click"]
    properties: BannerClickProperties


class Custom(EventBase):
    """A tracker event with no shop meaning of its own (e.g. a Segment track we do not map)."""

    event_type: Literal["custom"]
    event_name: Annotated[str, Field(min_length=1, max_length=256)]
    properties: Properties = Field(default_factory=Properties)


Event = Annotated[
    PageView
    | ProductView
    | ProductClick
    | Search
    | SearchClick
    | AddToCart
    | RemoveFromCart
    | BeginCheckout
    | Purchase
    | WishlistAdd
    | ReviewWrite
    | AppOpen
    | AppClose
    | PushClick
    | BannerClick
    | Custom,
    Field(discriminator="event_type"),
]

EVENT_MODELS: dict[str, type[EventBase]] = {
    model.model_fields["event_type"].annotation.__args__[0]: model  # type: ignore[union-attr]
    for model in (
        PageView,
        ProductView,
        ProductClick,
        Search,
        SearchClick,
        AddToCart,
        RemoveFromCart,
        BeginCheckout,
        Purchase,
        WishlistAdd,
        ReviewWrite,
        AppOpen,
        AppClose,
        PushClick,
        BannerClick,
        Custom,
    )
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_MODELS)

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: Any) -> EventBase:
    """Validate one event given as a Python object (already decoded JSON)."""
    return event_adapter.validate_python(data)
