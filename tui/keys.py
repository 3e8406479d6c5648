"""Loading the auditor's X25519 key (recordings are decrypted here, never on the bastion)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from recorder import KeyFileError, fingerprint, load_auditor_private_key

__all__ = ["PASSPHRASE_ENV", "env_passphrase", "key_fingerprint", "load_identity"]

PASSPHRASE_ENV = "BASTION_KEY_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)


def env_passphrase() -> str | None:
    """The passphrase from the environment, if set."""
    return os.environ.get(PASSPHRASE_ENV)


def load_identity(path: str | Path, passphrase: str | None = None) -> X25519PrivateKey:
    """Load the key; raise PassphraseNeeded or KeyProblem with a message for the auditor."""
    from tui.errors import KeyProblem, PassphraseNeeded

    try:
        return load_auditor_private_key(path, passphrase)
    except KeyFileError as exc:
        if "passphrase is needed" in exc.problem:
            raise PassphraseNeeded(f"{path} is protected by a passphrase") from None
        if "wrong passphrase" in exc.problem:
            raise PassphraseNeeded(f"wrong passphrase for {path}") from None
        raise KeyProblem(f"cannot use the auditor key {exc}") from None


def key_fingerprint(key: X25519PrivateKey) -> str:
    """The key's fingerprint, as recordings list their recipients."""
    return fingerprint(key)
