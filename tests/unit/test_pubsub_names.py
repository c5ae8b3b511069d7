"""What the Pub/Sub sink makes of URLs, keys and headers (Pub/Sub's limits), without a peer."""

from __future__ import annotations

import pytest

from shopstream.config import PubSubSettings
from shopstream.events.messages import Topics, key_from_pubsub, pubsub_key
from shopstream.sinks.pubsub import attributes, ordering_key
from shopstream.sinks.pubsub_admin import project_of, subscription_name


def test_the_url_names_the_project() -> None:
    assert project_of("pubsub://shop-prod") == "shop-prod"
    assert project_of("pubsub://shop-prod/") == "shop-prod"
    for bad in ("pubsub://", "pubsub:shop", "kafka://shop", "pubsub://shop/topic"):
        with pytest.raises(ValueError, match="pubsub://<project>"):
            project_of(bad)


def test_the_ordering_key_is_the_message_key_within_pubsubs_limit() -> None:
    assert ordering_key(None) == ""
    assert ordering_key(b'{"id":7}') == '{"id":7}'
    long_key = b'{"sku":"' + b"x" * 2000 + b'"}'
    hashed = ordering_key(long_key)
    assert hashed.startswith("sha256:") and len(hashed) < 1024
    assert ordering_key(long_key) == hashed  # the same key keeps the same order
    assert ordering_key(long_key + b" ") != hashed


def test_attribute_values_are_cut_to_1024_bytes_on_a_character_boundary() -> None:
    fitted = attributes({"reason": "é" * 1000, "event_type": "search"})
    assert fitted["event_type"] == "search"
    assert len(fitted["reason"].encode()) <= 1024
    assert fitted["reason"].endswith("…") and fitted["reason"].startswith("é" * 400)


def test_the_loaders_subscription_is_named_after_its_topic() -> None:
    settings = PubSubSettings(subscription="loaders")
    assert subscription_name("shopstream.public.orders", settings) == (
        "shopstream.public.orders.loaders"
    )


def test_a_key_over_the_ordering_key_limit_travels_whole_in_attributes() -> None:
    key = ('{"sku":"' + "ж" * 1500 + '"}').encode()  # 3,000+ bytes, two-byte characters
    ordering, carried = pubsub_key(key)
    assert ordering == ordering_key(key) and ordering.startswith("sha256:")
    assert len(carried) > 1 and all(len(v.encode()) <= 1024 for v in carried.values())
    assert key_from_pubsub(ordering, carried) == key
    # A digest without its parts (an older sink's), or with parts of another key, is not
    # taken for a key: decode then refuses the message (dead-lettered whole, not loaded
    # without its key).
    assert key_from_pubsub(ordering, {}) == ordering.encode()
    assert key_from_pubsub(ordering, {**carried, "shopstream.key.0": "x"}) == ordering.encode()
    assert pubsub_key(b'{"id":7}') == ('{"id":7}', {})
    assert key_from_pubsub('{"id":7}', {}) == b'{"id":7}'
    assert key_from_pubsub("", {}) is None


def test_the_subscription_of_a_long_tables_topic_fits_pubsubs_255_characters() -> None:
    topic = Topics().changes("public", "t" * 400)
    name = subscription_name(topic, PubSubSettings())
    assert len(topic) == 249 and len(name) == 255
    assert name != subscription_name(Topics().changes("public", "t" * 401), PubSubSettings())
