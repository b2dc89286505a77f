"""The base of every message model: how the wire is read (tolerant, every spelling listed)
and written (canonical), shared by `kvwire.messages` and the messages of later sections
(`kvwire.leasing`)."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictInt, StrictStr

RequestId = StrictInt | StrictStr

#: The most keys one `listagem` answer holds, and how many when `limite` is left out.
LIST_LIMIT_MAX, LIST_LIMIT_DEFAULT = 10_000, 1000


class _Wire(BaseModel):
    # Input accepts the canonical alias and every other spelling listed; Python code builds
    # models by field name. Unknown extra fields are ignored (other implementations add some).
    model_config = ConfigDict(
        strict=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
        frozen=True,
    )

    def encode(self) -> bytes:
        # The serializer itself: model_dump_json is it, decoded to str (and back, here).
        return self.__pydantic_serializer__.to_json(self, exclude_none=True)


_TOPICO_RESP = Field(
    validation_alias=AliasChoices("topico-resp", "topicoresp", "topico_resp"),
    serialization_alias="topico-resp",
)


def _idserv(alias: str = "idserv") -> Any:
    return Field(validation_alias=AliasChoices("idserv", "idServ"), serialization_alias=alias)
