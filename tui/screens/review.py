"""Approving or denying a request: the comment (optional) or the reason (required)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from tui.models import RequestInfo
from tui.safe import one_line
from tui.sources.base import Decision

__all__ = ["ReviewChoice", "ReviewScreen"]


@dataclass(frozen=True)
class ReviewChoice:
    """What the reviewer decided and wrote."""

    decision: Decision
    text: str


class ReviewScreen(ModalScreen[ReviewChoice | None]):
    """Returns the decision with its comment, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, request: RequestInfo, decision: Decision) -> None:
        super().__init__()
        self.request = request
        self.decision: Decision = decision

    def compose(self) -> ComposeResult:
        """The request, a text field and the buttons."""
        r = self.request
        verb = "Approve" if self.decision == "approve" else "Deny"
        with Vertical(classes="dialog"):
            yield Static(Text(f"{verb} request {r.id}: {one_line(r.user)} → {one_line(r.target)}",
                              style="bold"))
            yield Static(Text(f"Reason given: {one_line(r.reason, 200)}"))
            placeholder = ("comment (optional)" if self.decision == "approve"
                           else "reason for the denial (required)")
            yield Input(placeholder=placeholder, id="review-text")
            yield Static("", id="review-problem")
            with Horizontal(classes="buttons"):
                yield Button(verb, variant="success" if self.decision == "approve" else "error",
                             id="review-ok")
                yield Button("Cancel", id="review-cancel")

    def on_mount(self) -> None:
        """Start in the text field."""
        self.query_one("#review-text", Input).focus()

    def _submit(self) -> None:
        text = self.query_one("#review-text", Input).value.strip()
        if self.decision == "deny" and not text:
            self.query_one("#review-problem", Static).update(
                Text("A denial needs a reason.", style="bold red"))
            return
        self.dismiss(ReviewChoice(self.decision, text))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter submits."""
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """OK submits, Cancel cancels."""
        if event.button.id == "review-ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        """Escape cancels."""
        self.dismiss(None)
