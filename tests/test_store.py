"""The store: the same entries give the same digest however they arrived; deletes and
revisions count in it; a frozen store keeps what it handed out; listing is in order."""

from __future__ import annotations

import random

from kvserver.store import Entry, Packed, Store, unpack


def unpacked(frozen: dict[str, Packed]) -> dict[str, Entry]:
    return {key: unpack(packed) for key, packed in frozen.items()}


def loaded(entries: dict[str, Entry]) -> Store:
    store = Store()
    store.load(entries)
    return store


def test_bulk_load_and_writes_one_by_one_agree_whatever_the_order() -> None:
    entries = {f"k{i}": (f"value {i}", i + 10) for i in range(2500)}
    one_by_one = Store()
    for key in reversed(entries):
        one_by_one.put(key, "stale", 1)
        one_by_one.put(key, *entries[key])
    one_by_one.put("gone", "x", 5)
    assert one_by_one.delete("gone") and not one_by_one.delete("gone")
    in_chunks = Store()
    items = list(entries.items())
    for start in range(0, len(items), 1000):
        in_chunks.load(dict(items[start : start + 1000]))
    assert in_chunks.digest() == one_by_one.digest()
    assert len(in_chunks) == len(one_by_one) == 2500


def test_the_revision_is_part_of_the_digest_and_of_the_entry() -> None:
    a, b = loaded({"k": ("v", 3)}), loaded({"k": ("v", 4)})
    assert a.digest() != b.digest()
    assert (a.entry("k"), a.revision("k"), a.revision("absent")) == (("v", 3), 3, 0)


def test_a_frozen_store_keeps_what_it_handed_out_while_writes_and_deletes_go_on() -> None:
    store = loaded({"a": ("1", 1), "b": ("2", 2), "x": ("9", 3)})
    frozen = store.freeze()
    store.put("b", "3", 4)
    store.put("c", "4", 5)
    store.put("c", "5", 6)
    assert store.delete("x") and store.delete("c")
    store.put("c", "7", 8)
    assert unpacked(frozen) == {"a": ("1", 1), "b": ("2", 2), "x": ("9", 3)}  # as of the cut
    assert [store.get(k) for k in "abcx"] == ["1", "3", "7", None]
    assert len(store) == 3
    now = {"a": ("1", 1), "b": ("3", 4), "c": ("7", 8)}
    assert store.digest() == loaded(now).digest()
    assert store.keys("", None, 10) == (["a", "b", "c"], False)
    second = store.freeze()  # a second transfer meanwhile reads a copy
    assert unpacked(second) == now
    store.thaw(second)  # nothing to fold back
    store.thaw(frozen)
    assert unpacked(frozen) == now  # the overlay and the deletes folded back into it
    store.put("d", "6", 9)
    assert len(store) == 4 and store.digest() == loaded({**now, "d": ("6", 9)}).digest()


def test_listing_pages_through_a_prefix_in_order() -> None:
    rng = random.Random(3)
    names = [f"a/{i:04d}" for i in range(2500)]
    rng.shuffle(names)
    store = loaded(dict.fromkeys(names, ("v", 1)) | {"a": ("v", 1), "b/1": ("v", 1)})
    pages, after, more = [], None, True
    while more:
        keys, more = store.keys("a/", after, 1000)
        pages.append(keys)
        after = keys[-1] if keys else None
    assert [len(p) for p in pages] == [1000, 1000, 500]
    assert [key for page in pages for key in page] == sorted(names)
    assert store.keys("a/", "a/2499", 10) == ([], False)
    assert store.keys("", "a/2499", 10) == (["b/1"], False)
    assert store.keys("zz", None, 10) == ([], False)
    store.put("a/9999", "new", 2)  # a new key is listed at once
    assert store.keys("a/9", None, 10) == (["a/9999"], False)
    # Code point order is UTF-8 byte order: "é" (U+00E9) after "z".
    store.put("é", "v", 3)
    assert store.keys("", "b/1", 10) == (["é"], False)


def test_a_value_holding_nul_and_digits_keeps_its_revision_apart() -> None:
    """The revision is packed before the value with a NUL between (`kvserver.store.pack`):
    a value that itself holds NULs and digits reads back whole."""
    store = loaded({"k": ("12\x0034\x00", 7)})
    assert store.entry("k") == ("12\x0034\x00", 7) and store.revision("k") == 7
    assert store.get("k") == "12\x0034\x00"
