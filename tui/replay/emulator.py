"""A pyte screen with xterm's alternate screen buffer, and cheap snapshots of its state.

pyte keeps one buffer and ignores private modes 47, 1047 and 1049, so a replay of `less`, `vim`
or `top` would leave the program's last page on screen after it exits instead of the shell lines
that were there before. Here entering the alternate screen puts the main buffer aside and
leaving it brings the main buffer back, as xterm does:

- 47: switch to the alternate buffer (its content kept from last time) and back;
- 1047: the same, but the alternate buffer is cleared when leaving it;
- 1048: save / restore the cursor (DECSC / DECRC);
- 1049: save the cursor, switch to a cleared alternate buffer; leaving restores both.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final

from pyte.screens import Char, Cursor, Margins, Savepoint, StaticDefaultDict

from recorder import emulated_size
from recorder.keyframes import Screen

__all__ = ["Buffer", "ScreenState", "TerminalScreen"]

Buffer = dict[int, StaticDefaultDict[int, Char]]

ALT_47: Final = 47
ALT_1047: Final = 1047
SAVE_CURSOR_1048: Final = 1048
ALT_1049: Final = 1049
_ALT_MODES: Final = frozenset({ALT_47, ALT_1047, SAVE_CURSOR_1048, ALT_1049})


@dataclass(frozen=True)
class ScreenState:
    """Everything needed to put a TerminalScreen back where it was (buffers are copied)."""

    columns: int
    lines: int
    buffer: dict[int, dict[int, Char]]
    other: dict[int, dict[int, Char]] | None
    alternate: bool
    alt_kept: dict[int, dict[int, Char]] | None
    cursor: Cursor
    alt_cursor: Cursor | None
    savepoints: tuple[Savepoint, ...]
    mode: frozenset[int]
    margins: Margins | None
    title: str
    charset: int
    g0_charset: str
    g1_charset: str
    tabstops: frozenset[int]


def _copy_lines(buffer: dict[int, StaticDefaultDict[int, Char]]) -> dict[int, dict[int, Char]]:
    # Char is an immutable named tuple: copying the dicts is a full copy.
    return {y: dict(line) for y, line in buffer.items()}


class TerminalScreen(Screen):
    """pyte.Screen plus the alternate screen buffer; `alternate` says which buffer shows."""

    def __init__(self, columns: int, lines: int) -> None:
        self._other: Buffer | None = None  # the main buffer while the alternate one shows
        self._alt_kept: Buffer | None = None  # mode 47 keeps the alternate content
        self._alt_cursor: Cursor | None = None
        # As the recorder's keyframes: a recorded 65535x65535 terminal is shown at most 1000x1000.
        columns, lines = emulated_size(columns, lines)
        super().__init__(columns, lines)
        self.version = 0

    def _new_buffer(self) -> Buffer:
        return defaultdict(lambda: StaticDefaultDict[int, Char](self.default_char))

    @property
    def alternate(self) -> bool:
        """Whether the alternate screen buffer is showing."""
        return self._other is not None

    # -- modes ----------------------------------------------------------------------------

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        """Set modes; private 47/1047/1048/1049 switch buffers or save the cursor."""
        if kwargs.get("private"):
            for mode in modes:
                if mode in _ALT_MODES:
                    self._enter(mode)
            modes = tuple(m for m in modes if m not in _ALT_MODES)
            if not modes:
                return
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        """Reset modes; private 47/1047/1048/1049 switch back or restore the cursor."""
        if kwargs.get("private"):
            for mode in modes:
                if mode in _ALT_MODES:
                    self._leave(mode)
            modes = tuple(m for m in modes if m not in _ALT_MODES)
            if not modes:
                return
        super().reset_mode(*modes, **kwargs)

    def _enter(self, mode: int) -> None:
        if mode == SAVE_CURSOR_1048:
            self._alt_cursor = copy.copy(self.cursor)
            return
        if mode == ALT_1049:
            self._alt_cursor = copy.copy(self.cursor)
        if self._other is not None:
            if mode == ALT_1049:
                self.buffer.clear()  # xterm clears it again
            return
        self._other = self.buffer
        if mode == ALT_47 and self._alt_kept is not None:
            self.buffer = self._alt_kept
        else:
            self.buffer = self._new_buffer()
        self._alt_kept = None
        self._touch()

    def _leave(self, mode: int) -> None:
        if mode == SAVE_CURSOR_1048:
            self._restore_alt_cursor()
            return
        if self._other is not None:
            self._alt_kept = self.buffer if mode == ALT_47 else None
            self.buffer = self._other
            self._other = None
            self._touch()
        if mode == ALT_1049:
            self._restore_alt_cursor()

    def _restore_alt_cursor(self) -> None:
        if self._alt_cursor is not None:
            self.cursor = copy.copy(self._alt_cursor)
            self.ensure_hbounds()
            self.ensure_vbounds()

    def _touch(self) -> None:
        self.dirty.update(range(self.lines))

    # -- whole-screen operations ---------------------------------------------------------

    def reset(self) -> None:
        """Reset the terminal (RIS), leaving the alternate screen."""
        self._other = None
        self._alt_kept = None
        self._alt_cursor = None
        super().reset()

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        """Resize both buffers the same way (pyte only knows the one that shows)."""
        new_columns, new_lines = emulated_size(columns or self.columns, lines or self.lines)
        for hidden in (self._other, self._alt_kept):
            if hidden is not None:
                _clip(hidden, self.lines, new_lines, new_columns)
        super().resize(new_lines, new_columns)

    # -- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> ScreenState:
        """Return a copy of the screen's state."""
        return ScreenState(
            columns=self.columns,
            lines=self.lines,
            buffer=_copy_lines(self.buffer),
            other=_copy_lines(self._other) if self._other is not None else None,
            alternate=self._other is not None,
            alt_kept=_copy_lines(self._alt_kept) if self._alt_kept is not None else None,
            cursor=copy.copy(self.cursor),
            alt_cursor=copy.copy(self._alt_cursor) if self._alt_cursor else None,
            savepoints=tuple(self.savepoints),
            mode=frozenset(self.mode),
            margins=self.margins,
            title=str(self.title or ""),
            charset=self.charset,
            g0_charset=self.g0_charset,
            g1_charset=self.g1_charset,
            tabstops=frozenset(self.tabstops),
        )

    @classmethod
    def restore(cls, state: ScreenState) -> TerminalScreen:
        """Return a new screen in the given state."""
        screen = cls(state.columns, state.lines)
        screen.buffer = screen._filled(state.buffer)
        screen._other = screen._filled(state.other) if state.other is not None else None
        screen._alt_kept = screen._filled(state.alt_kept) if state.alt_kept is not None else None
        screen.cursor = copy.copy(state.cursor)
        screen._alt_cursor = copy.copy(state.alt_cursor) if state.alt_cursor else None
        screen.savepoints = list(state.savepoints)
        screen.mode = set(state.mode)
        screen.margins = state.margins
        screen.title = state.title
        screen.charset = state.charset
        screen.g0_charset = state.g0_charset
        screen.g1_charset = state.g1_charset
        screen.tabstops = set(state.tabstops)
        screen._touch()
        return screen

    def _filled(self, lines: dict[int, dict[int, Char]]) -> Buffer:
        buffer = self._new_buffer()
        for y, line in lines.items():
            row = StaticDefaultDict[int, Char](self.default_char)
            row.update(line)
            buffer[y] = row
        return buffer

    def text(self) -> str:
        """Return the screen as text, trailing spaces removed (for tests and search)."""
        return "\n".join(line.rstrip() for line in self.display)


def _clip(buffer: Buffer, old_lines: int, lines: int, columns: int) -> None:
    """Shrink a hidden buffer as pyte shrinks the visible one (drop top lines, right columns)."""
    if lines < old_lines:
        drop = old_lines - lines
        moved = {y - drop: row for y, row in buffer.items() if y >= drop}
        buffer.clear()
        buffer.update(moved)
    for row in buffer.values():
        for x in [x for x in row if x >= columns]:
            del row[x]
