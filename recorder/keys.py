"""Key files: auditor X25519 keys (decrypt recordings) and the bastion's Ed25519 signing key.

Private keys are PKCS#8 PEM files written with mode 0600, optionally encrypted with a passphrase
(cryptography's BestAvailableEncryption). Public keys are one line:
`bastion-recording-x25519 <base64 of the 32 raw bytes> [comment]` (or `-ed25519` for signers).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from recorder.crypto import key_fingerprint, raw_public
from recorder.errors import KeyFileError

__all__ = [
    "AUDITOR_KEY_TYPE",
    "SIGNING_KEY_TYPE",
    "fingerprint",
    "generate_auditor_key",
    "generate_signing_key",
    "load_auditor_private_key",
    "load_auditor_public_key",
    "load_signing_key",
    "load_signing_public_key",
    "parse_public_key_line",
    "public_key_line",
    "write_key_pair",
]

AUDITOR_KEY_TYPE: Final = "bastion-recording-x25519"
SIGNING_KEY_TYPE: Final = "bastion-recording-ed25519"

PrivateKey = X25519PrivateKey | Ed25519PrivateKey
PublicKey = X25519PublicKey | Ed25519PublicKey


def generate_auditor_key() -> X25519PrivateKey:
    """Return a new auditor key pair (its public half is `key.public_key()`)."""
    return X25519PrivateKey.generate()


def generate_signing_key() -> Ed25519PrivateKey:
    """Return a new bastion signing key."""
    return Ed25519PrivateKey.generate()


def public_key_line(key: PublicKey, comment: str = "") -> str:
    """Return the one-line text form of a public key."""
    kind = AUDITOR_KEY_TYPE if isinstance(key, X25519PublicKey) else SIGNING_KEY_TYPE
    line = f"{kind} {base64.b64encode(raw_public(key)).decode()}"
    comment = " ".join(comment.split())
    return f"{line} {comment}" if comment else line


def parse_public_key_line(line: str, source: str = "<text>") -> PublicKey:
    """Parse a public key line (a trailing comment is ignored)."""
    parts = line.strip().split(maxsplit=2)
    if len(parts) < 2 or parts[0] not in (AUDITOR_KEY_TYPE, SIGNING_KEY_TYPE):
        raise KeyFileError(
            source,
            f"not a recording public key (expected '{AUDITOR_KEY_TYPE} <base64>' "
            f"or '{SIGNING_KEY_TYPE} <base64>')",
        )
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(source, "the public key is not valid base64") from None
    if len(raw) != 32:
        raise KeyFileError(source, f"the public key is {len(raw)} bytes, not 32")
    if parts[0] == AUDITOR_KEY_TYPE:
        return X25519PublicKey.from_public_bytes(raw)
    return Ed25519PublicKey.from_public_bytes(raw)


def _passphrase_bytes(passphrase: str | bytes | None) -> bytes | None:
    if passphrase is None or passphrase in (b"", ""):
        return None
    return passphrase.encode() if isinstance(passphrase, str) else passphrase


def _write_new(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise KeyFileError(str(path), "already exists (refusing to overwrite a key)") from None
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        # The mode given to open() is filtered by the umask, and an existing file keeps its
        # own; set it explicitly so a private key is never group- or world-readable.
        os.fchmod(f.fileno(), mode)
        f.write(data)


def write_key_pair(
    private_path: str | Path,
    key: PrivateKey,
    *,
    passphrase: str | bytes | None = None,
    public_path: str | Path | None = None,
    comment: str = "",
    overwrite: bool = False,
) -> Path:
    """Write a private key (0600, PKCS#8 PEM) and its public line; return the public file path."""
    private_path = Path(private_path)
    public = Path(public_path) if public_path is not None else Path(f"{private_path}.pub")
    secret = _passphrase_bytes(passphrase)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    _write_new(private_path, pem, 0o600, overwrite)
    _write_new(public, (public_key_line(key.public_key(), comment) + "\n").encode(), 0o644, overwrite)
    return public


def _load_private(path: str | Path, passphrase: str | bytes | None) -> PrivateKey:
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(where, f"cannot read: {exc.strerror}") from None
    secret = _passphrase_bytes(passphrase)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    if encrypted and secret is None:
        raise KeyFileError(where, "the key is encrypted; a passphrase is needed")
    try:
        key = serialization.load_pem_private_key(data, password=secret if encrypted else None)
    except TypeError:
        raise KeyFileError(where, "the key is encrypted; a passphrase is needed") from None
    except ValueError:
        if encrypted:
            raise KeyFileError(where, "wrong passphrase (or a damaged key file)") from None
        raise KeyFileError(where, "not a PEM private key file") from None
    except Exception as exc:  # cryptography raises assorted types for unsupported key data
        raise KeyFileError(where, f"cannot load the private key: {exc}") from None
    if not isinstance(key, X25519PrivateKey | Ed25519PrivateKey):
        raise KeyFileError(where, f"holds a {type(key).__name__}, not an X25519 or Ed25519 key")
    return key


def load_auditor_private_key(path: str | Path, passphrase: str | bytes | None = None) -> X25519PrivateKey:
    """Load an auditor's X25519 private key."""
    key = _load_private(path, passphrase)
    if not isinstance(key, X25519PrivateKey):
        raise KeyFileError(str(path), "holds an Ed25519 signing key, not an X25519 auditor key")
    return key


def load_signing_key(path: str | Path, passphrase: str | bytes | None = None) -> Ed25519PrivateKey:
    """Load the bastion's Ed25519 signing key."""
    key = _load_private(path, passphrase)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(str(path), "holds an X25519 auditor key, not an Ed25519 signing key")
    return key


def _read_public(path: str | Path) -> PublicKey:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(str(path), f"cannot read: {exc}") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1:
        raise KeyFileError(str(path), "a public key file must hold exactly one key line")
    return parse_public_key_line(lines[0], str(path))


def load_auditor_public_key(path: str | Path) -> X25519PublicKey:
    """Load an auditor public key file (one `bastion-recording-x25519` line)."""
    key = _read_public(path)
    if not isinstance(key, X25519PublicKey):
        raise KeyFileError(str(path), f"is a signing key, not a '{AUDITOR_KEY_TYPE}' key")
    return key


def load_signing_public_key(path: str | Path) -> Ed25519PublicKey:
    """Load a bastion signing public key file (one `bastion-recording-ed25519` line)."""
    key = _read_public(path)
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(str(path), f"is an auditor key, not a '{SIGNING_KEY_TYPE}' key")
    return key


def fingerprint(key: PublicKey | PrivateKey) -> str:
    """Return the SHA256 fingerprint of a key (of its public half)."""
    public = key.public_key() if isinstance(key, X25519PrivateKey | Ed25519PrivateKey) else key
    return key_fingerprint(public)
