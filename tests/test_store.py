"""The store's digest: the same pairs give the same digest however they arrived."""

from __future__ import annotations

from kvserver.store import Store


def test_bulk_load_and_writes_one_by_one_agree_whatever_the_order() -> None:
    pairs = {f"k{i}": f"value {i}" for i in range(2500)}
    one_by_one = Store()
    for key in reversed(pairs):
        one_by_one.put(key, "stale")
        one_by_one.put(key, pairs[key])
    loaded = Store()
    items = list(pairs.items())
    for start in range(0, len(items), 1000):
        loaded.load(dict(items[start : start + 1000]))
    assert loaded.digest() == one_by_one.digest()
    assert len(loaded) == len(one_by_one) == 2500


def test_a_load_over_existing_keys_replaces_their_part_of_the_digest() -> None:
    store = Store()
    store.load({"a": "1", "b": "2"})
    store.load({"b": "3", "c": "4"})
    expected = Store()
    expected.load({"a": "1", "b": "3", "c": "4"})
    assert store.digest() == expected.digest()
    assert store.get("b") == "3"
    different = Store()
    different.load({"a": "1", "b": "2", "c": "4"})
    assert different.digest() != expected.digest()
