"""Text that a user typed, made safe for another person's terminal and for logs.

Reasons, comments, user names and statements are shown to approvers and auditors: a carriage
return, an escape sequence, a newline or a bidi override in them could rewrite what the reader
sees. Every character that is not printable (C0 and C1 controls, format characters such as
U+200B and U+202E, unassigned code points) is shown as a visible escape instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = ["control_characters", "printable", "table", "terminal_safe", "when"]


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def terminal_safe(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every non-printable character escaped (newlines kept if asked)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or (keep_newlines and c == "\n") else _escape(c)
                   for c in text)


def printable(text: str, limit: int = 64) -> str:
    """`text` escaped and bounded to `limit` characters (then "…"), for banners and logs."""
    shown = terminal_safe(text[:limit])
    return shown + ("…" if len(text) > limit else "")


def control_characters(text: str) -> list[str]:
    """The distinct non-printable characters of `text`, as U+XXXX, in order of appearance."""
    found: list[str] = []
    for char in text:
        name = f"U+{ord(char):04X}"
        if not char.isprintable() and name not in found:
            found.append(name)
    return found


def when(value: datetime | None) -> str:
    """A moment as the command tables show it (UTC, to the second), or "-"."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows under headers, in aligned columns."""
    # Cells hold text users typed (reasons, comments, statements): shown escaped, one line each.
    cells = [[str(c) for c in headers]] + [[terminal_safe(str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    return "\n".join(lines) + "\n"
