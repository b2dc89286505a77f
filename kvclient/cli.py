"""`kvclient`: get and put from the shell. A shell over `KVClient`: parse, call, print.

Exit codes: 0 success, 1 the key does not exist, 2 any other error (broker down, timeout,
refused request), with a one-line message on stderr.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from kvwire.access import Access, ClusterKey
from kvwire.cli import (
    BROKER_HELP,
    ClusterKeyOpt,
    PasswordFileOpt,
    TlsCaOpt,
    TlsCertOpt,
    TlsKeyOpt,
    UsernameOpt,
)
from kvwire.errors import KeyNotFound, KVError
from kvwire.messages import MONITOR_TOPIC, REQUESTS_TOPIC, Resposta

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Client of an mqtt-kv cluster.",
)

BrokerOpt = Annotated[Optional[str], typer.Option(help=BROKER_HELP)]  # noqa: UP045
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait for an answer, retries included.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the replica's whole answer as JSON.")]
TopicOpt = Annotated[str, typer.Option(help="Request topic.")]


@app.callback()
def _access(
    ctx: typer.Context,
    username: UsernameOpt = None,
    password_file: PasswordFileOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
) -> None:
    """Client of an mqtt-kv cluster. The broker access options go before the command
    (kvclient --username alice get color), or in the environment (source run/env)."""
    try:
        ctx.obj = Access.load(username, password_file, tls_ca, tls_cert, tls_key)
    except KVError as exc:
        typer.echo(f"kvclient: {exc}", err=True)
        raise typer.Exit(2) from None


def _run(
    ctx: typer.Context,
    key: str,
    value: str | None,
    broker: str | None,
    timeout: float,
    as_json: bool,
    topic: str,
) -> None:
    from kvclient.client import KVClient, value_of

    answer: Resposta | None = None
    try:
        with KVClient(broker, timeout=timeout, requests_topic=topic, access=ctx.obj) as kv:
            answer = kv.request(key, value)
        text = value_of(answer)
        typer.echo(answer.encode().decode() if as_json else text)
    except KeyNotFound as exc:
        if as_json and answer is not None:
            typer.echo(answer.encode().decode())
        typer.echo(f"kvclient: {exc}", err=True)
        raise typer.Exit(1) from None
    except KVError as exc:
        if as_json and answer is not None:
            typer.echo(answer.encode().decode())
        typer.echo(f"kvclient: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def get(
    ctx: typer.Context,
    key: str,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    as_json: JsonOpt = False,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """Print the value of KEY (exit 1 if it has none)."""
    _run(ctx, key, None, broker, timeout, as_json, requests_topic)


@app.command()
def put(
    ctx: typer.Context,
    key: str,
    value: str,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    as_json: JsonOpt = False,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """Store VALUE under KEY; prints it back once the key's owner acknowledged it."""
    _run(ctx, key, value, broker, timeout, as_json, requests_topic)


@app.command()
def load(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = 10.0,
    clients: Annotated[int, typer.Option(help="Concurrent clients.")] = 3,
    keys: Annotated[int, typer.Option(help="Keys shared by the clients.")] = 8,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Run puts and gets, record the history, then report: every request answered, no
    acknowledged write lost, linearizable. Exit 1 when any of these fails."""
    import time

    from kvclient.workload import Workload

    workload = Workload(broker, clients=clients, keys=keys, timeout=timeout, access=ctx.obj)
    try:
        with workload:
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                time.sleep(0.2)
        report = workload.report()
    except KVError as exc:
        typer.echo(f"kvclient: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.render())
    if report.problems():
        raise typer.Exit(1)


@app.command()
def status(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every second.")] = False,
    listen: Annotated[float, typer.Option(help="Seconds to listen to heartbeats.")] = 1.5,
    n: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--n", help="Cluster size (default: as the replicas announce it)."),
    ] = None,
    monitor_topic: Annotated[str, typer.Option(help="Heartbeat topic.")] = MONITOR_TOPIC,
) -> None:
    """Show the replicas and monitors from their heartbeats; exit 1 when a replica is down
    or replicas at the same position disagree."""
    import json
    import time

    from kvclient.status import ClusterWatch, as_rows, expected_size, problems, render

    try:
        with ClusterWatch(broker, monitor_topic=monitor_topic, access=ctx.obj) as watcher:
            time.sleep(listen)  # heartbeats come every 0.25 s, monitors' every second
            while True:
                current = watcher.status(stale_after=max(1.0, listen))
                size = expected_size(current, n)
                found = problems(current, size)
                if as_json:
                    report = {
                        "replicas": as_rows(current, size),
                        "monitors": current.monitors,
                        "problems": found,
                    }
                    typer.echo(json.dumps(report))
                else:
                    if watch:
                        typer.echo("\x1b[2J\x1b[H", nl=False)
                    typer.echo(render(current, size))
                if not watch:
                    break
                time.sleep(1.0)
    except KVError as exc:
        typer.echo(f"kvclient: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    if found:
        raise typer.Exit(1)


@app.command()
def recover(
    ctx: typer.Context,
    without: Annotated[
        list[int],
        typer.Option("--without", help="A replica not to wait for (repeat for several)."),
    ],
    broker: BrokerOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a replica to resume.")] = 30.0,
    monitor_topic: Annotated[str, typer.Option(help="Heartbeat topic.")] = MONITOR_TOPIC,
    cluster_key_file: ClusterKeyOpt = None,
) -> None:
    """After a whole-cluster stop, let the replicas with data on disk resume without the
    ones named: they wait for every replica of their last view, because one still down may
    hold the only copy of writes its owner acknowledged. In a secured cluster it is an
    operator's order: give the replicas' user and the cluster key. Example: kvclient recover
    --without 2"""
    import time

    from kvclient.status import ClusterWatch
    from kvwire.messages import Recuperacao

    names = ", ".join(map(str, without))
    typer.echo(
        f"kvclient: resuming without replica(s) {names}: writes that only they applied are "
        "lost, if they hold any (their owners may have acknowledged them)",
        err=True,
    )
    try:
        key = ClusterKey.load(cluster_key_file)
        with ClusterWatch(broker, monitor_topic=monitor_topic, access=ctx.obj) as watcher:
            deadline = time.monotonic() + timeout
            while True:
                # Sent again every second: a replica started meanwhile must hear it too.
                order = Recuperacao(sem=without, enviadoem=time.time()).encode()
                watcher.announce(order, key)
                status = watcher.wait_for(lambda s: bool(s.live()), timeout=1.0)
                if status.live():
                    typer.echo(f"live: replicas {', '.join(map(str, status.live()))}")
                    return
                if time.monotonic() >= deadline:
                    typer.echo(
                        f"kvclient: no replica resumed within {timeout:g} s: are the others "
                        "running with their data directories?",
                        err=True,
                    )
                    raise typer.Exit(2)
    except KVError as exc:
        typer.echo(f"kvclient: {exc}", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    app(prog_name="kvclient")


if __name__ == "__main__":
    main()
