"""A yes/no question, used before showing a recording that failed verification."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from tui.safe import printable

__all__ = ["ConfirmScreen"]


class ConfirmScreen(ModalScreen[bool]):
    """Returns True for yes."""

    BINDINGS = [Binding("escape,n", "answer(False)", "No"), Binding("y", "answer(True)", "Yes")]

    def __init__(self, title: str, message: str, yes: str = "Open anyway", no: str = "Back") -> None:
        super().__init__()
        self.title_text, self.message, self.yes, self.no = title, message, yes, no

    def compose(self) -> ComposeResult:
        """The question and two buttons."""
        with Vertical(classes="dialog warning"):
            yield Static(Text(printable(self.title_text), style="bold red"))
            yield Static(Text(printable(self.message, keep_newlines=True)))
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button(f"{self.no} (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        """Default to the safe answer."""
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Answer with the button pressed."""
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Answer from the keyboard."""
        self.dismiss(yes)
