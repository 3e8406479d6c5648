"""Content detectors: the last net for values whose origin the bastion cannot tell.

They find e-mail addresses, payment card numbers (Luhn-checked), US social security numbers,
phone numbers, IBANs (mod-97-checked), and access tokens or keys (GitHub, AWS, Stripe, Slack,
Google, OpenAI, JWTs, PEM private keys), and replace each with "****". They run on computed
result values (no table column behind them) of masked grants, on server notices and errors, on
EXPLAIN output and on the query log's redacted statement text. The masking itself is the
database's (bastion.db).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

__all__ = ["REDACTED", "scrub_text", "scrub_value", "to_text"]

REDACTED = "****"


def to_text(value: Any) -> str:
    """The text form of a value, as the detectors see it."""
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


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group())
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _iban(match: re.Match[str]) -> bool:
    compact = match.group().replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _always(match: re.Match[str]) -> bool:
    return True


_DETECTORS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], bool]], ...] = (
    # Keys and tokens first: they may contain digit runs the other detectors would split.
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)"),
     _always),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"), _always),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,}"), _always),
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"), _always),
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}"), _always),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), _always),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), _always),
    (re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"), _always),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}|\bnpm_[A-Za-z0-9]{36}"), _always),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), _always),
    (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), _iban),
    (re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])"), _card),
    (re.compile(r"(?<![\d-])\d{3}[- ]\d{2}[- ]\d{4}(?![\d-])"), _always),
    (re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?!\d)"), _always),
    (re.compile(r"(?<![\w+])\+\d{10,15}(?!\d)"), _always),
)
# Text without any of these cannot hold a detected value: the quick path for most values.
_MAYBE = re.compile(r"[@\d]|gh[pousr]_|github_pat|A[KSGIRNP][A-Z]{2}[A-Z0-9]|_live_|_test_|xox|AIza|eyJ|"
                    r"BEGIN|sk-|glpat-|npm_")


def scrub_text(text: str) -> str:
    """Replace every detected sensitive value in text with "****"."""
    if not _MAYBE.search(text):
        return text
    for pattern, check in _DETECTORS:
        text = pattern.sub(lambda m, check=check: REDACTED if check(m) else m.group(), text)  # type: ignore[misc]
    return text


def scrub_value(value: Any) -> Any:
    """Scrub one result value of unknown origin: text is scrubbed, anything else is redacted whole."""
    if value is None or isinstance(value, bool | datetime | date | time):
        return value
    if isinstance(value, str):
        return scrub_text(value)
    text = to_text(value)
    scrubbed = scrub_text(text)
    if scrubbed == text:
        return value
    return scrubbed if isinstance(value, dict | list) else REDACTED
