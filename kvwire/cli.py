"""Start-up pieces the three programs share: logging, and the options that say how to reach
the broker (address, credentials, TLS) and the cluster key, spelt alike in every program."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

BROKER_HELP = "Broker as HOST:PORT (default: $KV_BROKER, else 127.0.0.1:1883)."

_SECURITY = "Broker access (PROTOCOL §16)"

UsernameOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        help="User name at the broker (default: $KV_USERNAME).",
        metavar="USER",
        rich_help_panel=_SECURITY,
    ),
]
PasswordFileOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        help="File holding the password (default: $KV_PASSWORD_FILE, else $KV_PASSWORD).",
        metavar="FILE",
        rich_help_panel=_SECURITY,
    ),
]
TlsCaOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        help="Use TLS, trusting this CA (default: $KV_TLS_CA).",
        metavar="FILE",
        rich_help_panel=_SECURITY,
    ),
]
TlsCertOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        help="Client certificate, for a broker that asks for one (default: $KV_TLS_CERT).",
        metavar="FILE",
        rich_help_panel=_SECURITY,
    ),
]
TlsKeyOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        help="The client certificate's key (default: $KV_TLS_KEY).",
        metavar="FILE",
        rich_help_panel=_SECURITY,
    ),
]
ClusterKeyOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        help="Sign control messages and accept only signed ones (default: "
        "$KV_CLUSTER_KEY_FILE; without it the open protocol).",
        metavar="FILE",
        rich_help_panel=_SECURITY,
    ),
]


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
