"""`kvclient`: the store from the shell. A shell over `KVClient`: parse, call, print.

Exit codes: 0 success, 1 the key does not exist, 2 any other error (broker down, timeout,
refused request), 3 a compare-and-set lost, with a one-line message on stderr.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from kvclient.bulk_cli import export, import_
from kvclient.lease_cli import elect, hold, lease_app, lock
from kvclient.leases import ttl_seconds
from kvclient.operations import Delete, Get, Put
from kvclient.shell import (
    BrokerOpt,
    JsonOpt,
    KeyArg,
    SizeOpt,
    TimeoutOpt,
    TopicOpt,
    answered,
    said,
    value_of,
)
from kvclient.snapshot_cli import snapshot_app
from kvclient.txn_cli import txn
from kvwire.access import Access, ClusterKey
from kvwire.cli import (
    ClusterKeyOpt,
    PasswordFileOpt,
    TlsCaOpt,
    TlsCertOpt,
    TlsKeyOpt,
    UsernameOpt,
    version_option,
)
from kvwire.messages import MONITOR_TOPIC, REQUESTS_TOPIC, Resposta
from kvwire.mqtt import DEFAULT_BROKER

if TYPE_CHECKING:
    from kvclient.client import KVClient

app = typer.Typer(
    add_completion=False,
    # Click's own help: paragraphs re-flowed to the terminal, no type beside every option.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Client of an mqtt-kv cluster.",
)


app.add_typer(lease_app, name="lease")
app.add_typer(snapshot_app, name="snapshot")
app.command()(hold)
# COMMAND's own options are its own: nothing after NAME is read as kvclient's.
app.command(context_settings={"allow_interspersed_args": False})(lock)
app.command()(elect)
app.command()(txn)
app.command("import")(import_)
app.command()(export)


@app.callback()
def _access(
    ctx: typer.Context,
    username: UsernameOpt = None,
    password_file: PasswordFileOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    version: Annotated[bool, version_option("kvclient")] = False,
) -> None:
    """Client of an mqtt-kv cluster. The broker access options go before the command
    (kvclient --username alice get color), or in the environment (source run/env)."""
    with said():
        ctx.obj = Access.load(username, password_file, tls_ca, tls_cert, tls_key)


@app.command()
def get(
    ctx: typer.Context,
    key: KeyArg,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    as_json: JsonOpt = False,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """Print the value of KEY.

    Exit 1 if the key has no value. With --json, the whole answer, its revision included.

    Example: kvclient get color
    """
    answered(
        ctx, broker, timeout, requests_topic, as_json, lambda kv: kv.request(Get(key)), value_of,
        key,
    )  # fmt: skip


@app.command()
def put(
    ctx: typer.Context,
    key: KeyArg,
    value: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(metavar="[VALUE]", show_default=False),
    ] = None,
    if_revision: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="Write only if the key is at this revision (else exit 3).", min=0, metavar="R"
        ),
    ] = None,
    if_absent: Annotated[
        bool, typer.Option("--if-absent", help="Write only if the key has no value (else exit 3).")
    ] = False,
    ttl: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Delete the key after this long (30s, 2m, 1h).", metavar="TTL"),
    ] = None,
    lease: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="The key ends with this lease (kvclient lease grant).", metavar="NAME"),
    ] = None,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    as_json: JsonOpt = False,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """Store VALUE under KEY; without VALUE, what standard input holds.

    Prints the value back once the key's owner acknowledged it. With --if-revision or
    --if-absent it is a compare-and-set: nothing is written, and the exit status is 3, when
    the key is at another revision (kvclient get --json shows the revision). A value from
    standard input is taken as it is, up to the server's limit (256 KiB by default), which a
    command line's arguments would not hold.

    With --ttl the key is deleted that long after the put, under a lease of its own (protocol
    §18); with --lease, when that lease ends.

    Example: kvclient put color blue --if-revision 42; kvclient put config < config.json;
    kvclient put session/7 open --ttl 30s
    """
    if value is None:
        value = sys.stdin.read()
    if if_absent and if_revision is not None:
        typer.echo("kvclient: --if-absent and --if-revision exclude each other", err=True)
        raise typer.Exit(2)
    if ttl is not None and lease is not None:
        typer.echo("kvclient: --ttl and --lease exclude each other", err=True)
        raise typer.Exit(2)
    expected = 0 if if_absent else if_revision

    def ask(kv: KVClient) -> Resposta:
        name = kv.grant(ttl_seconds(ttl)) if ttl is not None else lease
        return kv.request(Put(key, value, expected, name))

    answered(ctx, broker, timeout, requests_topic, as_json, ask, value_of, key)


@app.command("del")
def delete(
    ctx: typer.Context,
    key: KeyArg,
    if_revision: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="Delete only if the key is at this revision (else exit 3).", min=0, metavar="R"
        ),
    ] = None,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    as_json: JsonOpt = False,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """Delete KEY.

    Prints nothing once the key's owner acknowledged it; exit 1 if the key had no value.

    Example: kvclient del color
    """
    answered(
        ctx, broker, timeout, requests_topic, as_json,
        lambda kv: kv.request(Delete(key, if_revision)), lambda _: None, key,
    )  # fmt: skip


@app.command()
def keys(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(metavar="PREFIX", show_default=False)] = "",
    limit: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Print at most this many keys.", min=1, metavar="N"),
    ] = None,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 5.0,
    requests_topic: TopicOpt = REQUESTS_TOPIC,
) -> None:
    """List the keys that start with PREFIX, in order, one a line.

    Pages of up to 1000 keys are fetched one after the other; a key written meanwhile may or
    may not be listed.

    Example: kvclient keys sensors/ --limit 10
    """
    from kvclient.client import KVClient

    with (
        said(),
        KVClient(broker, timeout=timeout, requests_topic=requests_topic, access=ctx.obj) as kv,
    ):
        for key in kv.keys(prefix, limit=limit):
            typer.echo(key)


@app.command()
def watch(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(metavar="PREFIX", show_default=False)] = "",
    from_revision: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--from-revision",
            min=0,
            help="Print the changes after revision R (from the replicas' history), instead "
            "of the current values first.",
            metavar="R",
        ),
    ] = None,
    mirror: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Read the value mirror under TOPIC instead (the replicas' --mirror): the "
            "latest value of each key, as any MQTT client sees it.",
            metavar="TOPIC",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object a line: chave, valor, revisao, tipo."),
    ] = False,
    timeout: TimeoutOpt = 10.0,
    broker: BrokerOpt = None,
) -> None:
    """Print each change of the keys that start with PREFIX, as it happens, until Ctrl-C.

    First the current value of every such key, then every put, delete and expiry, each once
    and in revision order, across failovers and restarts (the change feed). With
    --from-revision R: the changes after revision R instead; R older than the history kept
    is an error that names the oldest revision kept (exit 2).

    Example: kvclient watch sensors/ --from-revision 120 --json
    """
    if mirror is not None:
        _watch_mirror(ctx, prefix, mirror, as_json, broker)
        return
    from kvclient.client import KVClient

    with (
        said(ctrl_c_ends=True),
        KVClient(broker, timeout=timeout, access=ctx.obj) as kv,
        kv.watch(prefix, from_revision) as changes,
    ):
        for change in changes:
            typer.echo(change.json() if as_json else change.text())


def _watch_mirror(
    ctx: typer.Context, prefix: str, mirror: str, as_json: bool, broker: str | None
) -> None:
    import queue

    from kvclient.watch import MirrorWatch

    with (
        said(ctrl_c_ends=True),
        MirrorWatch(broker, prefix, mirror=mirror, access=ctx.obj) as watcher,
    ):
        while True:
            try:
                change = watcher.changes.get(timeout=0.5)
            except queue.Empty:
                continue
            typer.echo(change.json() if as_json else change.text())


@app.command()
def history(
    ctx: typer.Context,
    key: KeyArg,
    limit: Annotated[
        int, typer.Option(min=1, max=10_000, help="The newest N changes at most.", metavar="N")
    ] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    timeout: TimeoutOpt = 5.0,
    broker: BrokerOpt = None,
) -> None:
    """Print the changes of KEY that the replicas' history keeps, oldest first.

    Example: kvclient history color
    """
    from kvclient.client import KVClient

    with (
        said(),
        KVClient(broker, timeout=timeout, access=ctx.obj) as kv,
    ):
        for change in kv.history(key, limit=limit):
            typer.echo(change.json() if as_json else change.text())


@app.command()
def load(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = 10.0,
    clients: Annotated[int, typer.Option(help="Concurrent clients.")] = 3,
    keys: Annotated[int, typer.Option(help="Keys shared by the clients.")] = 8,
    shared: Annotated[
        bool,
        typer.Option(
            "--shared",
            help="One connection for every client: their requests go out in batches.",
        ),
    ] = False,
    timeout: TimeoutOpt = 10.0,
) -> None:
    """Check the cluster under load.

    Runs puts and gets from several clients, records the history, then reports whether every
    request was answered, no acknowledged write was lost and the history is linearizable;
    exit 1 when one of these fails.

    Example: kvclient load --duration 30 --clients 8
    """
    from kvclient.workload import Workload, run_for

    workload = Workload(
        broker, clients=clients, keys=keys, timeout=timeout, access=ctx.obj, shared=shared
    )
    with said():
        report = run_for(workload, duration)
    typer.echo(report.render())
    if report.problems():
        raise typer.Exit(1)


@app.command()
def web(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    port: Annotated[int, typer.Option(help="Port to serve the page on.")] = 8080,
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in a browser.")
    ] = False,
    n: SizeOpt = None,
    monitor_topic: Annotated[str, typer.Option(help="Heartbeat topic.")] = MONITOR_TOPIC,
) -> None:
    """Serve a live view of the cluster until Ctrl-C.

    The replicas on a ring with their state, position, keys and digest; who answers for
    whom; failures, takeovers and joins as they happen. The broker's credentials stay here.

    Example: kvclient web --open
    """
    import os

    from kvclient.status import ClusterWatch
    from kvclient.web import EVENTS_KEPT, WebView, serve_until_stopped

    with (
        said(ctrl_c_ends=True),
        ClusterWatch(
            broker, monitor_topic=monitor_topic, access=ctx.obj, events=EVENTS_KEPT
        ) as watcher,
    ):
        where = broker or os.environ.get("KV_BROKER") or DEFAULT_BROKER
        serve_until_stopped(WebView(watcher, where, n), host, port, open_browser)


@app.command()
def health(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
    listen: Annotated[float, typer.Option(help="Seconds to listen to heartbeats.")] = 1.5,
    n: SizeOpt = None,
    monitor_topic: Annotated[str, typer.Option(help="Heartbeat topic.")] = MONITOR_TOPIC,
) -> None:
    """Say whether the cluster serves every key, as the exit status.

    0: every replica live and agreeing. 1: degraded, a replica down and its keys served by
    the successor that took them over. 2: some keys have no live owner, replicas disagree, or
    no replica answers (or the broker cannot be reached). One line, or --json.

    Example: kvclient health || page-the-operator
    """
    import json
    import time

    from kvclient.health import health as verdict_of
    from kvclient.status import ClusterWatch, expected_size

    with (
        said(),
        ClusterWatch(broker, monitor_topic=monitor_topic, access=ctx.obj) as watcher,
    ):
        time.sleep(listen)  # heartbeats come every 0.25 s
        current = watcher.status(stale_after=max(1.0, listen))
        found = verdict_of(current, expected_size(current, n))
    typer.echo(json.dumps(found.as_json()) if as_json else f"{found.verdict}: {found.reason}")
    raise typer.Exit(found.code)


@app.command()
def status(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every second.")] = False,
    listen: Annotated[float, typer.Option(help="Seconds to listen to heartbeats.")] = 1.5,
    n: SizeOpt = None,
    monitor_topic: Annotated[str, typer.Option(help="Heartbeat topic.")] = MONITOR_TOPIC,
) -> None:
    """Show the replicas and monitors.

    One row per replica from its heartbeats: state, stream position, keys, digest, whom it
    answers for. Exit 1 when a replica is not live or replicas at the same position disagree.

    Example: kvclient status --watch
    """
    import json
    import time

    from kvclient.status import (
        ClusterWatch,
        as_rows,
        expected_size,
        problems,
        quota_fill,
        render,
    )

    with (
        said(ctrl_c_ends=True),
        ClusterWatch(broker, monitor_topic=monitor_topic, access=ctx.obj) as watcher,
    ):
        time.sleep(listen)  # heartbeats come every 0.25 s, monitors' every second
        while True:
            current = watcher.status(stale_after=max(1.0, listen))
            size = expected_size(current, n)
            found = problems(current, size)
            if as_json:
                rows = as_rows(current, size)
                report = {
                    "replicas": rows,
                    "monitors": current.monitors,
                    "quota": quota_fill(rows),
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
    """Resume a stopped cluster without some replicas.

    After a whole-cluster stop, replicas with data on disk wait for every replica of their
    last view, because one still down may hold the only copy of writes its owner
    acknowledged. This lets them resume without the ones named; what only those applied is
    lost. In a secured cluster it is an operator's order: give the replicas' user and the
    cluster key.

    Example: kvclient recover --without 2
    """
    from kvclient.status import ClusterWatch, resume_without

    names = ", ".join(map(str, without))
    typer.echo(
        f"kvclient: resuming without replica(s) {names}: writes that only they applied are "
        "lost, if they hold any (their owners may have acknowledged them)",
        err=True,
    )
    with said():
        key = ClusterKey.load(cluster_key_file)
        with ClusterWatch(broker, monitor_topic=monitor_topic, access=ctx.obj) as watcher:
            live = resume_without(watcher, without, key, timeout)
    if not live:
        typer.echo(
            f"kvclient: no replica resumed within {timeout:g} s: are the others running with "
            "their data directories?",
            err=True,
        )
        raise typer.Exit(2)
    typer.echo(f"live: replicas {', '.join(map(str, live))}")


def main() -> None:
    # `kill -USR1` prints every thread's stack to stderr: what a command that will not end
    # is waiting for (the tests send it before they give up on one).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    app(prog_name="kvclient")


if __name__ == "__main__":
    main()
