"""Masking strategies: what a masked value turns into.

- redact:  "****" whatever the type (the length and type of the value are hidden too);
- partial: "*****" and the last 4 characters, for values of at least 8 characters (shorter values
           would be mostly revealed, so they are redacted);
- hash:    "h:" and 16 hex digits of HMAC-SHA256 under the session's key: equal values give equal
           hashes, so joins and GROUP BY still work, but nobody without the key can test guesses;
- null:    None.
NULL stays NULL under every strategy (the absence of a value is not the value).
"""

from __future__ import annotations

import hashlib
import hmac
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
    text = to_text(value)
    return "*****" + text[-4:] if len(text) >= 8 else REDACTED


def _null(value: Any) -> Any:
    return None


def _hasher(key: bytes) -> Masker:
    def hash_value(value: Any) -> Any:
        if value is None:
            return None
        data = bytes(value) if isinstance(value, bytes | bytearray | memoryview) else to_text(value).encode()
        return "h:" + hmac.new(key, data, hashlib.sha256).hexdigest()[:16]

    return hash_value


def mask_function(strategy: str, hash_key: bytes) -> Masker:
    """Return the function that masks one value with a strategy (unknown strategies redact)."""
    if strategy == "hash":
        return _hasher(hash_key)
    return {"partial": _partial, "null": _null}.get(strategy, _redact)
