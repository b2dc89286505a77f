"""Fixtures that start real processes; each stops everything it started, pass or fail."""

from __future__ import annotations

import os
import signal
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from kvclient.client import KVClient
from kvclient.status import ClusterWatch
from tests.cluster import Cluster, running
from tests.test_cluster import Listener

# CI draws the same examples every run and prints how to reproduce a failure from its log;
# `HYPOTHESIS_PROFILE=long` searches far longer, by hand.
settings.register_profile("ci", max_examples=150, derandomize=True, print_blob=True)
settings.register_profile("long", max_examples=3000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Tests end long-running commands with Ctrl-C (`tests.cluster.interrupt`), as a user at a
# terminal does. A suite started in the background by a non-interactive shell (a CI runner's
# `cmd &`) inherits SIGINT ignored, and so would every command it starts: a Ctrl-C would then
# do nothing. The commands get the terminal's default, as they would from a user.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long search takes 20 times the examples: more than the default timeout."""
    if os.environ.get("HYPOTHESIS_PROFILE") == "long":
        for item in items:
            if item.path.name == "test_fuzz.py":
                item.add_marker(pytest.mark.timeout(3600))


@pytest.fixture
def mirrored(tmp_path: Path) -> Iterator[Cluster]:
    """A running 3-replica cluster whose replicas publish the value mirror (protocol §14)."""
    with running(tmp_path, mirror="inf1406-kv") as cluster:
        yield cluster


@pytest.fixture
def cluster(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    """A running 3-replica cluster with one monitor, on its own broker. A test marked
    `@pytest.mark.replica0(*options)` starts replica 0 with those (hidden) test switches.

    Parametrised with "secured" (`tests.cluster.BOTH_MODES`): passwords, the ACL, signed
    control messages and TLS; the test's own clients then connect as the user `client`, from
    the environment, as a user's shell would after `source run/env`."""
    marker = request.node.get_closest_marker("replica0")
    secured = getattr(request, "param", "open") == "secured"
    running = Cluster(tmp_path, secure=secured, tls=secured)
    if running.secrets is not None:
        for name, value in running.secrets.env("client").items():
            monkeypatch.setenv(name, value)
    try:
        running.start(extra={0: tuple(marker.args)} if marker else None)
        yield running
    finally:
        running.close()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(running.logs())
    # A broker that cannot save its state says so only in its log.
    assert running.broker.errors() == []


@pytest.fixture
def kv(cluster: Cluster) -> Iterator[KVClient]:
    with KVClient(cluster.address, timeout=10.0, retry_interval=0.5) as client:
        yield client


@pytest.fixture
def plain(cluster: Cluster) -> Iterator[Listener]:
    """A plain paho client (not ours) that sends raw JSON and collects every answer."""
    listener = Listener(cluster.address, "plain/answers")
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def watch(cluster: Cluster) -> Iterator[ClusterWatch]:
    with ClusterWatch(cluster.address) as watcher:
        yield watcher


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
