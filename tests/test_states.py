"""The replica's named states: every transition of the table in `kvserver.replica`, driven
with messages and fake time, and what each state does with the stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import pytest

import kvserver.states
from kvserver.effects import Publish, Reconnect, Stop
from kvserver.replica import Replica
from kvserver.report import heartbeat
from kvserver.settings import ReplicaSettings
from kvserver.states import ACCEPTS, NEXT, Event, IllegalTransition, Input, State
from kvwire.messages import (
    Consulta,
    Estado,
    FalhaServ,
    Heartbeat,
    Insercao,
    NovoServ,
    Recuperacao,
)
from tests.bus import CLIENT_TOPIC, Bus, fed


def state(replica: Replica) -> str:
    return replica.state


def test_the_docstring_table_is_the_transition_table() -> None:
    doc = kvserver.states.__doc__ or ""
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
    joiner.connected("b", 0.0)
    effects = joiner.ready().effects
    assert state(joiner) == "joining"
    assert joiner.incarnation == "b"
    [announce] = effects
    assert isinstance(announce, Publish) and isinstance(announce.message, NovoServ)
    assert announce.message.incarnacao == "b" and announce.message.posicao is None


def test_a_fresh_replica_stays_live_when_its_connection_comes_up() -> None:
    replica = Replica.fresh(ReplicaSettings(replica_id=0, n=3), incarnation="a")
    replica.connected("a", 0.0)
    assert replica.ready().effects == []
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
    joiner.tick(bus.now + bus.join_timeout)
    effects = joiner.ready().effects
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
    effects = fed(
        replica, FalhaServ(idserv=0, vistoem=bus.now, incarnacao=replica.incarnation), bus.now
    )
    assert state(replica) == "fenced"
    assert effects == [Reconnect("fenced", with_will=False)]
    position = replica.position
    assert fed(replica, Consulta(chave="c", topico_resp=CLIENT_TOPIC, idpedido=7)) == []
    assert replica.position == position
    assert heartbeat(replica, bus.now).posicao == position  # a §11 candidate
    assert heartbeat(replica, bus.now).modo == "joining"


def test_a_failure_of_an_older_incarnation_fences_nobody() -> None:
    bus = Bus.fresh(3)
    bus.stop(0)
    bus.fail(0)
    replica = bus.start_joining(0)  # every view now knows its new incarnation
    bus.publish(FalhaServ(idserv=0, vistoem=bus.now, incarnacao="inc-0-1"))
    bus.run()
    assert state(replica) == "live"
    assert [a.idserv for a in bus.answers_to(bus.get("c"))] == [0]  # nobody took over


def test_a_failure_notice_every_view_agrees_on_even_when_only_its_target_knows_better() -> None:
    """In a new cluster no replica knows another's incarnation (none has joined), so one that
    names replica 0 in an incarnation it never had is applied by all, replica 0 included:
    had 0 alone ignored it, 1 would answer 0's keys too, for good (found by the fuzz)."""
    bus = Bus.fresh(3)
    bus.publish(FalhaServ(idserv=0, vistoem=bus.now, incarnacao="someone-else"))
    bus.run()
    assert [state(bus.replica(i)) for i in range(3)] == ["live"] * 3  # 0 joined again
    assert [a.idserv for a in bus.answers_to(bus.get("c"))] == [0]
    assert len(bus.digests()) == 1


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
    replica.on_session_lost(bus.now)
    effects = replica.ready().effects
    assert state(replica) == "fenced"
    assert effects == [Reconnect("session lost", with_will=True)]
    replica.on_request(Consulta(chave="c", topico_resp=CLIENT_TOPIC, idpedido=7), bus.now)
    assert replica.position == before
    replica.on_session_lost(bus.now)
    assert replica.ready().effects == []  # fenced already


def test_fenced_joins_again_when_the_new_connection_is_up() -> None:
    bus = Bus.fresh(3)
    bus.put("c", "v")
    replica = bus.replica(0)
    replica.on_request(
        FalhaServ(idserv=0, vistoem=bus.now, incarnacao=replica.incarnation), bus.now
    )
    replica.ready()
    replica.connected("second", bus.now)
    effects = replica.ready().effects
    assert state(replica) == "joining"
    [announce] = effects
    assert isinstance(announce, Publish) and isinstance(announce.message, NovoServ)
    assert announce.message.posicao == replica.position  # it offers its store (§11)
    assert replica.store.get("c") == "v"


def test_live_stops_when_another_process_takes_its_id() -> None:
    bus = Bus.fresh(3)
    replica = bus.replica(1)
    effects = fed(
        replica, NovoServ(idserv=1, topico_resp="inf1406-sync/1/x", incarnacao="impostor"), bus.now
    )
    assert state(replica) == "stopped"
    assert [type(e) for e in effects] == [Stop]
    replica.connected("again", bus.now)
    assert replica.ready().effects == []  # stopped is for good
    assert state(replica) == "stopped"


def test_every_transition_outside_the_table_is_one_clear_error() -> None:
    states: tuple[State, ...] = get_args(State)
    events: tuple[Event, ...] = get_args(Event)
    for before in states:
        for event in events:
            if (before, event) in NEXT:
                continue
            replica = in_state(before)
            with pytest.raises(IllegalTransition, match=f"no transition from {before} on"):
                replica._fire(event)
            assert state(replica) == before


def in_state(wanted: State) -> Replica:
    """A replica in `wanted`, reached along the table as the adapter would drive it."""
    settings = ReplicaSettings(replica_id=0, n=3)
    if wanted == "starting":
        return Replica(settings, incarnation="a")
    if wanted == "joining":
        replica = Replica(settings, incarnation="a")
        replica.connected("a", 0.0)
    else:
        replica = Replica.fresh(settings, incarnation="a")
        if wanted == "fenced":
            replica.on_request(FalhaServ(idserv=0, vistoem=0.0, incarnacao="a"), 0.0)
        elif wanted == "stopped":
            impostor = NovoServ(idserv=0, topico_resp="inf1406-sync/0/x", incarnacao="b")
            replica.on_request(impostor, 0.0)
    replica.ready()
    assert replica.state == wanted
    return replica


def feed(replica: Replica, what: Input, now: float) -> None:
    chunk = Estado(idserv=1, corte=0, parte=0, partes=1, vivos=[1], resumo="0" * 16, chaves=0)
    feeders: dict[Input, Callable[[], None]] = {
        "connected": lambda: replica.connected("b", now),
        "session lost": lambda: replica.on_session_lost(now),
        "request": lambda: replica.on_request(
            Insercao(chave="k", novovalor="v", topico_resp=CLIENT_TOPIC, idpedido=1), now
        ),
        "state chunk": lambda: replica.on_state(replica.join_topic or "", chunk, now),
        "heartbeat": lambda: replica.on_heartbeat(
            Heartbeat(idserv=1, incarnacao="x", modo="live", posicao=9), now
        ),
        "recovery order": lambda: replica.on_recovery_order(
            Recuperacao(sem=[1], enviadoem=now), now
        ),
        "tick": lambda: replica.tick(now),
    }
    assert set(feeders) == set(get_args(Input))
    feeders[what]()


@pytest.mark.parametrize("before", get_args(State))
def test_a_state_drops_unseen_what_its_row_does_not_accept(before: State) -> None:
    for what in get_args(Input):
        replica = in_state(before)
        position, keys = replica.position, len(replica.store)
        feed(replica, what, 100.0)
        ready = replica.ready()
        if what in ACCEPTS[before]:
            continue
        assert (state(replica), ready.effects) == (before, []), what
        assert (replica.position, len(replica.store)) == (position, keys), what


def test_the_doors_that_are_open_do_something() -> None:
    """The other half: each open door is one a state needs (were it closed, this fails)."""
    live = in_state("live")
    feed(live, "request", 0.0)
    assert live.store.get("k") == "v"
    for before in ("starting", "fenced"):
        replica = in_state(before)
        feed(replica, "connected", 0.0)
        assert state(replica) == "joining"
    joining = in_state("joining")
    feed(joining, "session lost", 0.0)
    assert state(joining) == "fenced"
    joining = in_state("joining")
    feed(joining, "heartbeat", 0.0)  # a live peer heard: a stalled join asks again
    feed(joining, "tick", 1.0 + joining.settings.join_timeout)
    assert joining.join_topic is not None and joining.join_topic.endswith("-2")
    for before in ("starting", "joining", "live", "fenced"):
        replica = in_state(before)  # type: ignore[arg-type]
        feed(replica, "recovery order", 0.0)
        assert replica._rejoin.excluded == {1}
