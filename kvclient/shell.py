"""What every `kvclient` command shares: its options, and the contract of its output
(one line on stderr and an exit status for every error), so that command groups in modules
of their own (`kvclient.lease_cli`) answer alike."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from kvwire.access import Access
from kvwire.cli import BROKER_HELP
from kvwire.errors import Conflict, KeyNotFound, KVError, RequestTimeout
from kvwire.messages import Resposta

if TYPE_CHECKING:
    from kvclient.client import KVClient

BrokerOpt = Annotated[Optional[str], typer.Option(help=BROKER_HELP, metavar="HOST:PORT")]  # noqa: UP045
TimeoutOpt = Annotated[
    float,
    typer.Option(help="Seconds to wait for an answer, retries included.", metavar="SECONDS"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the replica's whole answer as JSON.")]
KeyArg = Annotated[str, typer.Argument(metavar="KEY", show_default=False)]
TopicOpt = Annotated[str, typer.Option(help="Request topic.", metavar="TOPIC")]
SizeOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("--n", help="Cluster size (default: as the replicas announce it)."),
]


@contextlib.contextmanager
def said(ctrl_c_ends: bool = False) -> Iterator[None]:
    """The CLI's contract: a KVError is one line on stderr and exit 2; with `ctrl_c_ends`
    (commands that run until interrupted), Ctrl-C is a normal end, exit 0."""
    try:
        yield
    except KVError as exc:
        typer.echo(f"kvclient: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        if not ctrl_c_ends:
            raise
        raise typer.Exit(0) from None


def answered(
    ctx: typer.Context,
    broker: str | None,
    timeout: float,
    topic: str,
    as_json: bool,
    ask: Callable[[KVClient], Resposta],
    show: Callable[[Resposta], str | None],
    key: str | None = None,
) -> None:
    """Ask, print what `show` makes of an `ok` answer (or the whole answer with --json), and
    exit 1 for a key not found, 3 for a lost compare-and-set, 2 for anything else. A request
    for `key` that timed out says why when the heartbeats tell (a full disk)."""
    from kvclient.client import KVClient
    from kvclient.operations import checked

    answer: Resposta | None = None
    try:
        with KVClient(broker, timeout=timeout, requests_topic=topic, access=ctx.obj) as kv:
            answer = ask(kv)
        text = show(checked(answer))
        if as_json:
            typer.echo(answer.encode().decode())
        elif text is not None:
            typer.echo(text)
    except KVError as exc:
        if as_json and answer is not None:
            typer.echo(answer.encode().decode())
        why = unanswered(broker, ctx.obj, key) if isinstance(exc, RequestTimeout) else None
        typer.echo(f"kvclient: {exc}" + (f": {why}" if why else ""), err=True)
        code = 1 if isinstance(exc, KeyNotFound) else 3 if isinstance(exc, Conflict) else 2
        raise typer.Exit(code) from None


#: How long a timed-out command listens for the heartbeat of the replica that answers its key
#: (they come every 0.25 s).
_LISTEN_S = 1.0


def unanswered(broker: str | None, access: Access | None, key: str | None) -> str | None:
    """Why a request for `key` went unanswered, if the heartbeats say (`why_unanswered`)."""
    from kvclient.status import ClusterWatch, answering, why_unanswered

    if key is None:
        return None
    with contextlib.suppress(KVError), ClusterWatch(broker, access=access) as watch:
        status = watch.wait_for(lambda s: answering(s, key) is not None, _LISTEN_S)
        return why_unanswered(status, key)
    return None


def value_of(answer: Resposta) -> str:
    return answer.valor or ""
