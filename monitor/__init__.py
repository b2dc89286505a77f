"""The failure monitor: a detector state machine (`detector`) behind a thin paho adapter
(`service`)."""
