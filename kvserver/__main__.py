"""`kvserver --id I --n N [--fresh]`: run one replica."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from kvwire.cli import (
    BROKER_HELP,
    ClusterKeyOpt,
    PasswordFileOpt,
    Reach,
    TlsCaOpt,
    TlsCertOpt,
    TlsKeyOpt,
    UsernameOpt,
    run_server,
    version_option,
)
from kvwire.messages import MONITOR_TOPIC, REQUESTS_TOPIC
from kvwire.metrics import METRICS_HELP
from kvwire.settings import HEARTBEAT_INTERVAL

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


class SyncMode(str, Enum):
    always = "always"
    periodic = "periodic"
    never = "never"


@app.command()
def serve(
    replica_id: Annotated[int, typer.Option("--id", help="This replica's id, 0..n-1.")],
    n: Annotated[int, typer.Option("--n", help="How many replicas the cluster has.")],
    fresh: Annotated[
        bool, typer.Option(help="Start a new, empty cluster instead of joining a running one.")
    ] = False,
    restore: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="Start a new cluster from this snapshot (kvclient snapshot save), every "
            "replica from the same file, instead of an empty one (--fresh).",
            metavar="FILE",
        ),
    ] = None,
    broker: Annotated[Optional[str], typer.Option(help=BROKER_HELP)] = None,  # noqa: UP045
    requests_topic: Annotated[str, typer.Option(help="Request topic.")] = REQUESTS_TOPIC,
    monitor_topic: Annotated[str, typer.Option(help="Heartbeat topic.")] = MONITOR_TOPIC,
    heartbeat_interval: Annotated[
        float, typer.Option(help="Seconds between heartbeats.")
    ] = HEARTBEAT_INTERVAL,
    failure_timeout: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="The monitor's failure timeout (default 4 x heartbeat interval)."),
    ] = None,
    log_ttl: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="Seconds a request stays in the log (default 10 x failure timeout)."),
    ] = None,
    join_timeout: Annotated[
        float, typer.Option(help="Seconds without state before asking again.")
    ] = 3.0,
    max_value_bytes: Annotated[int, typer.Option(help="Largest value accepted.")] = 256 * 1024,
    data_dir: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            help="Keep this replica's state in DIR (default: memory only).", metavar="DIR"
        ),
    ] = None,
    sync: Annotated[
        SyncMode,
        typer.Option(
            help="With --data-dir, when the disk is forced: always (every commit), periodic "
            "(every 0.1 s) or never (the OS decides)."
        ),
    ] = SyncMode.periodic,
    mirror: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Publish every key's value, retained, on PREFIX/<key> (the same on every "
            "replica; default: off).",
            metavar="PREFIX",
        ),
    ] = None,
    history: Annotated[
        int,
        typer.Option(
            help="The change feed keeps the last N changes (the same on every replica).",
            metavar="N",
        ),
    ] = 100_000,
    history_age: Annotated[
        str,
        typer.Option(help="...and none older than this: 3600, 30m, 1h, 1d.", metavar="AGE"),
    ] = "1h",
    max_keys: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            help="Refuse a write that would take the cluster past N keys (status cota; the "
            "same on every replica; default: no limit).",
            metavar="N",
        ),
    ] = None,
    max_bytes: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="...or past SIZE bytes of keys and values: 1000000, 500k, 64M, 2G.",
            metavar="SIZE",
        ),
    ] = None,
    metrics_port: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help=METRICS_HELP, metavar="[HOST:]PORT"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    username: UsernameOpt = None,
    password_file: PasswordFileOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    cluster_key_file: ClusterKeyOpt = None,
    version: Annotated[bool, version_option("kvserver")] = False,
    lag_writes_for_tests: Annotated[
        int, typer.Option(hidden=True, help="Test only: apply writes this many writes late.")
    ] = 0,
    corrupt_for_tests: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(hidden=True, help="Test only: store KEY=VALUE on this replica alone."),
    ] = None,
    stall_on_for_tests: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(hidden=True, help="Test only: a request holding TEXT stops the loop."),
    ] = None,
    crash_on_for_tests: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(hidden=True, help="Test only: a request holding TEXT raises."),
    ] = None,
    slow_for_tests: Annotated[
        float, typer.Option(hidden=True, help="Test only: seconds spent on every request.")
    ] = 0.0,
    pace_transfers_for_tests: Annotated[
        float, typer.Option(hidden=True, help="Test only: seconds between state chunks sent.")
    ] = 0.0,
) -> None:
    """Run one replica of mqtt-kv."""
    from kvserver.faults import Faults
    from kvserver.node import Node
    from kvserver.settings import ReplicaSettings
    from kvwire.settings import byte_size, duration_seconds

    faults = Faults(
        corrupt=corrupt_for_tests,
        stall_on=stall_on_for_tests,
        crash_on=crash_on_for_tests,
        slow=slow_for_tests,
        lag_writes=lag_writes_for_tests,
        pace_transfers=pace_transfers_for_tests,
    )

    age = duration_seconds(history_age)
    if age is None:
        raise typer.BadParameter(f"{history_age!r} is not a duration (3600, 30m, 1h)")

    size = None if max_bytes is None else byte_size(max_bytes)
    if max_bytes is not None and size is None:
        raise typer.BadParameter(f"--max-bytes {max_bytes!r} is not a size (1000000, 500k, 64M)")

    def run(reach: Reach) -> int:
        settings = ReplicaSettings(
            replica_id=replica_id,
            n=n,
            **reach.settings(),
            fresh=fresh,
            requests_topic=requests_topic,
            monitor_topic=monitor_topic,
            heartbeat_interval=heartbeat_interval,
            failure_timeout=failure_timeout,
            log_ttl=log_ttl,
            join_timeout=join_timeout,
            max_value_bytes=max_value_bytes,
            data_dir=data_dir,
            sync=sync.value,
            mirror=mirror,
            history=history,
            history_age=age,
            max_keys=max_keys,
            max_bytes=size,
            metrics=metrics_port,
            restore=restore,
            faults=faults,
        )
        return Node(settings).run()

    run_server(
        "kvserver", run, log_level=log_level, broker=broker, username=username,
        password_file=password_file, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
        cluster_key_file=cluster_key_file,
    )  # fmt: skip


def main() -> None:
    app(prog_name="kvserver")


if __name__ == "__main__":
    main()
