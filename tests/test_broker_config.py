"""The repository's broker configurations (issue 31): `mosquitto.conf` run by hand on a host as
the README says, with Debian's Mosquitto, and the container's `mosquitto-container.conf` and
`security/mosquitto.conf`, which must keep the same guarantees."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import ROOT, free_port, mosquitto_binary, terminate, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: What mqtt-kv's guarantees depend on (docs/protocol.md §3): every broker we ship says the same.
GUARANTEES = ("max_queued_messages", "set_tcp_nodelay", "persistence", "autosave_interval")


def settings(path: Path) -> dict[str, str]:
    lines = (line.split(None, 1) for line in path.read_text().splitlines())
    return {
        words[0]: words[1].strip()
        for words in lines
        if words and not words[0].startswith("#") and len(words) == 2
    }


def test_every_broker_we_ship_keeps_the_same_guarantees() -> None:
    host = settings(ROOT / "mosquitto.conf")
    assert host["listener"] == "1883 127.0.0.1", "the README says: loopback only"
    for other in ("mosquitto-container.conf", "security/mosquitto.conf"):
        theirs = settings(ROOT / other)
        assert {k: theirs.get(k) for k in GUARANTEES} == {k: host[k] for k in GUARANTEES}, other
    assert host["max_queued_messages"] == "0" and host["persistence"] == "true"


def listening_addresses(port: int) -> set[str]:
    """Where something listens on `port`, from the kernel's own tables."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(
                    address
                    if width == 32
                    else ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
                )
    return found


class HandBroker:
    """Debian's Mosquitto on the repository's mosquitto.conf, started as the README says
    (`mosquitto -c mosquitto.conf`); only the port differs (a test never takes 1883) and the
    name of its file in /var/lib/mosquitto (a broker of the machine's own may keep one there)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.db = Path("/var/lib/mosquitto") / f"mqtt-kv-test-{self.port}.db"
        text = (ROOT / "mosquitto.conf").read_text()
        text, listeners = re.subn(r"(?m)^listener 1883\b", f"listener {self.port}", text)
        assert listeners == 1, "mosquitto.conf has one listener, on 1883"
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(text + f"persistence_file {self.db.name}\n")
        self.log = workdir / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(lambda: listening_addresses(self.port), 10, f"mosquitto on {self.port}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def errors(self) -> list[str]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if re.search(r"error|warning", line, re.IGNORECASE)]

    def close(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.db.unlink(missing_ok=True)
        Path(f"{self.db}.new").unlink(missing_ok=True)


@pytest.fixture
def hand_broker(tmp_path: Path) -> Iterator[HandBroker]:
    if os.geteuid() != 0:
        pytest.skip("as another user than root, the README says to change persistence_location")
    broker = HandBroker(tmp_path)
    try:
        yield broker
    finally:
        broker.close()


def stock(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=15, check=False)
    assert done.returncode == 0, f"{args[0]}: {done.stderr}"
    return done.stdout


def test_the_hand_broker_listens_on_loopback_and_keeps_a_queued_message_through_kill_9(
    hand_broker: HandBroker,
) -> None:
    port = str(hand_broker.port)
    hand_broker.start()
    assert listening_addresses(hand_broker.port) == {"127.0.0.1"}
    # A subscriber with a session of its own leaves; a QoS 1 message is queued for it.
    stock("mosquitto_sub", "-p", port, "-c", "-i", "keeper", "-q", "1", "-t", "check/t", "-E")
    sent = time.time()
    stock("mosquitto_pub", "-p", port, "-q", "1", "-t", "check/t", "-m", "kept")
    # Saved by the autosave (every second), not by a clean shutdown: then the broker dies.
    wait_until(
        lambda: hand_broker.db.exists() and hand_broker.db.stat().st_mtime > sent + 0.01,
        10,
        f"the broker to save to {hand_broker.db}",
    )
    hand_broker.kill()
    hand_broker.start()
    got = stock(
        "mosquitto_sub",
        "-p",
        port,
        "-c",
        "-i",
        "keeper",
        "-q",
        "1",
        "-t",
        "check/t",
        "-C",
        "1",
        "-W",
        "5",
    )
    assert got.strip() == "kept"
    # Saves went by (with the old, container-only path each one logged an error).
    assert hand_broker.errors() == []
