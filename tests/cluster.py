"""Real processes for integration and fault tests: a Mosquitto on a free port rendered from
the project's mosquitto.conf, replicas and monitors started as the user would start them.

Everything started here is stopped in `close()`, which the fixtures call in `finally`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from kvclient.status import ClusterStatus
from tests.secure import Secrets

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

#: Runs a test against an open and a secured cluster (the `cluster` fixture's parameter).
BOTH_MODES = pytest.mark.parametrize("cluster", ["open", "secured"], indirect=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    if port == 1883:  # never the well-known port: a real broker may live there
        return free_port()
    return port


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def all_equal(n: int) -> Callable[[ClusterStatus], bool]:
    def check(status: ClusterStatus) -> bool:
        live = status.live()
        beats = [status.replicas[i].beat for i in live]
        return len(live) == n and len({(b.posicao, b.resumo) for b in beats}) == 1

    return check


def terminate(proc: subprocess.Popen[bytes], *, sent: bool = False) -> None:
    """SIGTERM (unless `sent` already), then SIGKILL if it has not exited within 5 s."""
    if proc.poll() is not None:
        return
    if not sent:
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Lines:
    """A child's output read line by line on a thread of its own, so that a test waits for
    each line with a deadline (a bare `readline()` hangs until pytest's timeout, and the
    child outlives the test)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put("")  # end of output

    def next(self, timeout: float, what: str) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line from {what} within {timeout:g} s") from None
        assert line, f"{what} ended its output"
        return line

    def rest(self, timeout: float = 2.0) -> str:
        """What else came, until the output ends or `timeout` s pass (for a failure's text)."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if not line:
                break
            lines.append(line)
        return "".join(lines)

    def close(self) -> None:
        """Once the child is gone: its output ends, and the pipe is closed."""
        self._thread.join(10)
        self._stream.close()


def interrupt(proc: subprocess.Popen[str], timeout: float = 15) -> int:
    """Ctrl-C (SIGINT), as a user ends a long-running command; SIGKILL if it is still there
    after `timeout` s. Its exit code (negative: killed)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # `kvclient` prints its threads' stacks on SIGUSR1: the failure shows the wait.
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
            proc.kill()
    return proc.wait(10)


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise RuntimeError("mosquitto is not installed: run scripts/setup.sh")
    return found


class Broker:
    def __init__(self, workdir: Path, secrets: Secrets | None = None) -> None:
        self.workdir = workdir
        self.secrets = secrets
        self.port = free_port()
        self.data = workdir / "broker-data"
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = f"127.0.0.1:{self.port}"

    def render_config(self, persistence: bool = True) -> Path:
        text = (ROOT / "mosquitto.conf").read_text()
        text = re.sub(r"(?m)^listener .*$", f"listener {self.port} 127.0.0.1", text)
        text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {self.data}/", text)
        if not persistence:
            text = re.sub(r"(?m)^persistence .*$", "persistence false", text)
        if self.secrets is not None:
            text = re.sub(r"(?m)^allow_anonymous .*$\n", "", text)
            text += self.secrets.broker_config()
        if os.geteuid() == 0:
            # Otherwise it drops to its own user, which cannot reach a data directory under
            # pytest's private (0700) temporary root: every save would fail.
            text += "user root\n"
        path = self.workdir / "mosquitto.conf"
        path.write_text(text)
        return path

    def start(self, persistence: bool = True) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        config = self.render_config(persistence)
        with (self.workdir / "broker.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(self._accepts, 10, f"mosquitto on port {self.port}")

    def _accepts(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.workdir / "broker.log").read_text(errors="replace")
            raise RuntimeError(f"mosquitto exited: {log[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def wipe_state(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)

    def errors(self) -> list[str]:
        """What the broker logged as errors (it logs errors, warnings and notices only)."""
        log = self.workdir / "broker.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return [line for line in text.splitlines() if "Error:" in line]


class Process:
    """One replica or monitor process with its log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._asked = False  # SIGTERM sent by `ask_to_stop`

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP, returning once every thread has stopped.

        kill() returns before the other threads stop: a thread busy on the other core can
        still answer a request published right after it (seen: 1 trial in 60).
        """
        self.signal(signal.SIGSTOP)
        wait_until(self._stopped, 5, f"{self.name} to stop")

    def _stopped(self) -> bool:
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in ("T", "t"):
                    return False
        return True

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def ask_to_stop(self) -> None:
        """SIGTERM (after SIGCONT, if it was paused), not waited for: `stop` waits."""
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self._asked = True

    def stop(self) -> None:
        """SIGTERM, unless `ask_to_stop` sent it; SIGKILL if it has not exited within 5 s."""
        if not self.alive():
            return
        if not self._asked:
            self.proc.send_signal(signal.SIGCONT)
        terminate(self.proc, sent=self._asked)


class Cluster:
    """A broker, `n` replicas and monitors, as real processes."""

    def __init__(
        self,
        workdir: Path,
        n: int = 3,
        heartbeat_interval: float = 0.25,
        *,
        data: bool = False,
        secure: bool = False,
        tls: bool = False,
        mirror: str | None = None,
        metrics: bool = False,
    ) -> None:
        """`secure`: the broker requires passwords and applies the ACL, and replicas and
        monitors sign their control messages (protocol §16); `tls`: over TLS too."""
        self.workdir = workdir
        self.secrets = Secrets(workdir, tls=tls) if secure or tls else None
        #: The value mirror's prefix every replica is started with (protocol §14).
        self.mirror = mirror
        #: Whether replicas and monitors serve metrics, each on a free port (`metrics_url`).
        self.metrics = metrics
        self.n = n
        self.heartbeat_interval = heartbeat_interval
        #: Whether replicas keep their state on disk, each in `data_dir(i)`; where one is put
        #: elsewhere (a small file system), `data_dirs` says.
        self.data = data
        self.data_dirs: dict[int, Path] = {}
        self.broker = Broker(workdir, self.secrets)
        self.replicas: dict[int, Process] = {}
        self.monitors: list[Process] = []
        self._retired: list[Process] = []
        #: What a client (the CLI, a workload) runs with; replicas and monitors add their own.
        self.env = dict(os.environ, KV_BROKER=self.broker.address, PYTHONUNBUFFERED="1")
        if self.secrets is not None:
            self.env.update(self.secrets.env("client"))

    @property
    def address(self) -> str:
        return self.broker.address

    def _spawn(self, name: str, module: str, *args: str) -> Process:
        env = self.env
        if self.secrets is not None:
            user = "replica" if module == "kvserver" else "monitor"
            env = dict(env, **self.secrets.env(user, key=True))
        return Process(name, [sys.executable, "-m", module, *args], env, self.workdir)

    def start_replica(
        self, replica_id: int, *, fresh: bool = False, extra: tuple[str, ...] = ()
    ) -> Process:
        old = self.replicas.get(replica_id)
        if old is not None:
            self._retired.append(old)
        args = [
            "--id",
            str(replica_id),
            "--n",
            str(self.n),
            "--heartbeat-interval",
            str(self.heartbeat_interval),
            *extra,
        ]
        if self.data:
            args += ["--data-dir", str(self.data_dir(replica_id))]
        if self.mirror:
            args += ["--mirror", self.mirror]
        if self.metrics:
            args += ["--metrics-port", "0"]
        if fresh:
            args.append("--fresh")
        generation = len([p for p in self._retired if p.name.startswith(f"replica-{replica_id}")])
        process = self._spawn(f"replica-{replica_id}.{generation}", "kvserver", *args)
        self.replicas[replica_id] = process
        return process

    def data_dir(self, replica_id: int) -> Path:
        return self.data_dirs.get(replica_id) or self.workdir / "replica-data" / str(replica_id)

    def stall_everyone(self, seconds: float = 2.5) -> float:
        """SIGSTOP of every replica for `seconds` (2.5: each is declared failed), then SIGCONT;
        the monotonic time of the SIGCONT."""
        for replica in self.replicas.values():
            replica.pause()
        time.sleep(seconds)
        for replica in self.replicas.values():
            replica.signal(signal.SIGCONT)
        return time.monotonic()

    def kill_everything(self) -> None:
        """A power cut: SIGKILL to every replica, monitor and the broker at once."""
        procs = [p.proc for p in (*self.replicas.values(), *self.monitors)]
        if self.broker.proc is not None:
            procs.append(self.broker.proc)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            proc.wait(10)

    def start_monitor(self) -> Process:
        process = self._spawn(
            f"monitor-{len(self.monitors)}",
            "monitor",
            "--n",
            str(self.n),
            "--heartbeat-interval",
            str(self.heartbeat_interval),
            *(["--metrics-port", "0"] if self.metrics else []),
        )
        self.monitors.append(process)
        return process

    def start(
        self,
        monitor: bool = True,
        extra: dict[int, tuple[str, ...]] | None = None,
        connect_timeout: float = 15,
    ) -> None:
        self.broker.start()
        for i in range(self.n):
            self.start_replica(i, fresh=True, extra=(extra or {}).get(i, ()))
        for i in range(self.n):
            self.wait_log(i, "connected to", connect_timeout)
        if monitor:
            self.start_monitor()
            wait_until(lambda: "watching" in self.monitors[-1].log(), 15, "the monitor to start")

    def wait_log(self, replica_id: int, text: str, timeout: float) -> None:
        process = self.replicas[replica_id]
        wait_until(lambda: text in process.log(), timeout, f"{process.name} to log {text!r}")

    def metrics_url(self, process: Process, timeout: float = 15) -> str:
        """Where `process` serves its metrics (it logs it once serving)."""
        found = wait_until(
            lambda: re.search(r"serves metrics on (http://\S+)", process.log()), timeout,
            f"{process.name} to serve metrics",
        )  # fmt: skip
        return found[1]

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"----- {path.name}\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        # Every process told at once, then waited for: a second less per test than one by one.
        processes = [*self.replicas.values(), *self.monitors, *self._retired]
        for process in processes:
            process.ask_to_stop()
        for process in processes:
            process.stop()
        self.broker.stop()


@contextlib.contextmanager
def running(workdir: Path, **options: Any) -> Iterator[Cluster]:
    """A started `Cluster(workdir, **options)`, closed whatever happens (a fixture's body)."""
    cluster = Cluster(workdir, **options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
