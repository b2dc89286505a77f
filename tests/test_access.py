"""Credentials, TLS settings and the cluster key, without a broker (protocol §16)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kvclient.client import KVClient
from kvclient.transport import MockTransport
from kvwire.access import Access, ClusterKey, Forgeries, signature_of
from kvwire.errors import ConfigError

_VARS = ("KV_USERNAME", "KV_PASSWORD_FILE", "KV_PASSWORD", "KV_TLS_CA", "KV_TLS_CERT", "KV_TLS_KEY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*_VARS, "KV_CLUSTER_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)


def test_the_environment_fills_what_the_options_leave_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = tmp_path / "client.password"
    password.write_text("s3cret\n")
    monkeypatch.setenv("KV_USERNAME", "client")
    monkeypatch.setenv("KV_PASSWORD_FILE", str(password))
    access = Access.load()
    assert (access.username, access.password, access.tls) == ("client", "s3cret", False)
    assert "s3cret" not in repr(access)
    assert Access.load(username="alice").username == "alice"  # the option wins
    monkeypatch.delenv("KV_PASSWORD_FILE")
    monkeypatch.setenv("KV_PASSWORD", "from-env")
    assert Access.load().password == "from-env"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"password_file": "pw"}, "without a user name"),
        ({"username": "a/b"}, "cannot hold"),
        ({"tls_ca": "missing.crt"}, "does not exist"),
        ({"tls_ca": "ca", "tls_cert": "cert"}, "go together"),
        ({"tls_cert": "cert", "tls_key": "key"}, "needs --tls-ca"),
        ({"username": "u", "password_file": "absent"}, "cannot read the password file"),
    ],
)
def test_settings_that_cannot_work_are_refused_in_one_line(
    tmp_path: Path, options: dict[str, str], message: str
) -> None:
    for name in ("pw", "ca", "cert", "key"):
        (tmp_path / name).write_text("x\n")
    given = {
        k: v if k == "username" else tmp_path / v for k, v in options.items()
    }  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        Access.load(**given)  # type: ignore[arg-type]


def test_a_signature_verifies_only_the_same_bytes_under_the_same_key() -> None:
    key = ClusterKey(b"k" * 32)
    payload = b'{"tipomsg":"falhaserv","idserv":0,"vistoem":1.0}'
    signature = signature_of(key.properties(payload))
    assert signature == key.sign(payload) and len(signature) == 64
    assert key.verifies(payload, signature)
    assert not key.verifies(payload + b" ", signature)
    assert not key.verifies(payload, None)
    assert not ClusterKey(b"j" * 32).verifies(payload, signature)
    assert signature_of(None) is None
    assert signature_of(Properties(PacketTypes.PUBLISH)) is None  # type: ignore[no-untyped-call]


def test_a_short_or_missing_key_file_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "key"
    short.write_text("tooshort\n")
    with pytest.raises(ConfigError, match="at least 16"):
        ClusterKey.load(short)
    with pytest.raises(ConfigError, match="cannot read the cluster key file"):
        ClusterKey.load(tmp_path / "absent")
    assert ClusterKey.load(None) is None  # open mode


def test_forgeries_are_all_counted_and_logged_once_per_sender(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forgeries = Forgeries("replica 1")
    with caplog.at_level(logging.WARNING, logger="kvwire"):
        for _ in range(100):
            forgeries.ignore("falhaserv", "an unnamed sender")
            forgeries.ignore("heartbeat", "replica 0")
    assert forgeries.count == 200
    assert len(caplog.records) == 2


def test_a_client_with_a_user_name_listens_under_it() -> None:
    with KVClient(access=Access(username="alice"), transport=MockTransport()) as kv:
        assert kv.response_topic.startswith("inf1406-resp/alice/")
    with KVClient(access=Access(), transport=MockTransport()) as kv:
        assert kv.response_topic.count("/") == 1
