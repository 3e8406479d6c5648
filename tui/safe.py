"""Making recorded and remote text safe to show: no control character reaches the terminal.

Everything the TUI shows that it did not write itself (terminal output, typed input, user names,
reasons, audit details) may carry escape sequences chosen by whoever produced it. Textual writes
segment text to the real terminal as is, so each such string passes through here first.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Final

__all__ = ["describe_input", "one_line", "printable", "safe_char"]

REPLACEMENT: Final = "\ufffd"
# Named keys an auditor recognises faster than their escape sequences.
_KEYS: Final[dict[bytes, str]] = {
    b"\x1b[A": "⟨↑⟩", b"\x1b[B": "⟨↓⟩", b"\x1b[C": "⟨→⟩", b"\x1b[D": "⟨←⟩",
    b"\x1bOA": "⟨↑⟩", b"\x1bOB": "⟨↓⟩", b"\x1bOC": "⟨→⟩", b"\x1bOD": "⟨←⟩",
    b"\x1b[H": "⟨Home⟩", b"\x1b[F": "⟨End⟩", b"\x1b[1~": "⟨Home⟩", b"\x1b[4~": "⟨End⟩",
    b"\x1b[2~": "⟨Ins⟩", b"\x1b[3~": "⟨Del⟩", b"\x1b[5~": "⟨PgUp⟩", b"\x1b[6~": "⟨PgDn⟩",
    b"\r": "⏎", b"\n": "⏎", b"\t": "⇥", b"\x7f": "⌫", b"\x08": "⌫", b"\x1b": "⟨Esc⟩",
}
_KEY_PREFIXES: Final = sorted(_KEYS, key=len, reverse=True)


@lru_cache(maxsize=4096)
def safe_char(ch: str) -> str:
    """Return `ch` if it is harmless to print, else a visible stand-in of the same width."""
    if len(ch) == 1 and " " <= ch < "\x7f":
        return ch
    base = ch[:1]
    if not base:
        return ""
    code = ord(base)
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: ␛ for ESC, ␍ for CR, ...
    if code == 0x7F:
        return "␡"
    if unicodedata.category(base) in ("Cc", "Cf", "Cs", "Co", "Cn"):
        return REPLACEMENT
    # Combining marks after the base are kept unless they are themselves control or format codes.
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in ch[1:]):
        return base
    return ch


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """Return `text` with every control or format character replaced by a visible symbol."""
    if text.isprintable() and text.isascii():
        return text
    out: list[str] = []
    for ch in text:
        if keep_newlines and ch == "\n":
            out.append(ch)
        elif ch == "\t" and keep_newlines:
            out.append("    ")
        else:
            out.append(safe_char(ch))
    return "".join(out)


def one_line(text: str | None, limit: int = 0) -> str:
    """Return `text` on one safe line (newlines shown as ⏎), cut to `limit` characters if > 0."""
    if not text:
        return ""
    line = printable(" ⏎ ".join(text.splitlines()) if "\n" in text or "\r" in text else text)
    if limit and len(line) > limit:
        return line[: max(limit - 1, 0)] + "…"
    return line


def describe_input(data: bytes) -> str:
    """Return typed input as readable text: named keys (⏎, ⟨↑⟩, ^C) and printable characters."""
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        for prefix in _KEY_PREFIXES:
            if data.startswith(prefix, i):
                out.append(_KEYS[prefix])
                i += len(prefix)
                break
        else:
            byte = data[i]
            if byte < 0x20:
                out.append("^" + chr(byte + 0x40))
                i += 1
                continue
            # Decode one UTF-8 sequence (or one byte, replaced, if it is not valid UTF-8).
            length = 1 if byte < 0x80 else 2 if byte >> 5 == 6 else 3 if byte >> 4 == 14 else 4
            chunk = data[i : i + length]
            try:
                text = chunk.decode()
            except UnicodeDecodeError:
                text, length = REPLACEMENT, 1
            out.append(printable(text))
            i += length
    return "".join(out)
