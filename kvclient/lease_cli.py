"""`kvclient lease ...` and `kvclient hold`: keys that end by themselves (protocol §18)."""

from __future__ import annotations

import signal
import subprocess
import threading
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from kvclient.leases import new_lease_name, ttl_seconds
from kvclient.operations import Grant, KeepAlive, Revoke
from kvclient.shell import BrokerOpt, JsonOpt, KeyArg, TimeoutOpt, TopicOpt, answered, said
from kvwire.errors import ServerError
from kvwire.messages import REQUESTS_TOPIC, Resposta

if TYPE_CHECKING:
    from kvclient.client import KVClient

lease_app = typer.Typer(
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Leases: keys that end by themselves unless kept alive (grant, keep-alive, revoke).",
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", show_default=False)]
TtlArg = Annotated[str, typer.Argument(metavar="TTL", help="30s, 2m, 1h (at most 1d).")]


def _ttl_said(answer: Resposta) -> str:
    return f"{answer.concessao} (TTL {answer.ttl} s)"


@lease_app.command()
def grant(
    ctx: typer.Context,
    ttl: TtlArg,
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="The lease's name (default: a new random one).", metavar="NAME"),
    ] = None,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    as_json: JsonOpt = False,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """Grant a lease of TTL and print its name.

    Keys put with --lease NAME are deleted when the lease ends: TTL after the grant or the
    last keep-alive, or at once when revoked. Granting a lease again gives it a new TTL.

    Example: kvclient lease grant 30s; kvclient put workers/7 up --lease NAME
    """
    answered(
        ctx, broker, timeout, requests_topic, as_json,
        lambda kv: kv.request(Grant(name or new_lease_name(), ttl_seconds(ttl))),
        lambda answer: answer.concessao,
    )  # fmt: skip


@lease_app.command("keep-alive")
def keep_alive(
    ctx: typer.Context,
    name: NameArg,
    once: Annotated[bool, typer.Option("--once", help="One keep-alive, then exit.")] = False,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """Keep the lease NAME alive until Ctrl-C: a keep-alive every third of its TTL.

    Exit 2 when the lease has ended (its keys are gone). --once sends one and prints the TTL.

    Example: kvclient lease keep-alive lease-3f2a9c
    """
    if once:
        answered(
            ctx, broker, timeout, requests_topic, False,
            lambda kv: kv.request(KeepAlive(name)), _ttl_said,
        )  # fmt: skip
        return
    from kvclient.client import KVClient

    stop = threading.Event()
    with (
        said(ctrl_c_ends=True),
        KVClient(broker, timeout=timeout, requests_topic=requests_topic, access=ctx.obj) as kv,
    ):
        ttl = kv.keep_alive(name)
        typer.echo(f"keeping {name} alive (TTL {ttl} s) until Ctrl-C")
        while not stop.wait(max(ttl / 3, 0.2)):
            ttl = kv.keep_alive(name)


@lease_app.command()
def revoke(
    ctx: typer.Context,
    name: NameArg,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    as_json: JsonOpt = False,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """End the lease NAME now: its keys are deleted. Exit 2 if it had ended already.

    Example: kvclient lease revoke lease-3f2a9c
    """
    answered(
        ctx, broker, timeout, requests_topic, as_json,
        lambda kv: kv.request(Revoke(name)), lambda _: None,
    )  # fmt: skip


@lease_app.command("list")
def list_leases(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """List the cluster's leases, one a line: name, TTL, and how many keys end with it.

    Example: kvclient lease list
    """
    from kvclient.client import KVClient

    with (
        said(),
        KVClient(broker, timeout=timeout, requests_topic=requests_topic, access=ctx.obj) as kv,
    ):
        for lease in kv.leases():
            keys = f"{lease.chaves} key{'' if lease.chaves == 1 else 's'}"
            typer.echo(f"{lease.concessao}\tTTL {lease.ttl} s\t{keys}")


def hold(
    ctx: typer.Context,
    key: KeyArg,
    value: Annotated[str, typer.Argument(metavar="VALUE", show_default=False)],
    ttl: Annotated[
        str, typer.Option(help="The backstop: the key ends this long after a silence.")
    ] = "10s",
    will_delay: Annotated[
        int, typer.Option(help="Seconds a dropped connection has to come back.", min=0)
    ] = 0,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """Keep KEY at VALUE for exactly as long as this command runs.

    The key is put under a lease bound to this connection: Ctrl-C or the end of the command
    revokes it (SIGTERM too), and if the process is killed or its network dies the broker
    publishes the revoke itself (the connection's MQTT will): a service's or a device's
    presence from a shell script. Exit 2 if the lease was lost (the key is gone).

    Example: kvclient hold services/api "$(hostname):8080"
    """
    _on_sigterm()
    with (
        said(ctrl_c_ends=True),
        _session(ctx, broker, timeout, requests_topic, ttl, will_delay) as kv,
    ):
        assert kv.session is not None
        kv.put(key, value, lease=kv.session.name)
        typer.echo(f"holding {key} until Ctrl-C (lease {kv.session.name})")
        while not kv.session.lost.wait(0.5):
            pass
        raise ServerError(f"the lease of {key} ended: the key is gone")


MirrorOpt = Annotated[str, typer.Option(help="The replicas' --mirror prefix.", metavar="TOPIC")]
HoldTtlOpt = Annotated[
    str, typer.Option(help="How long after this process dies silently the others go on.")
]


def _session(
    ctx: typer.Context,
    broker: str | None,
    timeout: float,
    requests_topic: str,
    ttl: str,
    will_delay: int = 0,
) -> KVClient:
    """A client holding a lease bound to its connection, of `ttl`: `hold`, `lock`, `elect`."""
    from kvclient.client import KVClient

    return KVClient(
        broker, timeout=timeout, requests_topic=requests_topic, access=ctx.obj,
        session_lease=ttl_seconds(ttl), will_delay=will_delay,
    )  # fmt: skip


def _on_sigterm() -> None:
    def stopped(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # a service manager's SIGTERM ends it as Ctrl-C does

    signal.signal(signal.SIGTERM, stopped)


def lock(
    ctx: typer.Context,
    name: NameArg,
    command: Annotated[list[str], typer.Argument(metavar="-- COMMAND...", show_default=False)],
    ttl: HoldTtlOpt = "10s",
    wait: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="Give up after this many seconds of waiting (exit 2).", metavar="S"),
    ] = None,
    mirror: MirrorOpt = "inf1406-kv",
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """Run COMMAND while holding the lock NAME, and exit with its status.

    Waits while another process holds it (told by the value mirror when it is let go, not by
    polling). COMMAND gets the lock's revision in KV_LOCK_REVISION: a fencing token, higher
    for each new holder. If this process dies, the lock is let go as soon as the broker
    sees it (its connection's will), or at the latest after --ttl.

    Example: kvclient lock jobs/nightly -- ./backup.sh
    """
    import os
    import subprocess

    from kvclient.recipes import Lock

    if command[:1] == ["--"]:  # read as an argument, after NAME: COMMAND's own from here
        command = command[1:]
    if not command:
        typer.echo("kvclient: no COMMAND to run (kvclient lock NAME -- COMMAND...)", err=True)
        raise typer.Exit(2)
    _on_sigterm()
    with said(), _session(ctx, broker, timeout, requests_topic, ttl) as kv:
        held = Lock(kv, name, mirror=mirror)
        try:
            token = held.acquire(wait)
        except TimeoutError as exc:
            raise ServerError(str(exc)) from None
        env = dict(os.environ, KV_LOCK_REVISION=str(token), KV_LOCK_NAME=name)
        try:
            child = subprocess.Popen(command, env=env)
        except OSError as exc:
            held.release()
            raise ServerError(f"cannot run {command[0]!r}: {exc.strerror}") from None
        status = _run_holding(child, kv)
        held.release()
    raise typer.Exit(status)


def _run_holding(child: subprocess.Popen[bytes], kv: KVClient) -> int:
    """COMMAND's exit status; if the lock's lease is lost meanwhile, COMMAND is stopped."""
    session = kv.session
    assert session is not None
    try:
        while child.poll() is None:
            if session.lost.wait(0.2):
                child.terminate()
                child.wait()
                raise ServerError("the lock was lost (its lease ended): COMMAND was stopped")
    except KeyboardInterrupt:
        child.wait()  # it had the Ctrl-C too
    return child.returncode


def elect(
    ctx: typer.Context,
    name: NameArg,
    value: Annotated[str, typer.Argument(metavar="VALUE", show_default=False)],
    ttl: HoldTtlOpt = "10s",
    mirror: MirrorOpt = "inf1406-kv",
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """Stand in the election NAME with VALUE; print when this candidate leads.

    The candidate whose key under NAME/ has the lowest revision leads; Ctrl-C resigns (the
    next one leads at once), and a candidate whose process dies is out as soon as the broker
    sees it. Exit 2 if this leader's lease is lost.

    Example: kvclient elect service/leader "$(hostname)"
    """
    from kvclient.recipes import Election

    _on_sigterm()
    with said(ctrl_c_ends=True), _session(ctx, broker, timeout, requests_topic, ttl) as kv:
        election = Election(kv, name, value, mirror=mirror)
        try:
            typer.echo(f"campaigning in {name} as {election.key}", err=True)
            election.campaign()
            typer.echo(f"leader: {value} ({election.key}, revision {election.revision})")
            while election.leading:
                election.follow(0.5)
            raise ServerError("no longer the leader: its lease ended")
        finally:
            election.resign()
