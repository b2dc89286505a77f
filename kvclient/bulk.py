"""Bulk import and export (`kvclient import`, `kvclient export`): many keys through one
batching `KVClient` (protocol §21), a window of requests in flight.

The file format is one key a line, JSON (`{"key": "k", "value": "v"}`, what `export` writes,
in key order) or CSV (`key,value`, with `--csv`). Reading is strict: a line that is not a
key and a value stops the import there (nothing after it is sent, everything before it is
acknowledged first), unless the caller skips bad lines; the error names the line.
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from kvclient.operations import Get, Put, checked
from kvwire.errors import Conflict, KeyNotFound, KVError
from kvwire.messages import Resposta

if TYPE_CHECKING:
    from kvclient.client import KVClient

#: Requests in flight at once: enough to fill several batches of `KVClient`'s default size.
WINDOW = 2048


class BadLine(KVError):
    """A line of an import file that is not a key and a value."""

    def __init__(self, line: int, why: str) -> None:
        super().__init__(f"line {line}: {why}")
        self.line = line
        self.why = why


@dataclass(frozen=True)
class Pair:
    line: int
    key: str
    value: str
    #: Bytes the line took in the file, for the progress bar.
    size: int


def read_json_lines(lines: Iterable[str]) -> Iterator[Pair | BadLine]:
    """`{"key": ..., "value": ...}` a line, both strings; blank lines are skipped."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            yield BadLine(number, f"not JSON ({exc})")
            continue
        if not isinstance(obj, dict):
            yield BadLine(number, 'not a JSON object {"key": ..., "value": ...}')
        elif not isinstance(obj.get("key"), str) or not isinstance(obj.get("value"), str):
            yield BadLine(number, '"key" and "value" must both be strings')
        else:
            yield Pair(number, obj["key"], obj["value"], len(line.encode()))


def read_csv(lines: Iterable[str]) -> Iterator[Pair | BadLine]:
    """`key,value` a row (RFC 4180 quoting); a first row `key,value` is a header."""
    sizes: list[int] = []

    def counted() -> Iterator[str]:
        for line in lines:
            sizes.append(len(line.encode()))
            yield line

    for row in csv.reader(counted()):
        number = len(sizes)  # a quoted value may span lines: the row's last line
        size, sizes[:] = sum(sizes), [0] * len(sizes)
        if not row:
            continue
        if len(row) != 2:
            yield BadLine(number, f"{len(row)} fields where key,value has 2")
        elif number == 1 and row == ["key", "value"]:
            continue
        else:
            yield Pair(number, row[0], row[1], size)


def json_line(key: str, value: str) -> str:
    """One line of `export`'s JSON, as `import` reads it."""
    return json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n"


def csv_line(key: str, value: str) -> str:
    out = _LineWriter()
    csv.writer(out, lineterminator="\n").writerow([key, value])
    return out.text


class _LineWriter:
    text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)


@dataclass
class Imported:
    """What an import did: keys written, kept (with `--if-absent`, they had a value), lines
    skipped (with `--skip-bad`), bytes of the file read, and the time it took."""

    written: int = 0
    kept: int = 0
    skipped: list[BadLine] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.written / self.seconds if self.seconds else 0.0
        parts = [f"imported {self.written:,} keys ({self.bytes_read:,} bytes) in "
                 f"{self.seconds:.1f} s: {rate:,.0f} keys/s"]  # fmt: skip
        if self.kept:
            parts.append(f"{self.kept:,} kept (they had a value)")
        if self.skipped:
            lines = ", ".join(str(bad.line) for bad in self.skipped[:5])
            more = "…" if len(self.skipped) > 5 else ""
            parts.append(f"{len(self.skipped):,} bad lines skipped (lines {lines}{more})")
        return "; ".join(parts)


class ImportStopped(KVError):
    """An import ended early: what was written before, and why."""

    def __init__(self, done: Imported, why: KVError) -> None:
        super().__init__(
            f"{why}; {done.written:,} keys before it were written, nothing after it was sent"
        )
        self.done = done


def import_pairs(
    kv: KVClient,
    pairs: Iterable[Pair | BadLine],
    *,
    if_absent: bool = False,
    skip_bad: bool = False,
    progress: Callable[[int], None] = lambda _: None,
    window: int = WINDOW,
) -> Imported:
    """Put every pair, `window` in flight; `progress` is told the bytes of each line done.
    ImportStopped at the first bad line (unless `skip_bad`) or refused put, once everything
    before it is acknowledged."""
    run = _Import(kv, skip_bad, progress)
    try:
        for pair in pairs:
            if isinstance(pair, BadLine):
                run.refuse(pair)
                continue
            try:
                future = kv.submit(Put(pair.key, pair.value, 0 if if_absent else None))
            except KVError as exc:  # not sendable: undecodable bytes in the file, say
                run.refuse(BadLine(pair.line, str(exc)))
                continue
            run.in_flight.append((pair, future))
            if len(run.in_flight) >= window:
                run.settle_oldest()
        while run.in_flight:
            run.settle_oldest()
    finally:
        run.done.seconds = time.monotonic() - run.started
    return run.done


class _Import:
    def __init__(self, kv: KVClient, skip_bad: bool, progress: Callable[[int], None]) -> None:
        self.kv, self.skip_bad, self.progress = kv, skip_bad, progress
        self.done = Imported()
        self.started = time.monotonic()
        self.in_flight: deque[tuple[Pair, Future[Resposta]]] = deque()

    def refuse(self, bad: BadLine) -> None:
        """A line that cannot be put: skipped, or the end, once what came before is in."""
        if self.skip_bad:
            self.done.skipped.append(bad)
            return
        while self.in_flight:
            self.settle_oldest()
        raise ImportStopped(self.done, bad)

    def settle_oldest(self) -> None:
        pair, future = self.in_flight.popleft()
        try:
            checked(self.kv.wait(future))
            self.done.written += 1
        except Conflict:
            self.done.kept += 1  # --if-absent: the key has a value, which stays
        except KVError as exc:
            self._drain()
            bad = BadLine(pair.line, f"key {pair.key[:80]!r}: {exc}")
            raise ImportStopped(self.done, bad) from None
        self.done.bytes_read += pair.size
        self.progress(pair.size)

    def _drain(self) -> None:
        """What is in flight after a refused put: its outcome counted, whatever it is."""
        while self.in_flight:
            _, future = self.in_flight.popleft()
            with contextlib.suppress(KVError):
                checked(self.kv.wait(future))
                self.done.written += 1


@dataclass
class Exported:
    keys: int = 0
    bytes_written: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.keys / self.seconds if self.seconds else 0.0
        return (
            f"exported {self.keys:,} keys ({self.bytes_written:,} bytes) in {self.seconds:.1f} s: "
            f"{rate:,.0f} keys/s"
        )


def export_pairs(
    kv: KVClient,
    prefix: str,
    out: IO[str],
    *,
    as_csv: bool = False,
    progress: Callable[[int], None] = lambda _: None,
    window: int = WINDOW,
) -> Exported:
    """Every key under `prefix` in key order, with its value, written to `out`. Each page of
    keys is listed at its own position and each value read after it: a key written meanwhile
    may or may not be in the file, one deleted meanwhile is left out (not a snapshot)."""
    done = Exported()
    started = time.monotonic()
    line = csv_line if as_csv else json_line
    reads: deque[tuple[str, Future[Resposta]]] = deque()

    def write_oldest() -> None:
        key, future = reads.popleft()
        try:
            value = checked(kv.wait(future)).valor or ""
        except KeyNotFound:
            return  # deleted since it was listed
        text = line(key, value)
        out.write(text)
        done.keys += 1
        size = len(text.encode())
        done.bytes_written += size
        progress(size)

    for key in kv.keys(prefix):
        reads.append((key, kv.submit(Get(key))))
        if len(reads) >= window:
            write_oldest()
    while reads:
        write_oldest()
    done.seconds = time.monotonic() - started
    return done
