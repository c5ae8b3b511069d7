"""What a request must pass before its body is read: the memory budget and the origin policy."""

from __future__ import annotations

from shopstream.collector.admission import BodyBudget, OriginPolicy


def test_keyless_bodies_get_half_the_budget_and_released_bytes_come_back() -> None:
    budget = BodyBudget(100)
    stranger = budget.reserve(50, keyless=True)
    assert stranger is not None
    assert budget.reserve(1, keyless=True) is None  # the keyless half is full...
    known = budget.reserve(50, keyless=False)
    assert known is not None  # ...clients with a key still get in
    assert budget.reserve(1, keyless=False) is None  # now the whole budget is full
    stranger.release()
    stranger.release()  # a second release gives nothing back twice
    assert (budget.in_use, budget.keyless_in_use) == (50, 0)
    assert budget.reserve(50, keyless=True) is not None
    known.release()
    assert budget.in_use == 50


def test_origin_policy() -> None:
    listed = OriginPolicy(["https://shop.example"])
    assert listed.allows(None)  # not a browser's cross-origin request
    assert listed.allows("https://shop.example")
    assert not listed.allows("https://evil.example")
    assert not listed.allows("null")
    assert listed.response_headers("https://shop.example") == {
        "access-control-allow-origin": "https://shop.example",
        "vary": "Origin",
    }
    assert listed.response_headers("https://evil.example") == {}
    anyone = OriginPolicy(["*"])
    assert anyone.allows("https://evil.example")
    assert anyone.response_headers("https://x.example") == {"access-control-allow-origin": "*"}
    assert anyone.response_headers(None) == {}
