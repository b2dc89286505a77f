"""A secured cluster's secrets for the tests, made as `scripts/cluster.sh up --secure` makes
them: a Mosquitto password file (`mosquitto_passwd`), the project's ACL file, a cluster key,
and, with TLS, a CA and broker certificate from `scripts/tls-ca.sh`."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from kvwire.access import Access

ROOT = Path(__file__).resolve().parent.parent
#: `other` is a second client, to show that one client cannot read another's answers.
USERS = ("replica", "monitor", "client", "other")


class Secrets:
    def __init__(self, workdir: Path, *, tls: bool = False) -> None:
        self.dir = workdir / "secrets"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tls = tls
        self.passwd = self.dir / "passwd"
        self.key_file = self._secret("cluster.key", secrets.token_hex(32))
        for user in USERS:
            password = secrets.token_hex(16)
            self._secret(f"{user}.password", password)
            create = [] if self.passwd.exists() else ["-c"]
            subprocess.run(
                ["mosquitto_passwd", *create, "-b", str(self.passwd), user, password],
                check=True,
                capture_output=True,
            )
        self.passwd.chmod(0o600)
        if tls:
            subprocess.run(
                ["bash", str(ROOT / "scripts" / "tls-ca.sh"), str(self.dir / "tls")],
                check=True,
                capture_output=True,
            )

    def _secret(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text + "\n")
        path.chmod(0o600)
        return path

    def password_file(self, user: str) -> Path:
        return self.dir / f"{user}.password"

    @property
    def ca(self) -> Path | None:
        return self.dir / "tls" / "ca.crt" if self.tls else None

    def broker_config(self) -> str:
        """Lines appended to the rendered mosquitto.conf (after its one listener)."""
        lines = [
            "allow_anonymous false",
            f"password_file {self.passwd}",
            f"acl_file {ROOT / 'security' / 'acl'}",
        ]
        if self.tls:
            tls = self.dir / "tls"
            lines += [f"cafile {tls / 'ca.crt'}", f"certfile {tls / 'broker.crt'}"]
            lines += [f"keyfile {tls / 'broker.key'}"]
        return "\n".join(lines) + "\n"

    def env(self, user: str, *, key: bool = False) -> dict[str, str]:
        """The environment a program of `user` runs with; `key`: it holds the cluster key."""
        env = {"KV_USERNAME": user, "KV_PASSWORD_FILE": str(self.password_file(user))}
        if self.ca is not None:
            env["KV_TLS_CA"] = str(self.ca)
        if key:
            env["KV_CLUSTER_KEY_FILE"] = str(self.key_file)
        return env

    def access(self, user: str) -> Access:
        return Access.load(user, self.password_file(user), self.ca)
