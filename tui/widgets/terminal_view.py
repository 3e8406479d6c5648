"""The replayed terminal: the emulator's cells drawn as styled text, scrollable when too big.

Rows are rendered from the emulator's buffer (see `tui.replay.render`), never from the recorded
bytes, and cached until pyte marks them dirty. The area outside the recorded terminal size is
shaded so the auditor sees where the user's terminal ended.
"""

from __future__ import annotations

from typing import Final

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.replay.emulator import TerminalScreen
from tui.replay.render import render_row

__all__ = ["TerminalView"]

_OUTSIDE: Final = Style(bgcolor="grey15")


class TerminalView(ScrollView, can_focus=True):
    """Shows a TerminalScreen; call `show()` after the screen changed."""

    def __init__(self, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._screen: TerminalScreen | None = None
        self._rows: list[Strip] = []
        self._cursor: tuple[int, int] = (-1, -1)
        self.highlight = ""
        self.follow_cursor = True

    @property
    def terminal(self) -> TerminalScreen | None:
        """The screen shown."""
        return self._screen

    def show(self, screen: TerminalScreen, *, full: bool = False) -> None:
        """Draw the rows that changed (all of them for a new screen or size)."""
        if screen is not self._screen or len(self._rows) != screen.lines or (
            self._rows and self._rows[0].cell_length != screen.columns
        ):
            full = True
        self._screen = screen
        if full:
            self._rows = [Strip.blank(screen.columns)] * screen.lines
            changed: set[int] = set(range(screen.lines))
            self.virtual_size = Size(screen.columns, screen.lines)
        else:
            changed = {y for y in screen.dirty if 0 <= y < screen.lines}
        cursor = (screen.cursor.x, screen.cursor.y)
        if cursor != self._cursor:
            changed.update(y for y in (self._cursor[1], cursor[1]) if 0 <= y < screen.lines)
            self._cursor = cursor
        for y in changed:
            self._rows[y] = render_row(screen, y, highlight=self.highlight)
        screen.dirty.clear()
        if changed:
            self.refresh()
        if self.follow_cursor and self.size.height and not (
            self.scroll_offset.y <= cursor[1] < self.scroll_offset.y + self.size.height
        ):
            self.scroll_to(y=max(cursor[1] - self.size.height + 1, 0), animate=False)

    def set_highlight(self, text: str) -> None:
        """Mark every occurrence of `text` on screen (empty: none)."""
        if text != self.highlight:
            self.highlight = text
            if self._screen is not None:
                self.show(self._screen, full=True)

    def text(self) -> str:
        """The screen as text (for tests)."""
        return self._screen.text() if self._screen is not None else ""

    def render_line(self, y: int) -> Strip:
        """Return one visible line."""
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        row = y + scroll_y
        if row >= len(self._rows):
            return Strip([Segment(" " * width, _OUTSIDE)], width)
        strip = self._rows[row]
        columns = strip.cell_length
        if scroll_x >= columns:
            return Strip([Segment(" " * width, _OUTSIDE)], width)
        visible = strip.crop(scroll_x, min(scroll_x + width, columns))
        pad = width - visible.cell_length
        if pad > 0:
            visible = Strip([*visible, Segment(" " * pad, _OUTSIDE)], width)
        return visible
