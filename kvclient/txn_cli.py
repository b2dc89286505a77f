"""`kvclient txn`: a transaction (protocol §20) written as etcdctl reads one: three blocks of
lines, the compares, the operations when they hold, the operations when they do not,
separated by a blank line.

    rev(acct/1) = 40          value(lock) = me          absent(new)     present(old)
    put acct/1 90             del old                   get acct/1      list acct/
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from kvclient.operations import Compare, Delete, Get, List, Put, TxnStep
from kvclient.shell import BrokerOpt, TimeoutOpt, said
from kvwire.errors import Conflict, InvalidRequest
from kvwire.txn import Resultado

_COMPARE = re.compile(r"^(rev|mod|value|absent|present)\(\s*(.+?)\s*\)\s*(?:([=<>])\s*(.*))?$")


def parse_compare(line: str) -> Compare:
    """`rev(KEY) = R` (or `<`, `>`; etcdctl's `mod`), `value(KEY) = V`, `absent(KEY)`,
    `present(KEY)`; a key or value may be quoted."""
    match = _COMPARE.match(line.strip())
    if match is None:
        raise InvalidRequest(f"not a compare: {line.strip()!r} (rev(KEY) = R, value(KEY) = V, "
                             "absent(KEY), present(KEY))")  # fmt: skip
    kind, key, op, operand = match.groups()
    key = _unquoted(key)
    if kind in ("absent", "present"):
        if op is not None:
            raise InvalidRequest(f"{kind}(KEY) takes no operand: {line.strip()!r}")
        return Compare(key, absent=kind == "absent")
    if op is None:
        raise InvalidRequest(f"a compare needs an operator and an operand: {line.strip()!r}")
    if kind == "value":
        if op != "=":
            raise InvalidRequest(f"a value compares with = only: {line.strip()!r}")
        return Compare(key, value=_unquoted(operand))
    try:
        revision = int(_unquoted(operand))
    except ValueError:
        raise InvalidRequest(f"a revision is a whole number: {line.strip()!r}") from None
    return Compare(key, revision=revision, op=op)


def parse_step(line: str) -> TxnStep:
    """`put KEY VALUE`, `del KEY`, `get KEY`, `list PREFIX`."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise InvalidRequest(f"{exc}: {line.strip()!r}") from None
    match words:
        case ["put", key, value]:
            return Put(key, value)
        case ["del", key] | ["delete", key]:
            return Delete(key)
        case ["get", key]:
            return Get(key)
        case ["list", prefix] | ["keys", prefix]:
            return List(prefix)
    raise InvalidRequest(
        f"not an operation: {line.strip()!r} (put KEY VALUE, del KEY, get KEY, list PREFIX)"
    )


def parse(text: str) -> tuple[list[Compare], list[TxnStep], list[TxnStep]]:
    """The three blocks: compares, then success, then failure (each may be empty)."""
    blocks: list[list[str]] = [[]]
    for line in text.rstrip().splitlines():
        if line.strip():
            blocks[-1].append(line)
        else:  # each blank line ends a block: a leading one means no compares
            blocks.append([])
    if len(blocks) > 3:
        raise InvalidRequest("a transaction is three blocks: compares, success, failure")
    blocks += [[]] * (3 - len(blocks))
    compares = [parse_compare(line) for line in blocks[0]]
    return compares, [parse_step(x) for x in blocks[1]], [parse_step(x) for x in blocks[2]]


def shown(step: TxnStep, result: Resultado) -> list[str]:
    found = result.status == "naoencontrada"
    if isinstance(step, Put):
        return [f"put {step.key} (revision {result.revisao})"]
    if isinstance(step, Delete):
        return [f"del {step.key}: " + ("not found" if found else f"revision {result.revisao}")]
    if isinstance(step, Get):
        if found:
            return [f"{step.key}: not found"]
        return [f"{step.key} = {result.valor} (revision {result.revisao})"]
    return list(result.chaves or [])


def txn(
    ctx: typer.Context,
    file: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--file", help="Read the transaction from FILE, not standard input."),
    ] = None,
    timeout: TimeoutOpt = 5.0,
    broker: BrokerOpt = None,
) -> None:
    """Run a transaction: if every compare holds, the first list of operations, else the
    second, at one position of the stream, all or nothing.

    Three blocks separated by a blank line, one line each: compares (rev(KEY) = R, with < or
    >; value(KEY) = V; absent(KEY); present(KEY)), then the operations when they hold, then
    those when they do not (put KEY VALUE, del KEY, get KEY, list PREFIX). Prints SUCCESS or
    FAILURE, then each operation's result; exit 0 when the compares held, 3 when not.

    Example: printf 'rev(acct/1) = 40\\n\\nput acct/1 90\\nput acct/2 110\\n\\nget acct/1\\n' |
    kvclient txn
    """
    from kvclient.client import KVClient

    with said():
        text = file.read_text() if file is not None else sys.stdin.read()
        compares, success, failure = parse(text)
        with KVClient(broker, timeout=timeout, access=ctx.obj) as kv:
            try:
                result = kv.txn(compares, success, failure)
            except Conflict as lost:
                typer.echo(f"kvclient: {lost}", err=True)
                raise typer.Exit(3) from None
    typer.echo("SUCCESS" if result.succeeded else "FAILURE")
    steps = success if result.succeeded else failure
    for step, outcome in zip(steps, result.results, strict=False):
        for line in shown(step, outcome):
            typer.echo(line)
    if not result.succeeded:
        raise typer.Exit(3)


def _unquoted(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text
