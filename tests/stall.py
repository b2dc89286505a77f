"""One trial of a whole-cluster stall, as a person would check it: every replica SIGSTOPped
for 2.5 s (long enough for the monitor to declare each failed), SIGCONT, then reads of every
key from a plain MQTT client. No message may be answered twice (issue 24: the keys of a
replica whose join was asked again were answered once by the replica that resumed alone and
again by their owner), and every key must be read back with its value: a read that nobody
answers (published while nobody was live to take it) is sent again, as any client does, here
as a new message with an id of its own, so that an answer to it is not taken for a second
answer to the first. Used by `tests/test_faults.py` and `scripts/stall_answers.py`.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

from kvclient.client import KVClient
from kvclient.status import ClusterWatch
from tests.cluster import Cluster
from tests.test_cluster import Listener, key_owned_by

KEYS_PER_OWNER = 10
#: How long a trial may take to answer every read once the replicas run again (seconds).
ANSWERED_WITHIN = 30.0


def stall_trial(cluster: Cluster, trial: int) -> dict[str, object]:
    """The reads answered more than once (must be none) and by whom, how many reads it took,
    and the seconds from SIGCONT to every key read back."""
    keys = {
        f"{key_owned_by(owner, cluster.n, f'stall{trial}-{owner}-{i}-')}": f"v{trial}-{owner}-{i}"
        for owner in range(cluster.n)
        for i in range(KEYS_PER_OWNER)
    }
    with KVClient(cluster.address, timeout=30, retry_interval=0.5) as kv:
        for key, value in keys.items():
            kv.put(key, value)
    listener = Listener(cluster.address, f"stall/answers/{trial}")
    try:
        resumed = cluster.stall_everyone(2.5)
        requests: dict[str, dict[str, str]] = {}

        def read(key: str) -> None:
            rid = f"stall-{trial}-{len(requests)}"
            request = {"tipomsg": "consulta", "chave": key, "topico-resp": listener.topic}
            requests[rid] = request | {"idpedido": rid}
            listener.send(json.dumps(requests[rid]))

        for key in keys:
            read(key)
        deadline = resumed + ANSWERED_WITHIN
        while True:
            read_back = {requests[rid]["chave"] for rid in requests if listener.for_id(rid)}
            unanswered = [key for key in keys if key not in read_back]
            if not unanswered or time.monotonic() > deadline:
                break
            time.sleep(1.0)  # KVClient's retry interval
            for key in unanswered:
                read(key)
        last_read_back = time.monotonic() - resumed
        assert not unanswered, f"keys not read back within {ANSWERED_WITHIN:g} s: {unanswered}"
        with ClusterWatch(cluster.address) as watch:
            watch.wait_for(lambda status: len(status.live()) == cluster.n, 30)
        listener.barrier(cluster.n)  # every answer to our reads is in by now
        by: dict[str, set[int]] = {}
        counts: Counter[str] = Counter()
        for answer in listener.answers:
            answered = answer.get("idpedido")
            if isinstance(answered, str) and answered in requests:
                rid = answered
                by.setdefault(rid, set()).add(answer["idserv"])
                counts[rid] += 1
                key = requests[rid]["chave"]
                assert answer.get("valor") == keys[key], f"{key}: {answer}"
        return {
            "answered_twice": sorted(rid for rid, count in counts.items() if count > 1),
            "by": {rid: sorted(ids) for rid, ids in by.items() if counts[rid] > 1},
            "reads": len(requests),
            "seconds": last_read_back,
        }
    finally:
        listener.close()
        for replica in cluster.replicas.values():
            replica.signal(signal.SIGCONT)
