"""The replica's named states: every transition of the table in `kvserver.replica`, driven
with messages and fake time, and what each state does with the stream."""

from __future__ import annotations

import pytest

import kvserver.replica
from kvserver.effects import Publish, Reconnect, Stop
from kvserver.replica import Replica
from kvserver.report import heartbeat
from kvserver.settings import ReplicaSettings
from kvserver.states import NEXT
from kvwire.messages import Consulta, FalhaServ, Heartbeat, NovoServ
from tests.bus import CLIENT_TOPIC, Bus


def state(replica: Replica) -> str:
    return replica.state


def test_the_docstring_table_is_the_transition_table() -> None:
    doc = kvserver.replica.__doc__ or ""
    rows = doc.split("--------  -------------")[1].split("\n\n")[0].splitlines()[1:]
    table = {}
    for row in rows:
        before, rest = row.split(maxsplit=1)
        after = rest.split()[-1]
        event = rest[:15].strip()
        table[(before, event)] = after
    assert table == NEXT


def test_starting_goes_live_when_fresh_and_joining_when_connected() -> None:
    settings = ReplicaSettings(replica_id=0, n=3)
    assert Replica(settings, incarnation="a").state == "starting"
    assert Replica.fresh(settings, incarnation="a").state == "live"
    joiner = Replica(settings, incarnation="a")
    effects = joiner.connected("b", 0.0)
    assert state(joiner) == "joining"
    assert joiner.incarnation == "b"
    [announce] = effects
    assert isinstance(announce, Publish) and isinstance(announce.message, NovoServ)
    assert announce.message.incarnacao == "b" and announce.message.posicao is None


def test_a_fresh_replica_stays_live_when_its_connection_comes_up() -> None:
    replica = Replica.fresh(ReplicaSettings(replica_id=0, n=3), incarnation="a")
    assert replica.connected("a", 0.0) == []
    assert state(replica) == "live"


def test_joining_goes_live_once_its_state_is_loaded() -> None:
    bus = Bus.fresh(3)
    bus.put("a", "1")
    bus.stop(0)
    bus.fail(0)
    bus.hold_transfers = True
    joiner = bus.start_joining(0)
    assert state(joiner) == "joining"
    bus.hold_transfers = False
    bus.run()
    assert state(joiner) == "live"
    assert joiner.store.get("a") == "1"


def test_joining_asks_again_while_a_live_replica_is_heard() -> None:
    bus = Bus.fresh(3)
    bus.stop(0)
    bus.fail(0)
    bus.hold_transfers = True
    joiner = bus.start_joining(0)
    first = joiner.join_topic
    bus.exchange_heartbeats()
    effects = joiner.tick(bus.now + bus.join_timeout)
    assert state(joiner) == "joining"
    assert joiner.join_topic != first  # a new attempt, a new sync topic
    assert [type(e) for e in effects] == [Publish]


def test_joining_resumes_alone_when_nobody_is_live_and_it_is_highest() -> None:
    settings = ReplicaSettings(replica_id=1, n=3)
    replica = Replica.fresh(settings, incarnation="a")
    replica.on_request(FalhaServ(idserv=1, vistoem=0.0, incarnacao="a"), 0.0)
    assert state(replica) == "fenced"
    replica.connected("b", 1.0)
    assert state(replica) == "joining"
    peer = Heartbeat(idserv=0, incarnacao="x", modo="joining", posicao=None)
    replica.on_heartbeat(peer, 2.0)
    replica.tick(1.0 + settings.join_timeout)
    assert state(replica) == "live"
    assert replica.view.live == [False, True, False]


def test_live_is_fenced_by_its_own_failure_and_then_reads_nothing() -> None:
    bus = Bus.fresh(3)
    replica = bus.replica(0)
    bus.put("c", "v")
    effects = replica.on_request(
        FalhaServ(idserv=0, vistoem=bus.now, incarnacao=replica.incarnation), bus.now
    )
    assert state(replica) == "fenced"
    assert effects == [Reconnect("fenced", with_will=False)]
    position = replica.position
    assert replica.on_request(Consulta(chave="c", topico_resp=CLIENT_TOPIC, idpedido=7), 0) == []
    assert replica.position == position
    assert heartbeat(replica, bus.now).posicao == position  # a §11 candidate
    assert heartbeat(replica, bus.now).modo == "joining"


def test_a_failure_of_an_older_incarnation_fences_nobody() -> None:
    bus = Bus.fresh(3)
    replica = bus.replica(0)
    replica.on_request(FalhaServ(idserv=0, vistoem=bus.now, incarnacao="older"), bus.now)
    assert state(replica) == "live"


@pytest.mark.parametrize("while_joining", [False, True])
def test_a_lost_session_fences_and_nothing_after_the_gap_is_applied(while_joining: bool) -> None:
    bus = Bus.fresh(3)
    replica = bus.replica(0)
    if while_joining:
        bus.stop(0)
        bus.fail(0)
        bus.hold_transfers = True
        replica = bus.start_joining(0)
    before = replica.position
    effects = replica.on_session_lost(bus.now)
    assert state(replica) == "fenced"
    assert effects == [Reconnect("session lost", with_will=True)]
    replica.on_request(Consulta(chave="c", topico_resp=CLIENT_TOPIC, idpedido=7), bus.now)
    assert replica.position == before
    assert replica.on_session_lost(bus.now) == []  # fenced already


def test_fenced_joins_again_when_the_new_connection_is_up() -> None:
    bus = Bus.fresh(3)
    bus.put("c", "v")
    replica = bus.replica(0)
    replica.on_request(
        FalhaServ(idserv=0, vistoem=bus.now, incarnacao=replica.incarnation), bus.now
    )
    effects = replica.connected("second", bus.now)
    assert state(replica) == "joining"
    [announce] = effects
    assert isinstance(announce, Publish) and isinstance(announce.message, NovoServ)
    assert announce.message.posicao == replica.position  # it offers its store (§11)
    assert replica.store.get("c") == "v"


def test_live_stops_when_another_process_takes_its_id() -> None:
    bus = Bus.fresh(3)
    replica = bus.replica(1)
    effects = replica.on_request(
        NovoServ(idserv=1, topico_resp="inf1406-sync/1/x", incarnacao="impostor"), bus.now
    )
    assert state(replica) == "stopped"
    assert [type(e) for e in effects] == [Stop]
    assert replica.connected("again", bus.now) == []  # stopped is for good
    assert state(replica) == "stopped"


def test_no_transition_outside_the_table() -> None:
    replica = Replica(ReplicaSettings(replica_id=0, n=3), incarnation="a")
    with pytest.raises(RuntimeError, match="no transition from starting on fenced"):
        replica._fire("fenced")
    assert state(replica) == "starting"
