"""Turning the emulated screen into Textual strips: colours and attributes, never raw escapes.

Each cell's character goes through `safe_char`, so whatever the recorded program printed, only
text reaches the auditor's terminal; colours and attributes become Rich styles.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from pyte.screens import Char
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from tui.replay.emulator import TerminalScreen
from tui.safe import safe_char

__all__ = ["HIGHLIGHT", "INVISIBLE", "invisible", "render_row", "row_text"]

_NAMED: Final = {
    "black": "black", "red": "red", "green": "green", "brown": "yellow", "yellow": "yellow",
    "blue": "blue", "magenta": "magenta", "cyan": "cyan", "white": "white",
}
_HEX: Final = re.compile(r"^[0-9a-fA-F]{6}$")
HIGHLIGHT: Final = Style(color="black", bgcolor="yellow", bold=True)
# A cell followed by characters that take no column (U+200B, U+202E, …): the user's terminal
# showed nothing for them, the auditor sees the cell marked and the text names them.
INVISIBLE: Final = Style(color="white", bgcolor="red", underline=True)
_CURSOR: Final = Style(reverse=True)


def _colour(name: str) -> str | None:
    if not name or name == "default":
        return None
    if name.startswith("bright"):
        base = _NAMED.get(name[6:])
        return f"bright_{base}" if base else None
    if name in _NAMED:
        return _NAMED[name]
    if _HEX.match(name):
        return "#" + name.lower()
    return None


@lru_cache(maxsize=1024)
def _style(fg: str, bg: str, bold: bool, italics: bool, underscore: bool, strikethrough: bool,
           reverse: bool, blink: bool) -> Style:
    return Style(
        color=_colour(fg), bgcolor=_colour(bg), bold=bold or None, italic=italics or None,
        underline=underscore or None, strike=strikethrough or None, reverse=reverse or None,
        blink=blink or None,
    )


def _char_style(char: Char) -> Style:
    return _style(char.fg, char.bg, char.bold, char.italics, char.underscore, char.strikethrough,
                  char.reverse, char.blink)


def invisible(data: str) -> str:
    """The characters of a cell that take no column and are not printable, named: ⟨U+200B⟩."""
    return "".join(f"⟨U+{ord(c):04X}⟩" for c in data[1:] if not c.isprintable())


def row_text(screen: TerminalScreen, y: int) -> str:
    """Return one row's text as shown (wide characters once, control characters replaced,
    invisible ones named)."""
    line = screen.buffer[y]
    return "".join(safe_char(line[x].data) + invisible(line[x].data)
                   for x in range(screen.columns) if line[x].data != "")


def _highlighted(screen: TerminalScreen, y: int, needle: str) -> set[int]:
    """Return the columns of the row covered by case-insensitive matches of `needle`."""
    line = screen.buffer[y]
    columns: list[int] = []
    text: list[str] = []
    for x in range(screen.columns):
        data = line[x].data
        if data == "":
            continue
        columns.append(x)
        text.append(safe_char(data)[:1] or " ")
    haystack, needle = "".join(text).lower(), needle.lower()
    covered: set[int] = set()
    start = haystack.find(needle)
    while start >= 0 and needle:
        covered.update(columns[start : start + len(needle)])
        start = haystack.find(needle, start + 1)
    return covered


def render_row(screen: TerminalScreen, y: int, *, cursor: bool = True, highlight: str = "") -> Strip:
    """Return row `y` of the screen as a strip exactly `screen.columns` cells wide."""
    line = screen.buffer[y]
    marked = _highlighted(screen, y, highlight) if highlight else set()
    cursor_x = screen.cursor.x if cursor and not screen.cursor.hidden and screen.cursor.y == y else -1
    segments: list[Segment] = []
    run: list[str] = []
    run_style: Style | None = None
    for x in range(screen.columns):
        char = line[x]
        if char.data == "":
            continue  # the second cell of a wide character
        style = _char_style(char)
        if len(char.data) > 1 and invisible(char.data):
            style = style + INVISIBLE
        if x in marked:
            style = style + HIGHLIGHT
        if x == min(cursor_x, screen.columns - 1):
            style = style + _CURSOR
        if run and style != run_style:
            segments.append(Segment("".join(run), run_style))
            run = []
        run_style = style
        run.append(safe_char(char.data))
    if run:
        segments.append(Segment("".join(run), run_style))
    return Strip(segments).crop_extend(0, screen.columns, None)
