"""Start-up pieces the three programs share: logging, and the options that say how to reach
the broker (address, credentials, TLS) and the cluster key, spelt alike in every program."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

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


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
