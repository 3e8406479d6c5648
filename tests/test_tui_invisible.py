"""Replay shows what the user saw: text after a zero-width or bidi character is not lost, and the
invisible characters are made visible (finding 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from recorder import RecordingReader, RecordingWriter, generate_auditor_key, generate_signing_key
from recorder.keyframes import TerminalEmulator
from tui.replay.player import Player
from tui.replay.render import INVISIBLE, row_text
from tui.widgets.terminal_view import TerminalView

INVISIBLES = ["\u200b", "\u2060", "\ufeff", "\u202e"]


async def _recording(tmp_path: Path, text: str) -> tuple[Path, object]:
    identity = generate_auditor_key()
    writer = RecordingWriter(tmp_path, session_id="zw", user="u", target="t", kind="ssh",
                             recipients=[identity.public_key()], signing_key=generate_signing_key(),
                             cols=60, rows=5)
    async with writer:
        await writer.output(text.encode())
    return writer.path, identity


class _View(App[None]):
    def compose(self) -> ComposeResult:
        yield TerminalView(id="terminal")


@pytest.mark.parametrize("invisible", INVISIBLES)
async def test_text_after_an_invisible_character_is_replayed_and_marked(
        tmp_path: Path, invisible: str) -> None:
    path, identity = await _recording(
        tmp_path, f"harmless{invisible} status\r\nroot:x:0:0:secret-file-contents\r\n")
    with RecordingReader(path, identity) as reader:  # type: ignore[arg-type]
        player = Player(reader)
        player.seek(player.duration)
        screen = player.screen
        assert "status" in screen.text() and "secret-file-contents" in screen.text()
        assert f"⟨U+{ord(invisible):04X}⟩" in row_text(screen, 0)
        # The recorder's keyframes (what a seek starts from) keep it too.
        emulator = TerminalEmulator(60, 5)
        emulator.feed(f"harmless{invisible} status".encode())
        assert "status" in emulator.snapshot(1.0).text()
        app = _View()
        async with app.run_test(size=(70, 8)) as pilot:
            view = app.query_one(TerminalView)
            view.show(screen, full=True)
            await pilot.pause()
            segments = list(view.render_line(0))
            shown = "".join(s.text for s in segments)
            assert "harmless" in shown and "status" in shown
            assert any(s.style is not None and s.style.bgcolor == INVISIBLE.bgcolor
                       for s in segments), "the invisible character is not marked"
            assert all(ch.isprintable() for ch in shown)
