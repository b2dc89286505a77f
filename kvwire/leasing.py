"""The lease messages (protocol §18): grant, keep-alive, revoke and expiry.

A lease's name is the client's choice, so that a client can put the lease's `revogacao` in
its MQTT will before the lease exists (a session-bound lease). Grant, keep-alive and revoke are
writes: applied by every replica in stream order, de-duplicated, answered by the owner of the
lease's name hashed as a key. `expiracao` is a replica's, the lease's keeper's: every replica
applies it at its position, and it ends the lease only if no keep-alive came in between.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import Field, StrictInt, StrictStr

from kvwire.wire import _TOPICO_RESP, RequestId, _idserv, _Wire

#: A lease's TTL, in whole seconds: at least one, at most a day (a longer one is a key).
TTL_MIN_S, TTL_MAX_S = 1, 86_400
#: A lease's name, in UTF-8 bytes: it is hashed like a key and named in MQTT wills.
LEASE_NAME_MAX_BYTES = 128
#: The most leases a cluster holds; a grant beyond is refused. A constant of the protocol, not
#: a setting: replicas that disagreed on it would refuse different grants and diverge. About
#: 750 bytes each in a replica (scripts/bench_leases.py): 75 MB at the limit.
MAX_LEASES = 100_000


class Concessao(_Wire):
    """Grant a lease, or grant it again (a new TTL, counted from here)."""

    tipomsg: Literal["concessao"] = "concessao"
    concessao: StrictStr
    ttl: StrictInt = Field(ge=TTL_MIN_S, le=TTL_MAX_S)
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId


class Renovacao(_Wire):
    """Keep a lease alive: its TTL counts again from this position."""

    tipomsg: Literal["renovacao"] = "renovacao"
    concessao: StrictStr
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId


class Revogacao(_Wire):
    """End a lease now: its keys are deleted at this position. A session-bound lease's client
    leaves this as its MQTT will."""

    tipomsg: Literal["revogacao"] = "revogacao"
    concessao: StrictStr
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId


class Expiracao(_Wire):
    """The keeper's word that the lease's TTL has passed since the grant or keep-alive applied
    at `renovadaem`; ignored where a later one was applied before it."""

    tipomsg: Literal["expiracao"] = "expiracao"
    concessao: StrictStr
    renovadaem: StrictInt
    idserv: StrictInt = _idserv()


class ListaConcessoes(_Wire):
    """The leases, in name order, a page at a time after `apos`: answered by one replica (the
    owner of `topico-resp` hashed as a key, as a `listagem` is)."""

    tipomsg: Literal["concessoes"] = "concessoes"
    apos: StrictStr | None = None
    limite: StrictInt = Field(default=1000, ge=1, le=10_000)
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId


class LeaseSummary(_Wire):
    """One lease in a `concessoes` answer: its name, TTL, how many keys end with it, and the
    position of its last grant or keep-alive."""

    concessao: StrictStr
    ttl: StrictInt
    chaves: StrictInt
    renovadaem: StrictInt


LeaseOp = Concessao | Renovacao | Revogacao


class LeaseRecord(NamedTuple):
    """A lease as it travels (in `estado`, the JSON array `[name, ttl, renewed_at, age,
    keys]`) and is kept on disk: `age` is how long before, in seconds of the sender's clock,
    its last renewal was applied; a receiver counts its TTL on from there."""

    name: str
    ttl: int
    renewed_at: int
    age: float
    keys: list[str]


def lease_name_problem(name: str) -> str | None:
    """Why every replica refuses this lease name, or None."""
    if not name:
        return "empty lease name"
    if len(name) * 4 > LEASE_NAME_MAX_BYTES and len(name.encode()) > LEASE_NAME_MAX_BYTES:
        return f"lease name longer than {LEASE_NAME_MAX_BYTES} bytes"
    return None
