"""Widgets of the replay screen."""

from __future__ import annotations

from tui.widgets.terminal_view import TerminalView
from tui.widgets.timeline import Timeline

__all__ = ["TerminalView", "Timeline"]
