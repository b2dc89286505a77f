"""The documents a user reads, held to the code: `docs/protocol.md` names every field of every
message the programs speak, and the README names no file the repository lacks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from kvwire.asyncapi import message_models
from kvwire.events import Evento

ROOT = Path(__file__).resolve().parent.parent
#: The messages of `docs/asyncapi.yaml`, and the events of `<monitor topic>/events`.
MODELS: list[type[BaseModel]] = [*message_models(), Evento]


def wire_names(model: type[BaseModel]) -> set[str]:
    """The field names as they go on the wire (the alias where there is one)."""
    return {info.serialization_alias or name for name, info in model.model_fields.items()}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_the_protocol_document_names_every_field(model: type[BaseModel]) -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    missing = {
        name
        for name in wire_names(model)
        if f'"{name}"' not in text
        and f"`{name}`" not in text
        and not re.search(rf"\b{re.escape(name)}\b", text)
    }
    assert missing == set(), f"docs/protocol.md does not name {sorted(missing)} of {model.__name__}"


def test_the_readme_names_no_file_the_repository_lacks() -> None:
    text = (ROOT / "README.md").read_text()
    folders = "docs|scripts|kvserver|kvwire|kvclient|monitor|tests|security|\\.ci"
    named = set(re.findall(rf"(?<![\w/.-])((?:{folders})/[\w./-]*[\w])", text))
    named |= set(re.findall(r"\]\(([\w./-]+)\)", text))
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert named and missing == []
