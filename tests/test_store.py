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


def test_a_frozen_store_keeps_what_it_handed_out_while_writes_go_on() -> None:
    store = Store()
    store.load({"a": "1", "b": "2"})
    frozen = store.freeze()
    store.put("b", "3")
    store.put("c", "4")
    store.put("c", "5")
    assert frozen == {"a": "1", "b": "2"}  # what the transfer is reading, as of the cut
    assert [store.get(k) for k in "abcd"] == ["1", "3", "5", None]
    assert len(store) == 3
    expected = Store()
    expected.load({"a": "1", "b": "3", "c": "5"})
    assert store.digest() == expected.digest()
    # A second transfer while the first is under way reads a copy of the current pairs.
    second = store.freeze()
    assert second == {"a": "1", "b": "3", "c": "5"}
    store.thaw(second)  # nothing to fold back
    store.thaw(frozen)
    assert frozen == {"a": "1", "b": "3", "c": "5"}  # the overlay folded back into it
    store.put("d", "6")
    assert len(store) == 4
    expected.put("d", "6")
    assert store.digest() == expected.digest()
