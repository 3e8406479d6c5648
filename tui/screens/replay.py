"""Replaying one session: the emulated terminal, a timeline, speed, search, typed input, SQL.

Opening a recording fetches it (remote), verifies it (always, before anything is shown), asks
before showing a tampered one, decrypts it with the auditor's key and shows time 0 at once; a
worker thread then reads it through once for commands, markers and SQL statements.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Final

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Label, ProgressBar, Static
from textual.worker import get_current_worker

from recorder import NotARecipient, RecordingError, RecordingReader
from tui.context import context_of
from tui.errors import TuiError
from tui.integrity import Integrity, Verdict, check_recording, facts_of
from tui.keys import key_fingerprint
from tui.models import SessionInfo, format_time
from tui.replay.index import RecordingIndex, build_index, search_output
from tui.replay.player import Player
from tui.safe import one_line, printable
from tui.screens.confirm import ConfirmScreen
from tui.widgets.terminal_view import TerminalView
from tui.widgets.timeline import Timeline

__all__ = ["SPEEDS", "ReplayScreen", "clock_text"]

SPEEDS: Final = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
IDLE_LIMIT: Final = 1.0  # with "skip idle", no pause in the recording lasts longer than this
FRAME: Final = 1 / 20
_ICONS: Final = {"input": "⌨", "marker": "◆", "resize": "⇲", "exit": "⏹", "sql": "▶"}
_BANNER_CLASSES: Final = tuple(f"banner-{v.value}" for v in Verdict)
# Keys that edit text when the search field has focus.
_TYPING_ACTIONS: Final = frozenset({
    "toggle_play", "seek", "start", "end", "slower", "faster", "skip_idle", "next_command",
    "previous_command", "next_marker", "previous_marker", "search", "toggle_events", "sql",
    "follow",
})
# How often a followed live session is read again when its recording is a local file.
FOLLOW_INTERVAL: Final = 1.0


def clock_text(t: float) -> str:
    """Return a time offset as `MM:SS.s` (or `H:MM:SS.s`)."""
    t = max(t, 0.0)
    minutes, seconds = divmod(t, 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:04.1f}"
    return f"{minutes:02d}:{seconds:04.1f}"


class ReplayScreen(Screen[None]):
    """Plays one session's recording."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("space", "toggle_play", "Play/Pause", priority=True),
        Binding("left", "seek(-5)", "-5s", priority=True, show=False),
        Binding("right", "seek(5)", "+5s", priority=True, show=False),
        Binding("shift+left", "seek(-30)", "-30s", priority=True, show=False),
        Binding("shift+right", "seek(30)", "+30s", priority=True, show=False),
        Binding("home", "start", "Start", priority=True, show=False),
        Binding("end", "end", "End", priority=True, show=False),
        Binding("minus", "slower", "Slower", priority=True),
        Binding("plus,equals_sign", "faster", "Faster", priority=True),
        Binding("s", "skip_idle", "Skip idle", priority=True),
        Binding("n", "next_command", "Next cmd", priority=True),
        Binding("N", "previous_command", "Prev cmd", priority=True, show=False),
        Binding("m", "next_marker", "Marker", priority=True),
        Binding("M", "previous_marker", "Prev marker", priority=True, show=False),
        Binding("slash", "search", "Search", priority=True),
        Binding("i", "toggle_events", "Input", priority=True),
        Binding("q", "sql", "SQL", priority=True),
        Binding("f", "follow", "Follow live", priority=True, show=False),
    ]

    class Indexed(Message):
        """The pass over the recording finished."""

        def __init__(self, index: RecordingIndex) -> None:
            self.index = index
            super().__init__()

    class IndexProgress(Message):
        """Part of the pass is done."""

        def __init__(self, done: int, total: int) -> None:
            self.done, self.total = done, total
            super().__init__()

    class SearchDone(Message):
        """A search of the output ended."""

        def __init__(self, needle: str, t: float | None, wrapped: bool) -> None:
            self.needle, self.t, self.wrapped = needle, t, wrapped
            super().__init__()

    def __init__(self, session: SessionInfo) -> None:
        super().__init__()
        self.session = session
        self.path: Path | None = None
        self.reader: RecordingReader | None = None
        self.player: Player | None = None
        self.index: RecordingIndex | None = None
        self.integrity: Integrity | None = None
        self.speed = 1.0
        self.skip_idle = False
        self.playing = False
        self.search_text = ""
        self.failure = ""
        self.opened = asyncio.Event()
        self.indexed = asyncio.Event()
        self._timer: Timer | None = None
        # A live session is followed: its recording is read again as it grows, the screen
        # staying at its end, until the auditor moves away from the end or it ends.
        self.following = session.live
        self._followed_size = -1
        self._last_tick = 0.0
        self._damage_shown = False
        self._index_note = ""

    # -- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Banner, info, terminal (+ events panel), timeline, status, search field."""
        yield Static(Text("Verifying…"), id="banner", classes="banner banner-unchecked")
        yield Static(self._info_text(), id="info")
        with Vertical(id="loading"):
            yield Static(Text("Opening the recording…"), id="loading-message")
            yield ProgressBar(id="loading-progress", show_eta=False)
        with Horizontal(id="replay-body"):
            yield TerminalView(id="terminal")
            with Vertical(id="side"):
                yield Label("Typed input and events", classes="side-title")
                yield DataTable(id="events", cursor_type="row", zebra_stripes=True)
        yield Timeline(id="timeline")
        yield Static(id="play-status")
        yield Input(placeholder="search the output (enter: next match, escape: close)", id="search")
        yield Footer()

    def on_mount(self) -> None:
        """Start opening the recording."""
        self.query_one("#replay-body").display = False
        self.query_one("#side").display = False
        self.query_one("#search").display = False
        table = self.query_one("#events", DataTable)
        table.add_column("Time", key="t")
        table.add_column("Event", key="event")
        self._timer = self.set_interval(FRAME, self._tick, pause=True)
        self.open_recording()

    def on_unmount(self) -> None:
        """Close the recording file."""
        if self.reader is not None:
            self.reader.close()

    def _info_text(self) -> Text:
        s = self.session
        text = Text()
        text.append(one_line(s.user, 32), style="bold")
        text.append(" → ")
        text.append(one_line(s.target, 32), style="bold")
        text.append(f" ({one_line(s.kind, 12)}) · {format_time(s.started_at)} UTC · "
                    f"request {s.request_id if s.request_id is not None else '-'} · "
                    f"session {one_line(s.id, 40)}")
        if s.live:
            text.append(" · LIVE", style="bold green")
        elif s.end_reason:
            text.append(f" · {one_line(s.end_reason, 60)}", style="dim")
        return text

    # -- opening ----------------------------------------------------------------------------

    def _loading(self, message: str, progress: float | None = None, total: float | None = None) -> None:
        self.query_one("#loading-message", Static).update(Text(printable(message)))
        bar = self.query_one("#loading-progress", ProgressBar)
        bar.update(total=total, progress=progress or 0)

    def _fail(self, message: str) -> None:
        self.failure = message
        self.query_one("#loading-progress", ProgressBar).display = False
        text = Text("✖ ", style="bold red")
        text.append(printable(message), style="bold")
        text.append("\n\nPress escape to go back.", style="dim")
        self.query_one("#loading-message", Static).update(text)
        self.opened.set()
        self.indexed.set()

    def _fetched(self, received: int) -> None:
        self._loading(f"Fetching the recording… {received / 1e6:.1f} MB")

    @work(exclusive=True, group="replay-open")
    async def open_recording(self) -> None:
        """Fetch, verify, confirm if tampered, decrypt, show time 0, then index."""
        context = context_of(self)
        self._loading("Fetching the recording…")
        try:
            path = await context.source.fetch_recording(self.session, progress=self._fetched)
        except TuiError as exc:
            self._fail(str(exc))
            return
        self.path = path
        self._loading("Verifying signatures and completeness…")
        integrity = await asyncio.to_thread(check_recording, path, context.source.signer(),
                                            live=self.session.live,
                                            session=facts_of(self.session))
        context.integrity.put(self.session.id, integrity, path)
        self._set_integrity(integrity)
        if integrity.verdict is Verdict.TAMPERED:
            go_on = await self.app.push_screen_wait(ConfirmScreen(
                "This recording failed verification",
                f"{integrity.message}.\n\nWhat it shows may have been altered. If you open it, it "
                "stays marked TAMPERED.",
            ))
            if not go_on:
                self.app.pop_screen()
                return
        elif integrity.verdict is Verdict.MISSING:
            self._fail(integrity.banner())
            return
        self._loading("Decrypting…")
        key = context.key()
        try:
            reader = await asyncio.to_thread(RecordingReader, path, key)
        except NotARecipient as exc:
            self._fail(
                f"your auditor key {key_fingerprint(key)} cannot decrypt this recording; it is "
                f"encrypted for {', '.join(exc.recipients) or 'other keys'}. Use a key listed in "
                "recordings.auditor_keys (--key).")
            return
        except RecordingError as exc:
            self._set_integrity(context.integrity.mark_damaged(self.session.id, str(exc)))
            self._fail(f"cannot read the recording: {exc}")
            return
        except OSError as exc:
            self._fail(f"cannot read {path}: {exc.strerror}")
            return
        self.reader = reader
        self.player = await asyncio.to_thread(Player, reader)
        self.query_one("#loading").display = False
        self.query_one("#replay-body").display = True
        timeline = self.query_one("#timeline", Timeline)
        timeline.duration = self.player.duration
        if self.following:
            self._followed_size = await asyncio.to_thread(_size, path)
            self.seek(self.player.duration)
            interval = FOLLOW_INTERVAL if context.source.files_local else \
                max(context.source.refresh_interval, FOLLOW_INTERVAL)
            self.set_interval(interval, self._follow_tick)
        self._redraw()
        self.opened.set()
        self.index_recording(path)

    def _set_integrity(self, integrity: Integrity) -> None:
        self.integrity = integrity
        banner = self.query_one("#banner", Static)
        banner.remove_class(*_BANNER_CLASSES)
        banner.add_class(f"banner-{integrity.verdict.value}")
        banner.update(Text(one_line(integrity.banner(), 400)))

    @work(thread=True, exclusive=True, group="replay-index")
    def index_recording(self, path: Path) -> None:
        """Read the recording once for commands, markers and SQL (a worker thread)."""
        worker = get_current_worker()
        key = context_of(self).key()
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] > 0.2 or done == total:
                last[0] = now
                self.post_message(self.IndexProgress(done, total))

        try:
            index = build_index(path, key, progress, lambda: worker.is_cancelled)
        except (RecordingError, OSError) as exc:
            index = RecordingIndex(damage=str(exc))
        if not worker.is_cancelled:
            self.post_message(self.Indexed(index))

    def on_replay_screen_index_progress(self, message: IndexProgress) -> None:
        """Show how far the pass got."""
        self._index_note = f"indexing {message.done}/{message.total} chunks"
        self._show_status()

    def on_replay_screen_indexed(self, message: Indexed) -> None:
        """Enable commands, markers, the events list and SQL."""
        index = self.index = message.index
        self._index_note = ""
        timeline = self.query_one("#timeline", Timeline)
        if self.player is not None:
            self.player.duration = max(self.player.duration, index.end)
            timeline.duration = self.player.duration
        timeline.set_ticks([m.t for m in index.markers], [c.t for c in index.commands])
        table = self.query_one("#events", DataTable)
        table.clear()
        for i, entry in enumerate(index.entries):
            icon = _ICONS.get(entry.kind, "·")
            table.add_row(Text(clock_text(entry.t), style="dim"),
                          Text(f"{icon} {one_line(entry.text, 200)}"), key=str(i))
        if index.damage:
            self._report_damage(index.damage)
        self._show_status()
        self.indexed.set()

    def _report_damage(self, message: str) -> None:
        if self._damage_shown:
            return
        self._damage_shown = True
        context = context_of(self)
        self._set_integrity(context.integrity.mark_damaged(self.session.id, message))
        self.notify(message, title="Recording damaged", severity="error", timeout=15)

    # -- following a live session -----------------------------------------------------------

    def _follow_tick(self) -> None:
        # Not while a follow is at work: a new one would cancel it (exclusive), and on a loaded
        # machine, where checking the recording takes longer than a tick, none would finish.
        busy = any(w.group == "replay-follow" and w.node is self and w.is_running
                   for w in self.workers)
        if self.following and self.player is not None and not self.playing and not busy:
            self.follow()

    @work(exclusive=True, group="replay-follow")
    async def follow(self) -> None:
        """Read the live recording again if it grew, verify it and show its new end."""
        context = context_of(self)
        try:
            path = await context.source.fetch_recording(self.session)
        except TuiError as exc:
            self.following = False
            self.notify(f"stopped following: {exc}", severity="error", timeout=8)
            self._show_status()
            return
        size = await asyncio.to_thread(_size, path)
        if size == self._followed_size or not self.following:
            return
        # The size counts as seen only once it is shown: this worker is cancelled when the
        # next follow starts (exclusive), and that one must not skip what this one never showed.
        integrity = await asyncio.to_thread(check_recording, path, context.source.signer(),
                                            live=True, session=facts_of(self.session, live=True))
        context.integrity.put(self.session.id, integrity, path)
        self._set_integrity(integrity)
        if integrity.verdict not in (Verdict.IN_PROGRESS, Verdict.INTACT):
            self.following = False  # tampered or unreadable: keep what was verified before
            self._show_status()
            return
        try:
            reader = await asyncio.to_thread(RecordingReader, path, context.key())
            player = await asyncio.to_thread(Player, reader)
        except (RecordingError, OSError) as exc:
            self.following = False
            self.notify(f"stopped following: {exc}", severity="error", timeout=8)
            self._show_status()
            return
        old, self.reader, self.player, self.path = self.reader, reader, player, path
        self._followed_size = size
        if old is not None:
            old.close()
        self.query_one("#timeline", Timeline).duration = player.duration
        self.seek(player.duration)
        if integrity.verdict is Verdict.INTACT:
            self.following = False  # closed and signed: the session ended
        self.index_recording(path)

    def action_follow(self) -> None:
        """Follow a live session again from its end (or stop following)."""
        if not self.session.live:
            self.notify("the session has ended: there is nothing to follow", timeout=3)
            return
        self.following = not self.following
        if self.following and self.player is not None:
            self.pause()
            self.seek(self.player.duration)
            self.follow()
        self._show_status()

    # -- playing ----------------------------------------------------------------------------

    def _redraw(self) -> None:
        player = self.player
        if player is None:
            return
        self.query_one("#terminal", TerminalView).show(player.screen)
        self.query_one("#timeline", Timeline).position = player.t
        if player.damage is not None:
            self._report_damage(str(player.damage))
        self._show_status()

    def _show_status(self) -> None:
        player = self.player
        text = Text()
        if player is None:
            self.query_one("#play-status", Static).update(text)
            return
        text.append("▶ " if self.playing else "⏸ ", style="bold")
        text.append(f"{clock_text(player.t)} / {clock_text(player.duration)}")
        text.append(f" · {self.speed:g}x")
        if self.skip_idle:
            text.append(" · skip idle")
        if self.following:
            text.append(" · following live (f: stop)", style="bold green")
        screen = player.screen
        text.append(f" · {screen.columns}x{screen.lines}")
        if screen.alternate:
            text.append(" · alternate screen", style="cyan")
        if self.search_text:
            text.append(f" · search: {one_line(self.search_text, 30)}", style="yellow")
        if self._index_note:
            text.append(f" · {self._index_note}", style="dim")
        self.query_one("#play-status", Static).update(text)

    def seek(self, t: float) -> None:
        """Show the screen at `t`."""
        if self.player is None:
            return
        try:
            self.player.seek(min(max(t, 0.0), self.player.duration))
        except OSError as exc:
            self.notify(f"cannot read the recording: {exc.strerror}", severity="error")
        self._redraw()

    def _tick(self) -> None:
        player = self.player
        if player is None or not self.playing:
            return
        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        target = player.t + elapsed * self.speed
        if self.skip_idle:
            upcoming = player.next_event_time()
            if upcoming is not None and upcoming - player.t > IDLE_LIMIT:
                target = max(target, upcoming - IDLE_LIMIT)
        player.advance(min(target, player.duration))
        if player.t >= player.duration:
            self.pause()
        self._redraw()

    def play(self) -> None:
        """Start playing (from the start again when at the end)."""
        if self.player is None:
            return
        if self.player.t >= self.player.duration:
            self.seek(0.0)
        self.playing = True
        self._last_tick = time.monotonic()
        if self._timer is not None:
            self._timer.resume()
        self._show_status()

    def pause(self) -> None:
        """Stop playing."""
        self.playing = False
        if self._timer is not None:
            self._timer.pause()
        self._show_status()

    # -- actions ----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Leave keys to the search field while it has focus."""
        if action in _TYPING_ACTIONS and isinstance(self.focused, Input):
            return False
        return True

    def action_back(self) -> None:
        """Close the search field, or go back to the list."""
        search = self.query_one("#search", Input)
        if search.display:
            search.display = False
            self.search_text = ""
            self.query_one("#terminal", TerminalView).set_highlight("")
            self.set_focus(None)
            self._show_status()
            return
        self.pause()
        self.app.pop_screen()

    def action_toggle_play(self) -> None:
        """Play or pause."""
        if self.playing:
            self.pause()
        else:
            self.play()

    def action_seek(self, delta: float) -> None:
        """Jump by `delta` seconds."""
        if self.player is not None:
            self.following = self.following and delta > 0
            self.seek(self.player.t + delta)

    def action_start(self) -> None:
        """Go to the start."""
        self.following = False
        self.seek(0.0)

    def action_end(self) -> None:
        """Go to the end."""
        if self.player is not None:
            self.seek(self.player.duration)

    def action_slower(self) -> None:
        """Halve the speed (down to 0.5x)."""
        self.speed = max((s for s in SPEEDS if s < self.speed), default=SPEEDS[0])
        self._show_status()

    def action_faster(self) -> None:
        """Double the speed (up to 16x)."""
        self.speed = min((s for s in SPEEDS if s > self.speed), default=SPEEDS[-1])
        self._show_status()

    def action_skip_idle(self) -> None:
        """Toggle skipping pauses longer than a second."""
        self.skip_idle = not self.skip_idle
        self._show_status()

    def _need_index(self) -> RecordingIndex | None:
        if self.index is None:
            self.notify("still reading the recording; try again in a moment", timeout=3)
        return self.index

    def action_next_command(self) -> None:
        """Jump to the next line typed with Enter."""
        index, player = self._need_index(), self.player
        if index is None or player is None:
            return
        command = index.next_command(player.t)
        if command is None:
            self.notify("no more commands", timeout=3)
            return
        self.seek(command.t)

    def action_previous_command(self) -> None:
        """Jump to the previous line typed with Enter."""
        index, player = self._need_index(), self.player
        if index is None or player is None:
            return
        command = index.previous_command(player.t)
        if command is not None:
            self.following = False
            self.seek(command.t)

    def action_next_marker(self) -> None:
        """Jump to the next marker."""
        index, player = self._need_index(), self.player
        if index is None or player is None:
            return
        marker = index.next_marker(player.t)
        if marker is None:
            self.notify("no more markers", timeout=3)
            return
        self.seek(marker.t)
        self.notify(one_line(marker.label, 200), title="Marker", timeout=4)

    def action_previous_marker(self) -> None:
        """Jump to the previous marker."""
        index, player = self._need_index(), self.player
        if index is None or player is None:
            return
        marker = index.previous_marker(player.t)
        if marker is not None:
            self.following = False
            self.seek(marker.t)

    def action_toggle_events(self) -> None:
        """Show or hide the typed input and events panel."""
        side = self.query_one("#side")
        side.display = not side.display
        if side.display:
            self.set_focus(self.query_one("#events", DataTable))
        else:
            self.set_focus(None)

    def action_search(self) -> None:
        """Open the search field."""
        search = self.query_one("#search", Input)
        search.display = True
        # At once, not later: keys typed right after `/` must land in the field.
        self.set_focus(search)

    def action_sql(self) -> None:
        """Show the SQL statements of this session."""
        from tui.screens.sql import SqlScreen

        index = self._need_index()
        if index is None:
            return
        if not index.sql:
            self.notify("no SQL statements were recorded in this session", timeout=4)
            return
        self.pause()
        self.app.push_screen(SqlScreen(self.session, index.sql))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Jump to the selected event."""
        event.stop()
        if self.index is None or event.row_key.value is None:
            return
        entry = self.index.entries[int(event.row_key.value)]
        self.following = False
        self.pause()
        self.seek(entry.t)

    def on_timeline_seek(self, message: Timeline.Seek) -> None:
        """Jump to the clicked time."""
        self.following = False
        self.seek(message.t)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Search for the next occurrence after the current time."""
        event.stop()
        needle = event.value.strip()
        if not needle or self.path is None or self.player is None:
            return
        self.pause()
        self.search_text = needle
        self._index_note = "searching…"
        self._show_status()
        self.search(self.path, needle, self.player.t)

    @work(thread=True, exclusive=True, group="replay-search")
    def search(self, path: Path, needle: str, after: float) -> None:
        """Find `needle` in the output after `after`, wrapping to the start (a worker thread)."""
        worker = get_current_worker()
        key = context_of(self).key()
        cancelled = lambda: worker.is_cancelled  # noqa: E731
        try:
            found = search_output(path, key, needle, after, cancelled)
            wrapped = False
            if found is None and after > 0:
                found, wrapped = search_output(path, key, needle, -1.0, cancelled), True
        except (RecordingError, OSError):
            found, wrapped = None, False
        if not worker.is_cancelled:
            self.post_message(self.SearchDone(needle, found, wrapped))

    def on_replay_screen_search_done(self, message: SearchDone) -> None:
        """Show the match (highlighted) or say there is none."""
        self._index_note = ""
        view = self.query_one("#terminal", TerminalView)
        if message.t is None:
            view.set_highlight("")
            self.notify(f"{one_line(message.needle, 60)!r} does not appear in the output", timeout=4)
            self._show_status()
            return
        if message.wrapped:
            self.notify("search wrapped to the start", timeout=3)
        view.set_highlight(message.needle)
        self.following = False
        self.seek(message.t)


def _size(path: Path) -> int:
    """The file's size, -1 when it cannot be read (blocking)."""
    try:
        return path.stat().st_size
    except OSError:
        return -1
