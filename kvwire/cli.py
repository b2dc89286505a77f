"""Start-up pieces the three programs share: logging and the broker option."""

from __future__ import annotations

import logging
import sys

BROKER_HELP = "Broker as HOST:PORT (default: $KV_BROKER, else 127.0.0.1:1883)."


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
