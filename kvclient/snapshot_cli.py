"""`kvclient snapshot save FILE` and `kvclient snapshot verify FILE` (issue 29): a backup of a
live cluster at one position, and the check a restore makes first. A new cluster starts from
one with `kvserver --restore FILE` on every replica (`scripts/cluster.sh up --restore FILE`)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from kvclient.shell import BrokerOpt, TimeoutOpt, said

snapshot_app = typer.Typer(
    help="Back up a live cluster to a file, and check such a file.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

FileArg = Annotated[Path, typer.Argument(metavar="FILE", show_default=False)]


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[int, int], None]]:
    """A bar of chunks received on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = [TextColumn("snapshot"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks")]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("snapshot", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@snapshot_app.command()
def save(
    ctx: typer.Context, file: FileArg, broker: BrokerOpt = None, timeout: TimeoutOpt = 30.0
) -> None:
    """Write the cluster's keys, values, revisions and leases as of one position to FILE,
    while writes go on; then its position, keys and checksum.

    Example: kvclient snapshot save backup.kvsnap
    """
    from kvclient.snapshot import save as take

    with said(), _progress() as advance:
        started = time.monotonic()
        saved = take(broker, file, access=ctx.obj, timeout=timeout, progress=advance)
        seconds = time.monotonic() - started
    header = saved.header
    typer.echo(
        f"snapshot of position {header.position}: {header.keys} keys, {header.leases} leases, "
        f"digest {header.digest}, sha256 {saved.checksum[:16]}... in {seconds:.1f} s, to {file}"
    )


@snapshot_app.command()
def verify(file: FileArg) -> None:
    """Check FILE whole, as a restore does first: exit 0 and what it holds, or one line
    saying what is wrong with it and exit 2.

    Example: kvclient snapshot verify backup.kvsnap
    """
    from kvwire.snapshot import read_snapshot

    with said():
        snapshot = read_snapshot(file)
    typer.echo(
        f"{file}: snapshot of position {snapshot.position}, {len(snapshot.pairs)} keys, "
        f"{len(snapshot.leases)} leases, digest {snapshot.digest}: whole"
    )
