"""A replica's Prometheus metrics (issue 29): what the adapter serves on `--metrics-port`.

Most are read when Prometheus scrapes, from numbers the replica keeps anyway (its position,
store, log, `kvserver.tally`): nothing is done for them per request. Two are observed as
they happen, in the adapter, because only it sees time pass: a request's latency from its
arrival to its answer being handed to the broker (after the disk, with `--data-dir`), and a
disk commit's. Names follow Prometheus's naming guide: `mqttkv_` first, units last.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, get_args

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kvserver.effects import Effect, Publish
from kvserver.replica import Replica
from kvserver.states import State
from kvwire.batch import Respostas
from kvwire.messages import Resposta
from kvwire.metrics import broker_connected, counters, new_registry

#: Every state a replica can be in (`kvserver.states`): one series each, 1 for the current one.
STATES: tuple[State, ...] = get_args(State)


class AdapterState(NamedTuple):
    """What the adapter says of itself when scraped."""

    connected: bool
    #: Control messages it ignored for their signature (None: not a secured cluster).
    forged: int | None
    disk_full: bool


NodeState = Callable[[], AdapterState]

#: Arrival to answer: from a read in memory (~0.3 ms) to a write forced to disk and a join's
#: buffered requests (seconds).
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
DISK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
JOIN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Scraped(Collector):
    """What is read at scrape time, from another thread: ints, and dicts copied whole."""

    def __init__(
        self, core: Callable[[], Replica | None], node: NodeState, kept: ReplicaMetrics
    ) -> None:
        self._core, self._node, self._kept = core, node, kept

    def collect(self) -> Iterator[Metric]:
        core = self._core()
        connected, forged, full = self._node()
        yield broker_connected(connected)
        yield GaugeMetricFamily(
            "mqttkv_disk_full", "1 while the data directory is full and answers are held.",
            value=int(full),
        )  # fmt: skip
        if core is None:
            return
        info = GaugeMetricFamily(
            "mqttkv_replica_info", "This replica's id and the cluster's size.",
            labels=["replica", "n"],
        )  # fmt: skip
        info.add_metric([str(core.id), str(core.n)], 1)
        yield info
        state = GaugeMetricFamily(
            "mqttkv_state", "1 for the state the replica is in.", labels=["state"]
        )
        for each in STATES:
            state.add_metric([each], int(core.state == each))
        yield state
        yield GaugeMetricFamily(
            "mqttkv_position", "Stream position: messages of the request topic applied.",
            value=core.position,
        )  # fmt: skip
        yield GaugeMetricFamily("mqttkv_keys", "Keys held.", value=len(core.store))
        held = core.store.known_bytes
        if held is not None:
            yield GaugeMetricFamily(
                "mqttkv_bytes", "UTF-8 bytes of the keys and values held.", value=held
            )
        if core.quota.keys is not None:
            yield GaugeMetricFamily(
                "mqttkv_quota_keys", "The cluster's --max-keys.", value=core.quota.keys
            )
        if core.quota.bytes is not None:
            yield GaugeMetricFamily(
                "mqttkv_quota_bytes", "The cluster's --max-bytes.", value=core.quota.bytes
            )
        yield GaugeMetricFamily(
            "mqttkv_request_log_entries", "Requests in the log a substitute replays from.",
            value=len(core.log),
        )  # fmt: skip
        requests = CounterMetricFamily(
            "mqttkv_requests", "Requests applied, by kind (tipomsg) and the status they got.",
            labels=["kind", "status"],
        )  # fmt: skip
        for (kind, status), count in sorted(core.tally.applied_counts().items()):
            requests.add_metric([kind, status], count)
        yield requests
        tally = core.tally
        yield from counters("mqttkv_", (
            ("failures", tally.failures, "Failures of other replicas applied."),
            ("takeovers", tally.takeovers, "Failures after which this replica answers for one."),
            ("handbacks", tally.handbacks, "State transfers to a joining replica."),
            ("joins", tally.joins, "Joins of this replica completed (or resumed alone)."),
            ("fenced", tally.fenced, "Times this replica read its own failure."),
            ("duplicates", core.duplicates_ignored, "Writes not applied again: a retry's."),
            ("invalid_messages", core.replies.invalid_count, "Messages refused as invalid."),
            ("unanswered", core.replies.unanswered_count, "Answers with nowhere to go."),
            ("forged_messages", forged or 0, "Control messages ignored for their signature."),
        ))  # fmt: skip
        kept = self._kept
        yield CounterMetricFamily(
            "mqttkv_answers", "Answers this replica sent (each of a respostas counted).",
            value=kept.answers,
        )  # fmt: skip
        for histogram in (kept.latency, kept.disk, kept.join):
            yield histogram.family()


class Buckets:
    """A histogram observed on the loop's thread without a lock (prometheus-client's takes
    two locks an observation: 1.5 µs, at every answer); the scrape copies the counts, so one
    scrape is consistent in its buckets and count, its sum at most one observation behind."""

    def __init__(self, name: str, text: str, bounds: tuple[float, ...]) -> None:
        self.name, self.text, self.bounds = name, text, bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self) -> HistogramMetricFamily:
        counts, total = list(self.counts), self.sum
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, math.inf), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), cumulative))
        return HistogramMetricFamily(self.name, self.text, buckets=buckets, sum_value=total)


class ReplicaMetrics:
    """Kept by the adapter when metrics are on. `arrived` after each message is applied and
    `performed` after each hand-off's effects match answers to their requests' arrival: the
    effects the core made while applying a message are the ones after the last mark."""

    def __init__(self, core: Callable[[], Replica | None], node: NodeState) -> None:
        self.latency = Buckets(
            "mqttkv_request_latency_seconds",
            "From a request's arrival to its answer's hand-off to the broker (a batch's "
            "answers to one topic: one message, one observation).",
            LATENCY_BUCKETS,
        )  # fmt: skip
        self.disk = Buckets(
            "mqttkv_disk_commit_seconds", "One transaction of the data directory (--data-dir).",
            DISK_BUCKETS,
        )  # fmt: skip
        self.join = Buckets(
            "mqttkv_join_duration_seconds", "From connecting to being live, per join.",
            JOIN_BUCKETS,
        )  # fmt: skip
        #: Answers sent (each of a `respostas` counted).
        self.answers = 0
        self.registry = new_registry()
        self.registry.register(_Scraped(core, node, self))
        #: (effects made so far, arrival time) after each message that made some.
        self._marks: list[tuple[int, float]] = []
        self._joins_seen = 0

    def arrived(self, pending: int, now: float) -> None:
        marks = self._marks
        if pending and (not marks or marks[-1][0] != pending):
            marks.append((pending, now))

    def performed(self, effects: Sequence[Effect], core: Replica) -> None:
        marks, self._marks = self._marks, []
        if effects and marks:
            now, observe = time.time(), self.latency.observe
            answers, mark, index = 0, 0, 0
            for effect in effects:
                index += 1
                while mark < len(marks) - 1 and index > marks[mark][0]:
                    mark += 1
                if not isinstance(effect, Publish):
                    continue
                message = effect.message
                if isinstance(message, Resposta):
                    observe(now - marks[mark][1])
                    answers += 1
                elif isinstance(message, Respostas):
                    observe(now - marks[mark][1])
                    answers += len(message.respostas)
            self.answers += answers
        if core.tally.joins != self._joins_seen:
            self._joins_seen = core.tally.joins
            if core.tally.join_seconds is not None:
                self.join.observe(core.tally.join_seconds)
