"""Start-up pieces the three programs share: logging, and the options that say how to reach
the broker (address, credentials, TLS) and the cluster key, spelt alike in every program."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer

if TYPE_CHECKING:
    from kvwire.access import Access, ClusterKey

BROKER_HELP = "Broker as HOST:PORT (default: $KV_BROKER, else 127.0.0.1:1883)."


def _file(help: str) -> Any:
    return typer.Option(help=help, metavar="FILE")


UsernameOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="User name at the broker (default: $KV_USERNAME).", metavar="USER"),
]
PasswordFileOpt = Annotated[
    Optional[Path],  # noqa: UP045
    _file("File holding the password (default: $KV_PASSWORD_FILE, else $KV_PASSWORD)."),
]
TlsCaOpt = Annotated[
    Optional[Path],  # noqa: UP045
    _file("Use TLS, trusting this CA (default: $KV_TLS_CA)."),
]
TlsCertOpt = Annotated[
    Optional[Path],  # noqa: UP045
    _file("Client certificate, for a broker that asks for one (default: $KV_TLS_CERT)."),
]
TlsKeyOpt = Annotated[
    Optional[Path],  # noqa: UP045
    _file("The client certificate's key (default: $KV_TLS_KEY)."),
]
ClusterKeyOpt = Annotated[
    Optional[Path],  # noqa: UP045
    _file(
        "Sign control messages and accept only signed ones (default: $KV_CLUSTER_KEY_FILE; "
        "without it the open protocol)."
    ),
]


def version_option(program: str) -> Any:
    """`--version`, the same in every program: prints the installed version and exits."""

    def show(asked: bool) -> None:
        if asked:
            from importlib.metadata import version

            typer.echo(f"{program} (mqtt-kv) {version('mqtt-kv')}")
            raise typer.Exit(0)

    return typer.Option(
        "--version", help="Print the version and exit.", is_eager=True, callback=show
    )


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


@dataclass(frozen=True)
class Reach:
    """How a server program reaches the broker, and the cluster key it signs with."""

    host: str
    port: int
    access: Access
    cluster_key: ClusterKey | None

    def settings(self) -> dict[str, Any]:
        """The fields of a program's settings (`ReplicaSettings`, `MonitorSettings`) that
        say how to reach the broker and what to sign with."""
        return {
            "host": self.host, "port": self.port, "access": self.access,
            "cluster_key": self.cluster_key,
        }  # fmt: skip


def run_server(
    program: str,
    run: Callable[[Reach], int],
    *,
    log_level: str,
    broker: str | None,
    username: str | None,
    password_file: Path | None,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    cluster_key_file: Path | None,
) -> NoReturn:
    """The start-up `kvserver` and `kvmonitor` share: logging, the broker's address, access
    and cluster key read once; a `KVError` (a bad setting, a broker that refuses us) is one
    line and exit 2, anything else `run`'s own exit code."""
    from kvwire.access import Access, ClusterKey
    from kvwire.errors import KVError
    from kvwire.mqtt import broker_address

    setup_logging(log_level)
    try:
        host, port = broker_address(broker)
        access = Access.load(username, password_file, tls_ca, tls_cert, tls_key)
        code = run(Reach(host, port, access, ClusterKey.load(cluster_key_file)))
    except KVError as exc:
        typer.echo(f"{program}: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)
