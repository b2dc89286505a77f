"""The mqtt-kv replica: a deterministic state machine (`replica`) behind a thin paho adapter
(`node`)."""
