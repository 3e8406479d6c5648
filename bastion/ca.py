"""The two certificate authorities: the user CA (people into the bastion) and the upstream CA
(the bastion into target hosts). They are separate keys so a user certificate is useless on a
target host and nobody can go around the recording.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
from asyncssh.public_key import SSHOpenSSHCertificate

from bastion.errors import CertificateError

__all__ = [
    "CertificateAuthority",
    "CertificateInfo",
    "Forwarding",
    "certificate_info",
    "load_or_create_key",
    "new_serial",
]


def new_serial() -> int:
    """Return a random non-zero 63-bit serial (random so several bastions never collide)."""
    return secrets.randbelow(2**63 - 1) + 1


def load_or_create_key(path: Path, comment: str) -> asyncssh.SSHKey:
    """Load an Ed25519 private key, creating it (mode 0600) when the file does not exist."""
    if path.exists():
        try:
            return asyncssh.read_private_key(path)
        except (OSError, asyncssh.KeyImportError, ValueError) as exc:
            raise CertificateError(f"cannot load key {path}: {exc}") from None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    data = key.export_private_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    key.write_public_key(str(path) + ".pub")
    return key


def load_or_create_secret(path: Path, size: int = 32) -> bytes:
    """Read a random secret from `path`, creating it (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(size))
    data = path.read_bytes()
    if len(data) < 16:
        raise CertificateError(f"{path} is too short to be a secret key")
    return data


@dataclass(frozen=True)
class Forwarding:
    """Which forwarding a certificate permits (none unless a role grants it)."""

    port: bool = False
    agent: bool = False
    x11: bool = False


class CertificateAuthority:
    """An SSH CA that signs short-lived user certificates."""

    def __init__(self, key: asyncssh.SSHKey, name: str) -> None:
        self._key = key
        self.name = name

    @classmethod
    def load(cls, path: Path, name: str) -> CertificateAuthority:
        """Load the CA key from `path`, creating it on first start."""
        return cls(load_or_create_key(path, f"bastion {name}"), name)

    @property
    def public_key(self) -> asyncssh.SSHKey:
        """The CA's public key (what sshd's TrustedUserCAKeys names)."""
        return self._key.convert_to_public()

    def public_key_line(self) -> str:
        """The CA public key as one OpenSSH line."""
        return self._key.export_public_key().decode().strip()

    def is_signer_of(self, key: asyncssh.SSHKey) -> bool:
        """Return whether `key` is this CA's public key."""
        return key.public_data == self._key.public_data

    def sign_user(
        self,
        subject: asyncssh.SSHKey,
        *,
        principals: tuple[str, ...],
        key_id: str,
        serial: int,
        valid_after: datetime,
        valid_before: datetime,
        forwarding: Forwarding = Forwarding(),
    ) -> asyncssh.SSHCertificate:
        """Sign a user certificate for `subject` with explicit principals and window."""
        # An empty principal list means "any user" to OpenSSH and asyncssh: never sign one.
        if not principals or any(not p for p in principals):
            raise CertificateError("refusing to sign a certificate without explicit principals")
        if valid_before <= valid_after:
            raise CertificateError("refusing to sign a certificate whose window is empty")
        return self._key.generate_user_certificate(
            subject.convert_to_public(),
            key_id,
            serial=serial,
            principals=list(principals),
            valid_after=int(valid_after.timestamp()),
            valid_before=int(valid_before.timestamp()),
            permit_port_forwarding=forwarding.port,
            permit_agent_forwarding=forwarding.agent,
            permit_x11_forwarding=forwarding.x11,
            permit_pty=True,
            permit_user_rc=False,
        )


@dataclass(frozen=True)
class CertificateInfo:
    """The fields of an OpenSSH certificate the login checks need."""

    key_id: str
    serial: int
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime


def certificate_info(cert: SSHOpenSSHCertificate) -> CertificateInfo:
    """Read serial, key id, principals and window from a parsed certificate."""
    # asyncssh parses these fields but keeps them private; read them in this one place.
    valid_before = min(int(cert._valid_before), 2**62)  # "forever" is 2**64-1
    return CertificateInfo(
        key_id=str(cert._key_id),
        serial=int(cert._serial),
        principals=tuple(cert.principals),
        valid_after=datetime.fromtimestamp(int(cert._valid_after), UTC),
        valid_before=datetime.fromtimestamp(min(valid_before, 253402300799), UTC),
    )
