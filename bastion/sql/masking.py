"""Masking strategies: what a masked value turns into.

- redact:  "****" whatever the type (the length and type of the value are hidden too);
- partial: "*****" and the last 4 characters, for values of at least 8 characters (shorter values
           would be mostly revealed, so they are redacted);
- hash:    "h:" and 16 hex digits of keyed BLAKE2b under the bastion's key: equal values give equal
           hashes, so joins and GROUP BY still work, but nobody without the key can test guesses;
- null:    None.
NULL stays NULL under every strategy (the absence of a value is not the value).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

__all__ = ["REDACTED", "Masker", "mask_function", "to_text"]

REDACTED = "****"
Masker = Callable[[Any], Any]


def to_text(value: Any) -> str:
    """The text form of a value, as the masking strategies and detectors see it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _redact(value: Any) -> Any:
    return None if value is None else REDACTED


def _partial(value: Any) -> Any:
    if value is None:
        return None
    text = value if type(value) is str else to_text(value)
    return "*****" + text[-4:] if len(text) >= 8 else REDACTED


def _null(value: Any) -> Any:
    return None


def _hasher(key: bytes) -> Masker:
    blake2b = hashlib.blake2b

    def hash_value(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is str:
            data = value.encode()
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
        else:
            data = to_text(value).encode()
        # Keyed BLAKE2b is a MAC (RFC 7693): without the key nobody can test guesses.
        return "h:" + blake2b(data, key=key[:64], digest_size=8).hexdigest()

    return hash_value


def mask_function(strategy: str, hash_key: bytes) -> Masker:
    """Return the function that masks one value with a strategy (unknown strategies redact)."""
    if strategy == "hash":
        return _hasher(hash_key)
    return {"partial": _partial, "null": _null}.get(strategy, _redact)
