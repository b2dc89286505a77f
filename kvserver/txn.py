"""Transactions (protocol §20) as rules every replica applies alike: whether one is refused,
which branch runs, and what it does, all at the transaction's one position.

The chosen branch runs in order, each operation seeing the ones before it (a get after a put
of the same key reads the put). It is all or nothing: a put's or delete's own `serevisao`
that does not hold, or a lease that has ended, is found before anything is written, and then
nothing is (`conflito` or `erro`). Every write of the transaction takes its position as its
revision, so it is one step for the mirror, the feed and revisions alike.
"""

from __future__ import annotations

import json
from typing import Literal, NamedTuple

from kvserver.leases import Leases
from kvserver.quota import Quota
from kvserver.store import Store
from kvserver.writes import write_problem
from kvwire.txn import Resultado, Se, Transacao, TxnDelete, TxnGet, TxnList, TxnPut

TxnStatus = Literal["ok", "conflito", "erro", "cota"]


class TxnOutcome(NamedTuple):
    status: TxnStatus
    #: Which branch ran (None when refused).
    success: bool | None = None
    results: list[Resultado] = []  # noqa: RUF012  # a NamedTuple's default, never mutated
    problem: str | None = None
    #: The keys written, in order, with the lease each ends with now (None: no lease).
    written: list[tuple[str, str | None]] = []  # noqa: RUF012
    #: The keys deleted, in order.
    deleted: list[str] = []  # noqa: RUF012

    def logged(self) -> str:
        """What the request log keeps of it (`value`): the answer's own fields, as JSON."""
        body = {
            "sucesso": self.success,
            "resultados": [r.model_dump(exclude_none=True) for r in self.results],
            "erro": self.problem,
        }
        return json.dumps(body, ensure_ascii=False)


def logged_txn_outcome(status: str, value: str | None) -> TxnOutcome:
    """The outcome a logged transaction had, for its retry or a substitute's replay."""
    body = json.loads(value or "{}")
    results = [Resultado.model_validate(r) for r in body.get("resultados", [])]
    kind: TxnStatus = status if status in ("ok", "conflito", "erro", "cota") else "erro"  # type: ignore[assignment]
    return TxnOutcome(kind, body.get("sucesso"), results, body.get("erro"))


def txn_problem(message: Transacao, max_key_bytes: int, max_value_bytes: int) -> str | None:
    """Why every replica refuses this transaction whatever the store holds, or None."""
    if not message.entao and not message.senao:
        return "a transaction with no operations in either branch"
    for compare in message.se:
        problem = _compare_problem(compare)
        if problem is not None:
            return problem
    for name, branch in (("entao", message.entao), ("senao", message.senao)):
        written: set[str] = set()
        for op in branch:
            if isinstance(op, TxnPut | TxnDelete):
                key = op.chave
                if key in written:
                    return f"{name} writes the key {key[:80]!r} twice"
                written.add(key)
                value = op.novovalor if isinstance(op, TxnPut) else ""
                problem = write_problem(key, value, max_key_bytes, max_value_bytes)
                if problem is not None:
                    return f"{name}: {problem}"
    return None


def _compare_problem(compare: Se) -> str | None:
    given = [x is not None for x in (compare.revisao, compare.valor, compare.ausente)]
    if sum(given) != 1:
        return f"a compare of {compare.chave[:80]!r} needs one of revisao, valor and ausente"
    if compare.comparacao != "=" and compare.revisao is None:
        return f"a compare of {compare.chave[:80]!r}: only a revision is compared with < or >"
    return None


def holds(store: Store, compare: Se) -> bool:
    entry = store.entry(compare.chave)
    if compare.ausente is not None:
        return (entry is None) == compare.ausente
    if compare.valor is not None:
        return entry is not None and entry[0] == compare.valor
    revision = 0 if entry is None else entry[1]
    wanted = compare.revisao or 0
    if compare.comparacao == "<":
        return revision < wanted
    if compare.comparacao == ">":
        return revision > wanted
    return revision == wanted


def apply_txn(
    store: Store, leases: Leases, message: Transacao, position: int, quota: Quota | None = None
) -> TxnOutcome:
    """Judge the compares, check the chosen branch, and apply it at `position`."""
    success = all(holds(store, compare) for compare in message.se)
    branch = message.entao if success else message.senao
    refused = _refusal(store, leases, branch, position)
    if refused is not None:
        return refused
    if quota is not None:
        writes = [
            (op.chave, op.novovalor if isinstance(op, TxnPut) else None)
            for op in branch
            if isinstance(op, TxnPut | TxnDelete)
        ]
        problem = quota.refuses(store, writes)
        if problem is not None:
            return TxnOutcome("cota", success, problem=problem)
    results: list[Resultado] = []
    written: list[tuple[str, str | None]] = []
    deleted: list[str] = []
    for op in branch:
        if isinstance(op, TxnPut):
            store.put(op.chave, op.novovalor, position)
            written.append((op.chave, op.concessao))
            results.append(Resultado(chave=op.chave, revisao=position))
        elif isinstance(op, TxnDelete):
            if store.delete(op.chave):
                deleted.append(op.chave)
                results.append(Resultado(chave=op.chave, revisao=position))
            else:
                results.append(Resultado(chave=op.chave, status="naoencontrada"))
        elif isinstance(op, TxnGet):
            entry = store.entry(op.chave)
            if entry is None:
                results.append(Resultado(chave=op.chave, status="naoencontrada"))
            else:
                results.append(Resultado(chave=op.chave, valor=entry[0], revisao=entry[1]))
        else:
            keys, more = store.keys(op.prefixo, op.apos, op.limite)
            results.append(Resultado(chaves=keys, mais=more))
    return TxnOutcome("ok", success, results, written=written, deleted=deleted)


def _refusal(
    store: Store, leases: Leases, branch: list[TxnPut | TxnDelete | TxnGet | TxnList], position: int
) -> TxnOutcome | None:
    """What stops the branch before anything is written: a put's or delete's `serevisao`
    (judged as the branch goes: an earlier write of the key in it counts) or an ended lease."""
    revisions: dict[str, int] = {}
    for op in branch:
        if not isinstance(op, TxnPut | TxnDelete):
            continue
        key = op.chave
        if isinstance(op, TxnPut) and op.concessao is not None and not leases.is_live(op.concessao):
            problem = f"lease {op.concessao[:80]!r} is unknown or has ended"
            return TxnOutcome("erro", problem=problem)
        if op.serevisao is not None:
            current = revisions.get(key, store.revision(key))
            if current != op.serevisao:
                problem = f"key {key[:80]!r} is at revision {current}, not {op.serevisao}"
                return TxnOutcome("conflito", problem=problem)
        revisions[key] = position if isinstance(op, TxnPut) else 0
    return None
