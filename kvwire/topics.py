"""Which strings a replica may publish to.

A reply address comes from a stranger's request. paho raises on some bad ones (wildcards, an
empty string) inside the callback that applies the stream, and Mosquitto drops the connection
of a client that publishes to others (NUL, control characters, non-characters: the MQTT
spec's UTF-8 rules, which `mosquitto_validate_utf8` enforces). Either way one request used to
silence a replica, so every address is judged before anything is published to it.
"""

from __future__ import annotations

import re

#: MQTT strings carry a 16-bit length.
MAX_TOPIC_BYTES = 65_535

# What Mosquitto refuses in any UTF-8 string, plus the two wildcards, which are legal in a
# subscription but not in a PUBLISH.
_NONCHARACTERS = "".join(
    f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17)
)
_FORBIDDEN = re.compile(f"[+#\x00-\x1f\x7f-\x9f\ufdd0-\ufdef{_NONCHARACTERS}]")


def topic_problem(topic: object) -> str | None:
    """Why `topic` cannot be published to, or None if it can."""
    if not isinstance(topic, str):
        return f"is a {type(topic).__name__}, not a string"
    if not topic:
        return "is empty"
    if topic.startswith("$"):
        return "starts with '$' (reserved for the broker)"
    found = _FORBIDDEN.search(topic)
    if found is not None:
        char = found.group()
        if char in "+#":
            return f"holds the wildcard {char!r}"
        return f"holds the character U+{ord(char):04X}, which MQTT forbids"
    try:
        size = len(topic.encode())
    except UnicodeEncodeError:
        return "is not valid Unicode"
    if size > MAX_TOPIC_BYTES:
        return f"is {size} bytes long, over MQTT's {MAX_TOPIC_BYTES}"
    return None


_UNKNOWN = "unknown"  # a sentinel: compared by identity, never a real answer


class TopicCheck:
    """`topic_problem` with a memory: a client sends all its requests with one reply topic,
    so the hot path pays one dict lookup per answer."""

    __slots__ = ("_known",)

    _LIMIT = 4096

    def __init__(self) -> None:
        self._known: dict[str, str | None] = {}

    def problem(self, topic: str) -> str | None:
        known = self._known
        problem = known.get(topic, _UNKNOWN)
        if problem is not _UNKNOWN:
            return problem
        problem = topic_problem(topic)
        if len(known) >= self._LIMIT:
            known.clear()  # many one-off topics: start over rather than grow
        if len(topic) <= 1024:  # a huge hostile topic is judged each time, not kept
            known[topic] = problem
        return problem


# --- the value mirror's topics (protocol §14) ---------------------------------------------

_TOPIC_ESCAPES = {"%": "%25", "+": "%2B", "#": "%23", "\x00": "%00"}
_UNESCAPES = {escaped: plain for plain, escaped in _TOPIC_ESCAPES.items()}
#: Every `%` of an encoded name starts an escape, so one left-to-right pass decodes it.
_ESCAPED = re.compile("%25|%2B|%23|%00")


def mirror_topic(prefix: str, key: str) -> str:
    """`<prefix>/<key>`: `/` in keys makes topic levels; `%`, `+`, `#` and NUL, which a topic
    name cannot hold or would misread, are percent-encoded (§14)."""
    if any(c in key for c in _TOPIC_ESCAPES):
        key = "".join(_TOPIC_ESCAPES.get(c, c) for c in key)
    return f"{prefix}/{key}"


def key_of_mirror_topic(prefix: str, topic: str) -> str | None:
    """The key a mirror topic names, or None if it is not under `prefix`."""
    if not topic.startswith(prefix + "/"):
        return None
    return _ESCAPED.sub(lambda m: _UNESCAPES[m.group(0)], topic[len(prefix) + 1 :])
