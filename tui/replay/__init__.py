"""Terminal replay: an emulator with the alternate screen, a player with seeking, an event index."""

from __future__ import annotations

from tui.replay.emulator import ScreenState, TerminalScreen
from tui.replay.index import Command, RecordingIndex, SqlExchange, build_index, search_output
from tui.replay.player import Player

__all__ = [
    "Command",
    "Player",
    "RecordingIndex",
    "ScreenState",
    "SqlExchange",
    "TerminalScreen",
    "build_index",
    "search_output",
]
