"""Batches (protocol §21) and bulk import and export with real processes: a batching
`KVClient` at many in flight sends many requests per MQTT message and loses nothing;
`kvclient import` and `kvclient export` round-trip a file byte for byte, stop at a bad line
naming it, and keep existing keys with `--if-absent`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from kvclient.client import KVClient
from kvclient.operations import Get, Put
from kvclient.status import ClusterWatch
from kvwire.messages import Resposta
from tests.cluster import Cluster, all_equal, running
from tests.test_cluster import kvclient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running(tmp_path_factory.mktemp("batch")) as cluster:
        yield cluster


def test_a_batching_client_sends_fewer_messages_and_every_request_is_answered(
    shared: Cluster,
) -> None:
    with KVClient(shared.address, timeout=30) as kv:
        sizes: Counter[int] = Counter()
        publish = kv._transport.publish

        def counted(topic: str, payload: bytes, properties: object = None) -> None:
            sizes[payload.count(b'"idpedido"')] += 1
            publish(topic, payload)

        kv._transport.publish = counted  # type: ignore[method-assign]
        window: deque[tuple[int, Future[Resposta]]] = deque()
        for i in range(4000):
            op = Put(f"b/{i % 500}", str(i)) if i % 2 else Get(f"b/{i % 500}")
            window.append((i, kv.submit(op)))
            if len(window) >= 128:
                i_done, future = window.popleft()
                assert future.result(30).status in ("ok", "naoencontrada"), i_done
        while window:
            assert window.popleft()[1].result(30).status in ("ok", "naoencontrada")
        messages = sum(sizes.values())
        assert sum(size * count for size, count in sizes.items()) == 4000
        assert messages < 4000 / 4, sizes  # batches formed: most messages held many requests
        # The last put of each key is what every replica holds.
        assert kv.get("b/499") == "3999"
    with ClusterWatch(shared.address) as watch:
        assert all_equal(3)(watch.wait_for(all_equal(3), 20))


def test_one_request_at_a_time_goes_alone(shared: Cluster) -> None:
    with KVClient(shared.address) as kv:
        sent: list[bytes] = []
        publish = kv._transport.publish

        def kept(topic: str, payload: bytes, properties: object = None) -> None:
            sent.append(payload)
            publish(topic, payload)

        kv._transport.publish = kept  # type: ignore[method-assign]
        for i in range(20):
            kv.put("alone", str(i))
            assert kv.get("alone") == str(i)
    assert len(sent) == 40 and not any(p.startswith(b'{"tipomsg":"lote"') for p in sent)


def lines(count: int, prefix: str = "imp/") -> str:
    """An export's own form: key order, one JSON object a line (the keys sort as written)."""
    pairs = sorted((f"{prefix}{i:06d}", f'value é {i} "quoted"') for i in range(count))
    return "".join(json.dumps({"key": k, "value": v}, ensure_ascii=False) + "\n" for k, v in pairs)


def test_import_then_export_round_trips_the_file_byte_for_byte(
    shared: Cluster, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(lines(5000), encoding="utf-8")
    done = kvclient(shared, "import", str(source))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 5,000 keys (") and "keys/s" in done.stdout
    out = kvclient(shared, "export", "imp/")
    assert out.returncode == 0, out.stderr
    assert out.stdout == source.read_text(encoding="utf-8")
    assert out.stderr.startswith("exported 5,000 keys")
    with ClusterWatch(shared.address) as watch:
        assert all_equal(3)(watch.wait_for(all_equal(3), 20))


def test_import_stops_at_a_bad_line_naming_it_and_writes_nothing_after(
    shared: Cluster, tmp_path: Path
) -> None:
    good = lines(300, "stop/").splitlines(keepends=True)
    bad_at = 201
    text = "".join(good[: bad_at - 1]) + '{"key": "stop/x", "value": 7}\n' + "".join(good[200:])
    source = tmp_path / "bad.jsonl"
    source.write_text(text, encoding="utf-8")
    done = kvclient(shared, "import", str(source))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and f"line {bad_at}:" in done.stderr, done.stderr
    assert "200 keys before it were written" in done.stderr
    listed = kvclient(shared, "keys", "stop/").stdout.split()
    assert listed == [f"stop/{i:06d}" for i in range(200)]
    skipped = kvclient(shared, "import", str(source), "--skip-bad")
    assert skipped.returncode == 0, skipped.stderr
    assert "1 bad lines skipped (lines 201)" in skipped.stdout
    assert len(kvclient(shared, "keys", "stop/").stdout.split()) == 300


def test_import_csv_with_if_absent_keeps_what_is_there(shared: Cluster, tmp_path: Path) -> None:
    with KVClient(shared.address) as kv:
        kv.put("csv/a", "old")
    source = tmp_path / "in.csv"
    source.write_text('key,value\ncsv/a,new\ncsv/b,"two, with ""quotes""\nand a line"\n')
    done = kvclient(shared, "import", "--csv", "--if-absent", str(source))
    assert done.returncode == 0, done.stderr
    assert "imported 1 keys" in done.stdout and "1 kept" in done.stdout
    with KVClient(shared.address) as kv:
        assert kv.get("csv/a") == "old"
        assert kv.get("csv/b") == 'two, with "quotes"\nand a line'
    out = kvclient(shared, "export", "csv/", "--csv")
    assert out.stdout == 'csv/a,old\ncsv/b,"two, with ""quotes""\nand a line"\n'


def test_import_of_a_missing_file_or_with_the_broker_down_is_one_line(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KV_BROKER": "127.0.0.1:9"}  # nothing listens there
        return subprocess.run(
            [sys.executable, "-m", "kvclient", *args],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    source = tmp_path / "in.jsonl"
    source.write_text(lines(3))
    down = run("import", str(source))
    assert down.returncode == 2 and down.stderr.count("\n") == 1, down.stderr
    missing = run("import", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr, missing.stderr
