"""The README's command blocks, run as written on clusters the tests start (issue 31).

Every fenced `sh` and `python` block of README.md is found in BLOCKS by its first line, which
says how it runs; a block the table does not know, or an entry whose block is gone, fails the
first test, so the README cannot gain a command that nothing runs. The blocks run in the
README's order in one shell, as a reader types them into one terminal, so `source run/env`
carries on to the blocks after it. What differs from the text is only what must differ from a
user's machine, listed in `Block.rewrites` and `REWRITES`: the run directory and the demo's
port (a user's own cluster may hold `run/` and 1884), and paths outside the repository.
`.venv/bin` is taken off PATH, so a bare `kvclient` before the README puts it there fails as
it would for a user.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tests.cluster import ROOT, free_port, wait_until
from tests.test_broker_config import HandBroker, listening_addresses

pytestmark = pytest.mark.integration

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: Runs until Ctrl-C: a test gives it this long, then sends SIGINT (`timeout` then exits 124).
FOREVER_S = 3


@dataclass(frozen=True)
class Block:
    """How one block of the README runs; commands are named by a part of their text."""

    how: Literal["shell", "python", "terminals", "skip"]
    why: str = ""  # for "skip" and for each test-owned step below: why
    exits: dict[str, tuple[int, ...]] = field(default_factory=dict)  # else (0,)
    prints: dict[str, str] = field(default_factory=dict)  # its output contains this
    forever: tuple[str, ...] = ()  # runs until Ctrl-C
    skip: dict[str, str] = field(default_factory=dict)  # not run, and why
    before: tuple[str, ...] = ()  # the test's own commands, run first
    rewrites: tuple[tuple[str, str], ...] = ()  # text -> text, besides REWRITES


BLOCKS: dict[str, Block] = {
    "./scripts/demo.sh": Block(
        "shell",
        prints={"demo.sh": '"valor":"hello, world"'},
        skip={"test.sh": "the suite itself, which this test is part of (CI runs it)"},
    ),
    "source run/env": Block(
        "shell",
        exits={"get nothing": (1,), "--if-revision 7": (0, 3)},
        prints={
            "get color --json": '"idserv"',
            "put lock me --if-absent": "me",
            "load --duration 5": "linearizable: yes",
        },
        why="the value put from standard input is a file the test writes",
        before=("printf '{\"retries\": 3}' >{scratch}/config.json",),
        rewrites=(("< config.json", "< {scratch}/config.json"),),
    ),
    "kvclient watch sensors/ --json": Block(
        "shell",
        forever=("--json", "--from-revision"),
        exits={"--json": (124,), "--from-revision": (124,)},
        prints={
            "--json": '"chave": "sensors/t1"',
            "--from-revision 0": "sensors/t1 = 21.5 (revision",
            "history": "sensors/t1 = 21.5 (revision",
        },
        why="a key under sensors/, for the watch to show",
        before=("kvclient put sensors/t1 21.5",),
    ),
    "mosquitto_sub -p 1884 -t 'inf1406-kv/#' -v": Block(
        "shell",
        forever=("mosquitto_sub", "watch"),
        exits={"mosquitto_sub": (124,), "watch": (124,)},
        prints={"mosquitto_sub": "inf1406-kv/sensors/t1", "watch": "sensors/t1 = 21.5"},
        why="a key under sensors/, for the watch to show",
        before=("kvclient put sensors/t1 21.5",),
    ),
    "mosquitto_rr -p 1884": Block(
        "shell",
        prints={'"consulta"': '"status"', '"insercao"': '"status":"ok"'},
    ),
    "from kvclient import Conflict, KVClient, KeyNotFound, Put": Block("python"),
    "kvclient put session/42 open --ttl 30s": Block(
        "shell",
        exits={"hold": (124,), "elect": (124,)},
        prints={
            "grant": "dev-7",
            "keep-alive": "TTL 10 s",
            "lease list": "TTL 30 s\t1 key\n",
            "lock": "token ",
            "elect": "leader: host-1",
        },
        forever=("hold", "elect"),
    ),
    "from kvclient import KVClient": Block("python"),
    "printf 'absent(job)": Block(
        "shell",
        exits={"put job you": (3,)},
        prints={"put job me": "SUCCESS", "put job you": "job = me (revision"},
    ),
    "from kvclient import Compare, Get, KVClient, Put": Block("python"),
    "kvclient export sensors/ > sensors.jsonl": Block(
        "shell",
        exits={"import bad.jsonl": (2,)},
        prints={"--if-absent": "imported 0 keys"},
        why="the files go where the test writes",
        rewrites=(
            ("sensors.jsonl", "{scratch}/sensors.jsonl"),
            ("bad.jsonl", "{scratch}/bad.jsonl"),
        ),
    ),
    "scripts/cluster.sh up [N]": Block(
        "shell",
        prints={"status": "replica-2", "start 0": "joined", "restart 1": "joined"},
        why="the demo's cluster is still up: `up` would refuse to start a second",
        before=("scripts/cluster.sh down",),
    ),
    "scripts/cluster.sh up --max-keys 100000": Block(
        "shell",
        prints={
            "kvclient status": "quota: 1 of 100000 keys (0%)",
            "curl": 'mqttkv_requests_total{kind="insercao",status="ok"} 1.0',
            "verify": "whole",
            "get color --json": '"valor":"blue"',
        },
        why="the snapshot goes where the test writes; the metrics' ports are the test's own",
        rewrites=(("backup.kvsnap", "{scratch}/backup.kvsnap"), ("9460", "{metrics_port}")),
    ),
    "mosquitto -c mosquitto.conf": Block("terminals"),
    "scripts/cluster.sh up --secure": Block(
        "shell", prints={"kvclient put color blue && kvclient get color": "blue"}
    ),
    "scripts/tls-ca.sh /etc/mosquitto/tls broker.example.org": Block(
        "shell",
        rewrites=(("/etc/mosquitto/tls", "{scratch}/tls"),),
        why="a test does not write /etc",
    ),
    ".venv/bin/python scripts/bench.py": Block(
        "skip", why="ten minutes, and it rewrites docs/bench: run by hand, figures in the README"
    ),
}


def readme_blocks() -> list[tuple[str, str]]:
    """(key in BLOCKS, text) of each runnable block, in order; a block is known by the start
    of its first line."""
    text = (ROOT / "README.md").read_text()
    found = []
    for lang, body in FENCE.findall(text):
        if lang in ("sh", "python"):
            keys = [key for key in BLOCKS if body.startswith(key)]
            assert len(keys) == 1, f"README block {body.splitlines()[0]!r} is in BLOCKS {keys}"
            found.append((keys[0], body))
    return found


def without_comment(line: str) -> str:
    return re.sub(r"(^|\s+)#.*$", "", line).strip()


def commands(body: str) -> list[str]:
    """A block's commands: continuations joined, comments and optional `[ARGS]` dropped."""
    lines = (without_comment(line) for line in body.replace("\\\n", " ").splitlines())
    return [re.sub(r" \[[A-Z]+\]", "", line) for line in lines if line]


def named(part: str, cmds: list[str]) -> str:
    matches = [cmd for cmd in cmds if part in cmd]
    assert len(matches) == 1, f"{part!r} names {len(matches)} commands of {cmds}"
    return matches[0]


def test_every_block_of_the_readme_has_a_way_to_run() -> None:
    found = dict(readme_blocks())
    assert sorted(found) == sorted(BLOCKS), "BLOCKS names blocks the README no longer has"
    for first, block in BLOCKS.items():
        cmds = commands(found[first]) if block.how != "python" else []
        for part in [*block.exits, *block.prints, *block.forever, *block.skip]:
            named(part, cmds)


@dataclass
class Reader:
    """What stands in for a user's machine: a run directory, ports, a scratch directory."""

    tmp: Path
    port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)

    @property
    def run(self) -> Path:
        return self.tmp / "run"

    @property
    def scratch(self) -> Path:
        return self.tmp / "scratch"

    def env(self, venv_on_path: bool = False) -> dict[str, str]:
        venv = (ROOT / ".venv" / "bin").resolve()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
        env.pop("VIRTUAL_ENV", None)
        path = [p for p in env["PATH"].split(os.pathsep) if p and Path(p).resolve() != venv]
        env["PATH"] = os.pathsep.join([str(venv)] * venv_on_path + path)
        env.update(KV_RUN_DIR=str(self.run), KV_PORT=str(self.port), KV_WEB_PORT=str(self.web_port))
        env.update(KV_METRICS_PORT=str(self.metrics_port))
        return env

    def rewrite(self, text: str, block: Block) -> str:
        for old, new in (*block.rewrites, *REWRITES):
            text = text.replace(old, new)
        values = {
            "{scratch}": self.scratch, "{run}": self.run, "{port}": self.port,
            "{metrics_port}": self.metrics_port,
        }  # fmt: skip
        for name, value in values.items():
            text = text.replace(name, str(value))
        return text


#: What every block changes: the run directory and the demo broker's port are the test's own.
REWRITES = (("source run/env", "source {run}/env"), ("1884", "{port}"))


@dataclass
class Step:
    block: str
    command: str
    allowed: tuple[int, ...]
    prints: str | None


def session_script(reader: Reader, out: Path) -> tuple[str, list[Step]]:
    """One bash script for every shell and python block, in the README's order; after each
    command its exit status is written, and the script stops at the first one not allowed."""
    lines = ["set -u", f"cd {shlex.quote(str(ROOT))}"]
    steps: list[Step] = []

    running: list[int] = []  # the block's commands that run until Ctrl-C, side by side

    def run(
        block_name: str,
        cmd: str,
        allowed: tuple[int, ...],
        prints: str | None,
        *,
        apart: bool = False,
    ) -> None:
        i = len(steps)
        steps.append(Step(block_name, cmd, allowed, prints))
        files = f">{out}/out.{i} 2>{out}/err.{i} </dev/null"
        if apart:
            lines.append(f"( {{ {cmd}\n}} {files}; echo $? >{out}/status.{i} ) &")
            running.append(i)
            return
        lines.append(f"{{ {cmd}\n}} {files}; echo $? >{out}/status.{i}")
        check(i)

    def check(i: int) -> None:
        ok = "|".join(map(str, steps[i].allowed))
        lines.append(f"case $(cat {out}/status.{i}) in {ok}) ;; *) exit 100 ;; esac")

    def join() -> None:
        if running:
            lines.append("wait")
            for i in running:
                check(i)
            running.clear()

    for first, body in readme_blocks():
        block = BLOCKS[first]
        for cmd in block.before:
            why = f"{first} (the test's own, before it: {block.why})"
            run(why, reader.rewrite(cmd, block), (0,), None)
        if block.how == "python":
            code = reader.rewrite(body, block)
            run(first, f"python - <<'README_PY'\n{code}README_PY", (0,), None)
            continue
        if block.how != "shell":
            continue
        for cmd in commands(body):
            if any(part in cmd for part in block.skip):
                continue
            allowed = next((v for k, v in block.exits.items() if k in cmd), (0,))
            prints = next((v for k, v in block.prints.items() if k in cmd), None)
            text = reader.rewrite(cmd, block)
            if any(part in cmd for part in block.forever):
                # Until Ctrl-C: beside the block's other commands, which a person would run
                # in another terminal meanwhile; each is interrupted after FOREVER_S.
                run(first, f"timeout -s INT {FOREVER_S} {text}", allowed, prints, apart=True)
            else:
                run(first, text, allowed, prints)
        join()
    return "\n".join(lines) + "\n", steps


@pytest.mark.timeout(420)
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    reader = Reader(tmp_path)
    reader.scratch.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    script, steps = session_script(reader, out)
    (tmp_path / "readme.sh").write_text(script)
    try:
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", str(tmp_path / "readme.sh")],
            env=reader.env(),
            timeout=360,
            check=False,
        )
        for i, step in enumerate(steps):
            status_file = out / f"status.{i}"
            assert status_file.exists(), f"the README's session stopped before: {step.command}"
            status = int(status_file.read_text())
            said = (out / f"out.{i}").read_text(errors="replace")
            err = (out / f"err.{i}").read_text(errors="replace")
            assert status in step.allowed, (
                f"README block {step.block!r}: `{step.command}` exited {status}, "
                f"the README says {step.allowed}\nstdout: {said[-1500:]}\nstderr: {err[-1500:]}"
            )
            if step.prints is not None:
                assert step.prints in said, f"`{step.command}` printed {said[-1500:]!r}"
        assert done.returncode == 0
    finally:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "cluster.sh"), "down", "--wipe"],
            env=reader.env(),
            capture_output=True,
            timeout=60,
            check=False,
        )


@pytest.mark.timeout(120)
def test_the_by_hand_block_starts_a_cluster_that_keeps_a_key_across_a_restart(
    tmp_path: Path,
) -> None:
    """Each line in a terminal of its own, in the README's order, with `.venv/bin` on PATH (the
    sentence before the block) and `KV_BROKER` set to where the test's broker listens: the
    block's `mosquitto.conf` is the repository's, on another port. A line that starts a replica
    already running ("later, a restart") follows a kill -9 of it."""
    if os.geteuid() != 0:
        pytest.skip("as another user than root, the README says to change persistence_location")
    body = next(body for first, body in readme_blocks() if BLOCKS[first].how == "terminals")
    broker = HandBroker(tmp_path)  # renders tmp_path/mosquitto.conf: the port alone differs
    env = dict(Reader(tmp_path).env(venv_on_path=True), KV_BROKER=f"127.0.0.1:{broker.port}")
    by_id: dict[str, subprocess.Popen[bytes]] = {}
    terminals: list[subprocess.Popen[bytes]] = []

    def kvclient(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kvclient", *args], env=env, capture_output=True, text=True, timeout=30, check=False
        )

    def all_live() -> bool:
        return kvclient("status").returncode == 0

    try:
        for n, cmd in enumerate(commands(body)):
            replica = re.search(r"kvserver --id (\d+)", cmd)
            if replica and replica[1] in by_id:  # "later, a restart"
                wait_until(all_live, 30, "every replica live (kvclient status exits 0)")
                assert kvclient("put", "by-hand", "kept").returncode == 0
                by_id[replica[1]].send_signal(signal.SIGKILL)
                by_id[replica[1]].wait(10)
                terminals.remove(by_id[replica[1]])
            is_broker = cmd.startswith("mosquitto ")
            with (broker.log if is_broker else tmp_path / f"terminal-{n}.log").open("ab") as log:
                proc = subprocess.Popen(
                    ["bash", "-c", f"exec {cmd}"], cwd=tmp_path, env=env, stdout=log, stderr=log
                )
            terminals.append(proc)
            if replica:
                by_id[replica[1]] = proc
            if is_broker:
                wait_until(lambda: listening_addresses(broker.port), 10, "the broker")
        wait_until(all_live, 30, "every replica live (kvclient status exits 0)")
        assert [proc.poll() for proc in terminals] == [None] * len(terminals)
        got = kvclient("get", "by-hand")
        assert (got.returncode, got.stdout.strip()) == (0, "kept"), got.stderr
        assert listening_addresses(broker.port) == {"127.0.0.1"}
        assert broker.errors() == [], "the broker logged errors"
    finally:
        for proc in terminals:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        broker.close()
