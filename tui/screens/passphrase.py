"""Asking for the passphrase of an encrypted auditor key."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from tui.safe import printable

__all__ = ["PassphraseScreen"]


class PassphraseScreen(ModalScreen[str | None]):
    """Returns the passphrase typed, or None when the auditor gives up."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, key_path: str, problem: str = "") -> None:
        super().__init__()
        self.key_path = key_path
        self.problem = problem

    def compose(self) -> ComposeResult:
        """A prompt, the password field and the previous failure if any."""
        with Vertical(classes="dialog"):
            yield Static(Text(f"Passphrase for the auditor key {printable(self.key_path)}",
                              style="bold"))
            yield Input(password=True, placeholder="passphrase (or set BASTION_KEY_PASSPHRASE)",
                        id="passphrase")
            yield Static(Text(self.problem, style="bold red"), id="passphrase-problem")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Return the passphrase."""
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        """Give up."""
        self.dismiss(None)
