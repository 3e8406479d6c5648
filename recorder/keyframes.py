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

__all__ = ["MAX_COLS", "MAX_ROWS", "Keyframe", "Screen", "TerminalEmulator", "default_tail_limit",
           "emulated_size"]

MIN_TAIL: Final = 16 * 1024
MAX_TAIL: Final = 64 * 1024
# The emulated screen is at most this size, whatever size the recording says (a client can ask
# for 65535x65535): a keyframe then stays far below the event size limit, and the emulator's
# memory and work per keyframe stay bounded. Output and resize events keep the sizes asked for.
MAX_COLS: Final = 1000
MAX_ROWS: Final = 1000


def emulated_size(cols: int, rows: int) -> tuple[int, int]:
    """The screen size the emulator uses for a terminal of `cols` x `rows`."""
    return max(1, min(cols, MAX_COLS)), max(1, min(rows, MAX_ROWS))


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
            # Trailing blanks are not stored: a wide, mostly empty screen costs what it shows.
            "lines": [line.rstrip(" ") for line in self.lines],
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


class Screen(pyte.Screen):
    """pyte's screen, keeping the text after a character it cannot draw.

    pyte stops drawing a run of text at the first character of no width that is not a combining
    mark (U+200B, U+2060, U+FEFF, U+202E, …): everything after it on that write was lost, while
    the user's terminal showed it. Here such a character is attached to the cell before it (it
    takes no column, as on the user's terminal) and drawing goes on.
    """

    def draw(self, data: str) -> None:
        if data.isprintable():
            super().draw(data)
            return
        start = 0
        for i, char in enumerate(data):
            if not char.isprintable():
                if start < i:
                    super().draw(data[start:i])
                self._attach(char)
                start = i + 1
        if start < len(data):
            super().draw(data[start:])

    def _attach(self, char: str) -> None:
        x, line = self.cursor.x, self.buffer[self.cursor.y]
        if x > 0:
            cell = line[x - 1]
            line[x - 1] = cell._replace(data=cell.data + char)
            self.dirty.add(self.cursor.y)


class TerminalEmulator:
    """A pyte screen fed lazily: output is queued and processed (its tail) at snapshot time."""

    def __init__(self, cols: int, rows: int, tail_limit: int | None = None) -> None:
        cols, rows = emulated_size(cols, rows)
        self._screen = Screen(cols, rows)
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
                self._resize(*item)
                continue
            excess = self._pending_bytes - self._tail_limit
            if len(item) <= excess:
                self._pending.popleft()
                self._pending_bytes -= len(item)
            else:
                self._pending[0] = item[excess:]
                self._pending_bytes -= excess

    def _resize(self, cols: int, rows: int) -> None:
        cols, rows = emulated_size(cols, rows)
        self._screen.resize(lines=rows, columns=cols)

    def _apply(self) -> None:
        while self._pending:
            item = self._pending.popleft()
            if isinstance(item, tuple):
                self._resize(*item)
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
