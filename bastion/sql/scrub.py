"""Scrubbing text that travels outside result columns: errors, notices, warnings, EXPLAIN output.

Servers quote values in their messages (`Duplicate entry '123-45-6789'`, `invalid input syntax
for type integer: "123-45-6789"`, `Key (ssn)=(…) already exists`). A quoted span survives only if
it is a name the bastion knows (a word of the user's own statement, or a table or column of the
catalog); every other quoted or parenthesised value becomes `?`, and the content detectors run
over what is left.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from bastion.sql.detectors import scrub_text

__all__ = ["scrub_message"]

_QUOTED = re.compile(r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`[^`]*`""")
_KEY_VALUE = re.compile(r"\)=\((?:[^()]|\([^()]*\))*\)")
_ROW = re.compile(r"(?i)(failing row contains|row contains) \(.*\)")


def scrub_message(text: str, names: Collection[str]) -> str:
    """Remove values from a server message, keeping the names the user can already see."""

    def quoted(m: re.Match[str]) -> str:
        token = m.group()
        inner = token[1:-1]
        if inner.lower() in names or (inner.replace(".", "").replace("_", "").isalnum()
                                      and all(p.lower() in names for p in inner.split("."))):
            return token
        return token[0] + "?" + token[-1]

    text = _ROW.sub(lambda m: m.group(1) + " (?)", text)
    text = _KEY_VALUE.sub(")=(?)", text)
    text = _QUOTED.sub(quoted, text)
    return scrub_text(text)
