"""`kvclient import FILE` and `kvclient export [PREFIX]`: `kvclient.bulk` from the shell, with
a progress bar on a terminal (rich, which typer brings) and a summary at the end."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated

import typer

from kvclient.bulk import (
    export_pairs,
    import_pairs,
    read_csv,
    read_json_lines,
)
from kvclient.shell import BrokerOpt, TimeoutOpt, said

CsvOpt = Annotated[bool, typer.Option("--csv", help="CSV rows key,value instead of JSON lines.")]


@contextlib.contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A bar on stderr when it is a terminal (bytes done of `total`, or a count without
    one); nothing otherwise, so that scripts and pipes get the summary alone."""
    if not sys.stderr.isatty():
        yield lambda _: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = [TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn()]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda size: bar.advance(task, size)


def import_(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="JSON lines, or CSV with --csv; - for stdin.")
    ],
    as_csv: CsvOpt = False,
    if_absent: Annotated[
        bool,
        typer.Option("--if-absent", help="Write only keys that have no value; keep the others."),
    ] = False,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="Skip malformed lines (listed at the end) instead of stopping at the first.",
        ),
    ] = False,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Put every key of FILE: {"key": ..., "value": ...} a line (what export writes), or
    key,value rows with --csv.

    Many requests go in each MQTT message (batches), many messages in flight. A malformed
    line stops the import there, naming it: every line before it is written, nothing after
    it is sent (exit 2); --skip-bad goes on and lists them. Prints keys, bytes, seconds and
    keys/s at the end.

    Example: kvclient export config/ > config.jsonl; kvclient import config.jsonl --if-absent
    """
    from kvclient.client import KVClient

    with said():
        stream = sys.stdin if str(file) == "-" else _opened(file)
        total = None if str(file) == "-" else os.path.getsize(file)
        reader = read_csv if as_csv else read_json_lines
        with (
            stream,
            KVClient(broker, timeout=timeout, access=ctx.obj, max_batch=256) as kv,
            _progress("import", total) as advance,
        ):
            done = import_pairs(
                kv, reader(stream), if_absent=if_absent, skip_bad=skip_bad, progress=advance
            )
        typer.echo(done.summary())


def export(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(metavar="[PREFIX]", show_default=False)] = "",
    as_csv: CsvOpt = False,
    broker: BrokerOpt = None,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Write every key under PREFIX with its value to standard output, in key order, in the
    form import reads ({"key": ..., "value": ...} a line, or CSV with --csv).

    The keys are listed a page at a time and their values read as they come: a key written
    meanwhile may or may not be in the file. The summary goes to standard error.

    Example: kvclient export sensors/ > sensors.jsonl
    """
    from kvclient.client import KVClient

    with (
        said(),
        KVClient(broker, timeout=timeout, access=ctx.obj) as kv,
        _progress("export", None) as advance,
    ):
        out = sys.stdout
        done = export_pairs(kv, prefix, out, as_csv=as_csv, progress=advance)
        out.flush()
    typer.echo(done.summary(), err=True)


def _opened(file: Path) -> IO[str]:
    from kvwire.errors import ConfigError

    try:
        # Undecodable bytes reach the line they are on, which is then refused by name.
        return open(file, encoding="utf-8", errors="surrogateescape", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
