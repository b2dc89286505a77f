"""How a program proves who it is to the broker (user name, password, TLS), and how replicas
and monitors prove to each other that a control message is theirs (protocol §16).

Every program reads the same options and environment variables, so that `source run/env`
(written by `scripts/cluster.sh up --secure`) is all a shell needs:

    KV_USERNAME, KV_PASSWORD_FILE or KV_PASSWORD, KV_TLS_CA, KV_TLS_CERT, KV_TLS_KEY,
    KV_CLUSTER_KEY_FILE (replicas, monitors and `kvclient recover` only)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kvwire.errors import ConfigError

log = logging.getLogger("kvwire")

#: The MQTT 5 user property that carries a control message's signature.
SIGNATURE = "assinatura"
#: A key shorter than this is refused: HMAC-SHA256 with a guessable key protects nothing.
MIN_KEY_BYTES = 16


def _read_secret(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    return data.strip()


def _readable(path: Path | None, what: str) -> Path | None:
    if path is not None and not path.is_file():
        raise ConfigError(f"the {what} {path} does not exist or is not a file")
    return path


@dataclass(frozen=True)
class Access:
    """Credentials and TLS settings for one connection to the broker. Empty: anonymous,
    plain TCP, as the assignment's broker on a laptop."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def load(
        cls,
        username: str | None = None,
        password_file: Path | None = None,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> Access:
        """From the options given, the environment filling what is left out."""
        env = os.environ
        username = username or env.get("KV_USERNAME") or None
        password_file = password_file or _env_path("KV_PASSWORD_FILE")
        if password_file is not None:
            password: str | None = _read_secret(password_file, "password file").decode()
        else:
            password = env.get("KV_PASSWORD") or None
        if username is not None and any(c in username for c in "/+#"):
            # It names the client's answer topic, inf1406-resp/<user name>/ (protocol §16).
            raise ConfigError(f"a user name cannot hold '/', '+' or '#': {username!r}")
        if password is not None and username is None:
            raise ConfigError("a password was given without a user name (--username, KV_USERNAME)")
        tls_ca = _readable(tls_ca or _env_path("KV_TLS_CA"), "TLS CA file")
        tls_cert = _readable(tls_cert or _env_path("KV_TLS_CERT"), "TLS certificate")
        tls_key = _readable(tls_key or _env_path("KV_TLS_KEY"), "TLS key")
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if tls_cert is not None and tls_ca is None:
            raise ConfigError("--tls-cert needs --tls-ca, the CA that signed the broker's")
        return cls(username, password, tls_ca, tls_cert, tls_key)

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None

    def apply(self, client: mqtt.Client) -> None:
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls_ca is not None:
            try:
                client.tls_set(
                    ca_certs=str(self.tls_ca),
                    certfile=None if self.tls_cert is None else str(self.tls_cert),
                    keyfile=None if self.tls_key is None else str(self.tls_key),
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"cannot use the TLS files: {exc}") from None


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


class ClusterKey:
    """The secret replicas and monitors share: each control message they publish carries the
    hex HMAC-SHA256 of its exact payload bytes in the user property `assinatura`."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"the cluster key has {len(secret)} bytes; use at least {MIN_KEY_BYTES} "
                "(for instance `openssl rand -hex 32`)"
            )
        self._secret = secret

    @classmethod
    def load(cls, path: Path | None = None) -> ClusterKey | None:
        """From `--cluster-key-file`, else KV_CLUSTER_KEY_FILE, else None: open mode."""
        path = path or _env_path("KV_CLUSTER_KEY_FILE")
        return None if path is None else cls(_read_secret(path, "cluster key file"))

    def sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def properties(self, payload: bytes) -> Properties:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = (SIGNATURE, self.sign(payload))
        return props

    def will_properties(self, payload: bytes) -> Properties:
        """The same property on a last will, which the broker publishes for us."""
        props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        props.UserProperty = (SIGNATURE, self.sign(payload))
        return props

    def verifies(self, payload: bytes, signature: str | None) -> bool:
        return signature is not None and hmac.compare_digest(self.sign(payload), signature)


def signature_of(properties: Properties | None) -> str | None:
    """The `assinatura` user property of a received message, if it has one."""
    pairs = getattr(properties, "UserProperty", None) if properties is not None else None
    for name, value in pairs or ():
        if name == SIGNATURE:
            return str(value)
    return None


class Forgeries:
    """The check every replica and monitor makes on a control message it receives: with a
    cluster key, one without a valid signature is ignored, counted (for the heartbeats and
    `kvclient status`) and logged once per kind and claimed sender, so that a flood of
    forgeries is one line each, not a flood of lines. Without a key everything is admitted."""

    #: At most this many (kind, sender) pairs are remembered for logging.
    _REMEMBERED = 1024

    def __init__(self, who: str, key: ClusterKey | None = None) -> None:
        self.who = who
        self.key = key
        self.count = 0
        self._said: set[tuple[str, object]] = set()

    @property
    def counted(self) -> int | None:
        """The count for a heartbeat: None in open mode, where nothing is checked."""
        return self.count if self.key is not None else None

    def forged(self, payload: bytes, props: Properties | None, kind: str, sender: object) -> bool:
        """Whether to ignore this control message (`sender`: who it claims to come from)."""
        if self.key is None or self.key.verifies(payload, signature_of(props)):
            return False
        self.ignore(kind, sender)
        return True

    def ignore(self, kind: str, sender: object) -> None:
        self.count += 1
        said = (kind, sender)
        if said in self._said or len(self._said) >= self._REMEMBERED:
            return
        self._said.add(said)
        log.warning(
            "%s ignores %s %s from %s without a valid signature (cluster key); "
            "further ones are only counted",
            self.who,
            "an" if kind[:1] in "aeiou" else "a",
            kind,
            sender,
        )
