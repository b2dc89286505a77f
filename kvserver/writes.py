"""How a write changes the store and what its owner answers (protocol §12, §13): a put or a
delete, with or without a compare-and-set, judged at its stream position, so that every
replica decides alike.

A write's outcome is decided once, where it is applied. A retry of it (the same
`(topico-resp, idpedido)`, de-duplicated, §5) and a substitute's replay (§6) answer with that
outcome, found in the request log, rather than judging again against a later state: a
compare-and-set that lost must not be answered `ok` because a later write made it match.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from kvserver.history import RequestLog
from kvserver.quota import Quota
from kvserver.store import Store
from kvwire.messages import Insercao, Write


class Outcome(NamedTuple):
    status: Literal["ok", "naoencontrada", "conflito", "cota"]
    #: The value answered: the one written, none after a delete, the current one on conflict.
    value: str | None
    #: The revision answered: the write's position, or the current revision on conflict.
    revision: int | None


def apply_write(store: Store, message: Write, position: int, quota: Quota | None = None) -> Outcome:
    """Apply `message` at `position` if its condition holds and the quota allows it, and say
    what to answer."""
    key = message.chave
    current = store.entry(key)
    expected = message.serevisao
    if expected is not None and (0 if current is None else current[1]) != expected:
        if current is None:
            return Outcome("conflito", None, None)
        return Outcome("conflito", *current)
    if isinstance(message, Insercao):
        if quota is not None and quota.refuses(store, ((key, message.novovalor),)):
            return Outcome("cota", None, None)
        store.put(key, message.novovalor, position)
        return Outcome("ok", message.novovalor, position)
    if store.delete(key):
        return Outcome("ok", None, position)
    return Outcome("naoencontrada", None, None)


def earlier_outcome(log: RequestLog, store: Store, message: Write) -> Outcome:
    """What an already applied write was answered, for its retry: from the log while it
    holds the write (`log_ttl`), else the key as it is now (an old retry's client has given
    up long since, or gets the current value)."""
    logged = log.find(message.topico_resp, message.idpedido)
    if logged is not None and logged.kind in ("i", "r") and logged.status != "erro":
        if logged.kind == "i" and logged.status == "ok" and logged.value is None:
            # Read back from disk, a plain put's outcome is its revision: its value is its own.
            return Outcome("ok", getattr(message, "novovalor", None), logged.revision)
        return Outcome(logged.status, logged.value, logged.revision)
    current = store.entry(message.chave)
    if isinstance(message, Insercao):
        # Where it was applied is forgotten: the key's revision is the put's only if the key
        # still holds its value (a later write's revision would be a false answer, and a
        # compare-and-set from it would pass over that write).
        same = current is not None and current[0] == message.novovalor
        return Outcome("ok", message.novovalor, current[1] if same and current else None)
    return Outcome("naoencontrada" if current is None else "ok", None, None)


def write_problem(key: str, value: str, max_key_bytes: int, max_value_bytes: int) -> str | None:
    """Why every replica refuses this write, or None."""
    if not key:  # listed, it would be a blank line; no peer's CLI can name it
        return "empty key"
    if len(key.encode()) > max_key_bytes:
        return f"key longer than {max_key_bytes} bytes"
    # A UTF-8 character is at most 4 bytes: most values need no encoding to be judged.
    if len(value) * 4 > max_value_bytes and len(value.encode()) > max_value_bytes:
        return f"value longer than {max_value_bytes} bytes"
    return None
