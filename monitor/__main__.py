"""`kvmonitor --n N`: watch the replicas' heartbeats and declare failures."""

from __future__ import annotations

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


@app.command()
def watch(
    n: Annotated[int, typer.Option("--n", help="How many replicas the cluster has.")],
    broker: Annotated[Optional[str], typer.Option(help=BROKER_HELP)] = None,  # noqa: UP045
    heartbeat_interval: Annotated[
        float, typer.Option(help="The replicas' heartbeat interval.")
    ] = HEARTBEAT_INTERVAL,
    failure_timeout: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="Seconds without a heartbeat before a replica is failed "
            "(default 4 x heartbeat interval)."
        ),
    ] = None,
    requests_topic: Annotated[str, typer.Option(help="Request topic.")] = REQUESTS_TOPIC,
    monitor_topic: Annotated[str, typer.Option(help="Heartbeat topic.")] = MONITOR_TOPIC,
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
    version: Annotated[bool, version_option("kvmonitor")] = False,
) -> None:
    """Watch the replicas' heartbeats and publish falhaserv when one fails."""
    from monitor.service import MonitorService
    from monitor.settings import MonitorSettings

    def run(reach: Reach) -> int:
        settings = MonitorSettings(
            **reach.settings(),
            n=n,
            heartbeat_interval=heartbeat_interval,
            failure_timeout=failure_timeout,
            requests_topic=requests_topic,
            monitor_topic=monitor_topic,
            metrics=metrics_port,
        )
        return MonitorService(settings).run()

    run_server(
        "kvmonitor", run, log_level=log_level, broker=broker, username=username,
        password_file=password_file, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
        cluster_key_file=cluster_key_file,
    )  # fmt: skip


def main() -> None:
    app(prog_name="kvmonitor")


if __name__ == "__main__":
    main()
