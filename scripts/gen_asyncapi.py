"""Write docs/asyncapi.yaml from the wire models: `.venv/bin/python scripts/gen_asyncapi.py`."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kvwire.asyncapi import document  # noqa: E402

HEADER = "# Generated from the wire models by scripts/gen_asyncapi.py; do not edit by hand.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    (ROOT / "docs" / "asyncapi.yaml").write_text(render())
