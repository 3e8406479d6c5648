"""Tokens kept in the shared store are sealed: AES-GCM under a key in the bastion's data dir."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["TokenSeal"]


class TokenSeal:
    """Seals a binding's tokens to its key fingerprint, so a row copied to another key opens to
    nothing."""

    def __init__(self, secret: bytes) -> None:
        self._aead = AESGCM(secret[:32].ljust(32, b"\0"))

    def __repr__(self) -> str:
        return "TokenSeal(<secret>)"

    def seal(self, tokens: dict[str, Any], key_fingerprint: str) -> str:
        """Encrypt tokens for the store."""
        nonce = os.urandom(12)
        data = self._aead.encrypt(nonce, json.dumps(tokens).encode(), key_fingerprint.encode())
        return base64.b64encode(nonce + data).decode()

    def open(self, sealed: str, key_fingerprint: str) -> dict[str, Any]:
        """Decrypt tokens; {} when they cannot be (another bastion's key, or tampered with)."""
        try:
            raw = base64.b64decode(sealed)
            data = json.loads(self._aead.decrypt(raw[:12], raw[12:], key_fingerprint.encode()))
        except (InvalidTag, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
