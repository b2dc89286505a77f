"""`kvclient lease ...` and `kvclient hold`: keys that end by themselves (protocol §18)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated, Optional

import typer

from kvclient.leases import new_lease_name, ttl_seconds
from kvclient.operations import Grant, KeepAlive, Revoke
from kvclient.shell import BrokerOpt, JsonOpt, KeyArg, TimeoutOpt, TopicOpt, answered, said
from kvwire.errors import ServerError
from kvwire.messages import REQUESTS_TOPIC, Resposta

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
    from kvclient.client import KVClient

    def stopped(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # a service manager's SIGTERM ends it as Ctrl-C does

    signal.signal(signal.SIGTERM, stopped)
    with said(ctrl_c_ends=True):
        seconds = ttl_seconds(ttl)
        kv = KVClient(
            broker, timeout=timeout, requests_topic=requests_topic, access=ctx.obj,
            session_lease=seconds, will_delay=will_delay,
        )  # fmt: skip
        with kv:
            assert kv.session is not None
            kv.put(key, value, lease=kv.session.name)
            typer.echo(f"holding {key} until Ctrl-C (lease {kv.session.name})")
            while not kv.session.lost.wait(0.5):
                pass
            raise ServerError(f"the lease of {key} ended: the key is gone")
