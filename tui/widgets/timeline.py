"""The replay timeline: elapsed time as a bar, markers and commands as ticks; click to seek."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

__all__ = ["Timeline"]


class Timeline(Widget):
    """A one-line seek bar."""

    DEFAULT_CSS = """
    Timeline { height: 1; width: 1fr; }
    """

    position: reactive[float] = reactive(0.0)
    duration: reactive[float] = reactive(0.0)

    class Seek(Message):
        """The auditor clicked a point of the timeline."""

        def __init__(self, t: float) -> None:
            self.t = t
            super().__init__()

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._markers: tuple[float, ...] = ()
        self._commands: tuple[float, ...] = ()

    def set_ticks(self, markers: Sequence[float], commands: Sequence[float]) -> None:
        """Show markers (◆) and commands (╵) along the bar."""
        self._markers, self._commands = tuple(markers), tuple(commands)
        self.refresh()

    def _cell(self, t: float, width: int) -> int:
        if self.duration <= 0 or width <= 1:
            return 0
        return min(width - 1, max(0, round(t / self.duration * (width - 1))))

    def render(self) -> Text:
        """Draw the bar."""
        width = max(self.size.width, 1)
        here = self._cell(self.position, width)
        cells = ["━" if x < here else "─" for x in range(width)]
        styles = ["bold $accent" if x < here else "dim" for x in range(width)]
        for t in self._commands:
            x = self._cell(t, width)
            cells[x] = "╵" if x >= here else "┷"
        for t in self._markers:
            x = self._cell(t, width)
            cells[x], styles[x] = "◆", "bold yellow"
        cells[here] = "●"
        text = Text(no_wrap=True, overflow="crop")
        for char, style in zip(cells, styles, strict=True):
            text.append(char, "bold cyan" if char == "●" else style.replace("$accent", "cyan"))
        return text

    def on_click(self, event: events.Click) -> None:
        """Seek to the clicked point."""
        width = max(self.size.width, 1)
        if self.duration > 0 and width > 1:
            self.post_message(self.Seek(event.x / (width - 1) * self.duration))
