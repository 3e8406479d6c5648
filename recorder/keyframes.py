"""Screen keyframes: pyte snapshots that let a player start anywhere without replaying from 0.

pyte emulates at well under 1 MB/s, so the emulator only processes the last `tail_limit` bytes
of output between two snapshots: when a burst (`cat` of a large file) exceeds it, the older part
is skipped. The screen after a burst is made of its last screenfuls, so this is the "approximate"
resumption the design allows, and it bounds the cost of a keyframe whatever the output rate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pyte

from recorder.errors import CorruptRecording

__all__ = ["Keyframe", "TerminalEmulator", "default_tail_limit"]

MIN_TAIL: Final = 16 * 1024
MAX_TAIL: Final = 64 * 1024


def default_tail_limit(cols: int, rows: int) -> int:
    """Return how much output before a snapshot the emulator processes (about 8 screenfuls)."""
    return max(MIN_TAIL, min(MAX_TAIL, 8 * cols * rows))


@dataclass(frozen=True)
class Keyframe:
    """The screen at time `t`: text lines, size and cursor."""

    t: float
    cols: int
    rows: int
    lines: tuple[str, ...]
    cursor_x: int
    cursor_y: int
    cursor_hidden: bool = False
    title: str = ""

    def text(self) -> str:
        """Return the screen as text, trailing spaces removed."""
        return "\n".join(line.rstrip() for line in self.lines)

    def to_json(self) -> dict[str, Any]:
        """Return the keyframe event payload (`t` is the event's own time)."""
        return {
            "cols": self.cols,
            "rows": self.rows,
            "lines": list(self.lines),
            "cursor": [self.cursor_x, self.cursor_y],
            "cursor_hidden": self.cursor_hidden,
            "title": self.title,
        }

    @classmethod
    def from_json(cls, t: float, obj: Mapping[str, Any]) -> Keyframe:
        """Parse a keyframe event payload."""
        try:
            cols, rows = int(obj["cols"]), int(obj["rows"])
            lines = tuple(str(line) for line in obj["lines"])
            cx, cy = (int(v) for v in obj["cursor"])
            return cls(
                t, cols, rows, lines, cx, cy, bool(obj.get("cursor_hidden")), str(obj.get("title", ""))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRecording(f"malformed keyframe: {exc!r}") from None

    def to_ansi(self) -> bytes:
        """Return terminal output that paints this screen on a blank terminal of the same size."""
        body = "\r\n".join(line.rstrip() for line in self.lines)
        cursor = f"\x1b[{self.cursor_y + 1};{self.cursor_x + 1}H"
        hide = "\x1b[?25l" if self.cursor_hidden else ""
        return ("\x1b[0m\x1b[H\x1b[2J" + body + cursor + hide).encode()


class TerminalEmulator:
    """A pyte screen fed lazily: output is queued and processed (its tail) at snapshot time."""

    def __init__(self, cols: int, rows: int, tail_limit: int | None = None) -> None:
        self._screen = pyte.Screen(max(cols, 1), max(rows, 1))
        self._stream = pyte.ByteStream(self._screen)
        self._tail_limit = tail_limit or default_tail_limit(cols, rows)
        self._pending: deque[bytes | tuple[int, int]] = deque()
        self._pending_bytes = 0

    @classmethod
    def from_keyframe(cls, keyframe: Keyframe, tail_limit: int | None = None) -> TerminalEmulator:
        """Return an emulator showing the keyframe's screen."""
        emulator = cls(keyframe.cols, keyframe.rows, tail_limit)
        emulator._stream.feed(keyframe.to_ansi())
        if keyframe.title:
            emulator._screen.title = keyframe.title
        return emulator

    def feed(self, data: bytes) -> None:
        """Queue terminal output."""
        if not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._trim()

    def resize(self, cols: int, rows: int) -> None:
        """Queue a terminal size change."""
        self._pending.append((cols, rows))

    def _trim(self) -> None:
        # Drop the oldest output beyond the limit; size changes are kept (they are cheap).
        while self._pending_bytes > self._tail_limit and self._pending:
            item = self._pending[0]
            if isinstance(item, tuple):
                self._pending.popleft()
                self._screen.resize(lines=max(item[1], 1), columns=max(item[0], 1))
                continue
            excess = self._pending_bytes - self._tail_limit
            if len(item) <= excess:
                self._pending.popleft()
                self._pending_bytes -= len(item)
            else:
                self._pending[0] = item[excess:]
                self._pending_bytes -= excess

    def _apply(self) -> None:
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, tuple):
                self._screen.resize(lines=max(item[1], 1), columns=max(item[0], 1))
            else:
                self._stream.feed(item)
        self._pending_bytes = 0

    def snapshot(self, t: float) -> Keyframe:
        """Process the queued output and return the screen."""
        self._apply()
        screen = self._screen
        return Keyframe(
            t=t,
            cols=screen.columns,
            rows=screen.lines,
            lines=tuple(screen.display),
            cursor_x=min(screen.cursor.x, screen.columns - 1),
            cursor_y=screen.cursor.y,
            cursor_hidden=bool(screen.cursor.hidden),
            title=str(screen.title or ""),
        )
