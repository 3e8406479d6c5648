"""The first screen: loading the key and connecting, then any start-up error, clearly."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, LoadingIndicator, Static

from tui.safe import printable

__all__ = ["StartupScreen"]


class StartupScreen(Screen[None]):
    """Shows progress while starting and what went wrong if start-up fails."""

    def compose(self) -> ComposeResult:
        """Lay out the title, a spinner and a message."""
        yield Header()
        with Vertical(id="startup"):
            yield Static(Text("bastion-tui", style="bold"), id="startup-title")
            yield LoadingIndicator(id="startup-spinner")
            yield Static(Text("starting…"), id="startup-message")
        yield Footer()

    def step(self, message: str) -> None:
        """Show what start-up is doing now."""
        self.query_one("#startup-message", Static).update(Text(printable(message)))

    def fail(self, message: str, hint: str = "Press ctrl+q to quit.") -> None:
        """Show a start-up error and stop the spinner."""
        self.query_one("#startup-spinner", LoadingIndicator).display = False
        text = Text()
        text.append("✖ ", style="bold red")
        text.append(printable(message), style="bold")
        text.append("\n\n" + hint, style="dim")
        self.query_one("#startup-message", Static).update(text)
        self.add_class("failed")
