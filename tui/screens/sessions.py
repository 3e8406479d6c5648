"""The sessions list: who, where, when, how long, and whether the recording can be trusted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Static
from textual.worker import get_current_worker

from tui.context import context_of
from tui.errors import TuiError
from tui.filters import Query, parse_query
from tui.integrity import Integrity, Verdict, check_recording, facts_of
from tui.models import SessionInfo, format_duration, format_time
from tui.safe import one_line

__all__ = ["MAX_ROWS", "SESSION_COLUMNS", "SessionsScreen"]

# (key, label); the key names the filter term and the sort order too.
# The integrity verdict comes early so that it stays in view on an 80-column terminal.
SESSION_COLUMNS: Final = (
    ("start", "Start (UTC)"),
    ("user", "User"),
    ("target", "Target"),
    ("recording", "Recording"),
    ("status", "Status"),
    ("duration", "Duration"),
    ("kind", "Kind"),
    ("request", "Req"),
    ("id", "Session"),
)
# Rows put in the table at once: a DataTable measures every cell it holds, which takes seconds
# for tens of thousands of sessions. Filtering and sorting still cover every session.
MAX_ROWS: Final = 1000
_FILTER_KEYS: Final = ("user", "target", "kind", "status", "id", "request", "recording", "client")
_STATUS_STYLE: Final = {"live": "bold green", "ended": "", "ended_abnormally": "bold yellow"}
_STATUS_LABEL: Final = {"ended_abnormally": "abnormal"}


def _sort_key(key: str, now: datetime, verdicts: dict[str, Integrity]) -> Callable[[SessionInfo], Any]:
    if key == "start":
        return lambda s: s.started_at.timestamp() if s.started_at else 0.0
    if key == "duration":
        return lambda s: s.duration(now) or 0.0
    if key == "request":
        return lambda s: s.request_id or 0
    if key == "recording":
        return lambda s: verdicts[s.id].verdict.value if s.id in verdicts else "~"
    return lambda s: str(getattr(s, key, "")).lower()


class SessionsScreen(Screen[None]):
    """Every session the auditor may see; enter replays one."""

    # The list, not the filter field: otherwise single-key bindings would type into the filter.
    AUTO_FOCUS = "#sessions"
    BINDINGS = [
        Binding("enter", "open", "Replay"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("o", "sort", "Sort"),
        Binding("O", "reverse", "Reverse", show=False),
        Binding("v", "verify", "Verify"),
        Binding("r", "reload", "Refresh"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[SessionInfo] = []
        self.shown: list[SessionInfo] = []
        self.query_text = ""
        self._query: Query = parse_query("", _FILTER_KEYS)
        self.sort_key = "start"
        self.sort_reverse = True
        self.problem = ""
        self.ready_event = asyncio.Event()

    def compose(self) -> ComposeResult:
        """Filter field, table, status line."""
        yield Header()
        with Horizontal(classes="filter-bar"):
            yield Label("Filter ", classes="filter-label")
            yield Input(placeholder="user:alice target:prod date:2026-11-22 status:tampered words…",
                        id="filter")
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Static(id="status", classes="status-line")
        yield Footer()

    def on_mount(self) -> None:
        """Set up columns, load, and refresh while sessions are live."""
        context = context_of(self)
        self.title = "Sessions"
        self.sub_title = context.source.description
        table = self.query_one("#sessions", DataTable)
        for key, label in SESSION_COLUMNS:
            table.add_column(label, key=key)
        table.focus()
        self.set_interval(context.source.refresh_interval, self._refresh_live)
        self.load()

    def on_screen_resume(self) -> None:
        """Show verdicts found while replaying."""
        if self.sessions:
            self._show_verdicts(list(context_of(self).integrity.known()))

    # -- loading ----------------------------------------------------------------------------

    @work(exclusive=True, group="sessions-load")
    async def load(self, quiet: bool = False) -> None:
        """Fetch the list, show it, then verify local recordings in the background."""
        context = context_of(self)
        table = self.query_one("#sessions", DataTable)
        if not quiet:
            table.loading = True
        started = time.perf_counter()
        try:
            sessions = await context.source.sessions()
        except TuiError as exc:
            self.problem = f"cannot list sessions: {exc}"
            self._show_status()
            self.notify(str(exc), title="Sessions", severity="error", timeout=10)
            return
        finally:
            table.loading = False
        self.sessions = sessions
        self.problem = ""
        self.populate()
        self.ready_event.set()
        self.log.info(f"sessions shown in {time.perf_counter() - started:.3f}s")
        if context.source.files_local:
            self.verify_all()

    def _refresh_live(self) -> None:
        if any(s.live for s in self.sessions):
            self.load(quiet=True)

    def populate(self) -> None:
        """Fill the table with the filtered, sorted sessions (keeps the highlighted one)."""
        context = context_of(self)
        now = context.clock()
        verdicts = context.integrity.known()
        table = self.query_one("#sessions", DataTable)
        current = self.highlighted()
        shown = [s for s in self.sessions if self._matches(s, verdicts)]
        shown.sort(key=_sort_key(self.sort_key, now, verdicts), reverse=self.sort_reverse)
        self.shown = shown
        table.clear()
        for s in shown[:MAX_ROWS]:
            table.add_row(*self._cells(s, verdicts.get(s.id), now), key=s.id)
        if current is not None and current.id in table.rows:
            table.move_cursor(row=table.get_row_index(current.id), animate=False)
        self._show_status()

    def _matches(self, s: SessionInfo, verdicts: dict[str, Integrity]) -> bool:
        if self._query.empty:
            return True
        verdict = verdicts.get(s.id)
        fields = {
            "user": s.user, "target": s.target, "kind": s.kind, "id": s.id,
            "status": f"{s.status} {verdict.verdict.value if verdict else ''}",
            "recording": verdict.label if verdict else "",
            "request": str(s.request_id or ""), "client": s.client,
        }
        return self._query.matches(fields, s.started_at, extra=s.end_reason or "")

    def _cells(self, s: SessionInfo, verdict: Integrity | None, now: datetime) -> list[Text]:
        status = _STATUS_LABEL.get(s.status, s.status)
        cells = {
            "start": Text(format_time(s.started_at)),
            "user": Text(one_line(s.user, 24)),
            "target": Text(one_line(s.target, 24)),
            "kind": Text(one_line(s.kind, 10)),
            "duration": Text(format_duration(s.duration(now)), justify="right"),
            "request": Text(str(s.request_id) if s.request_id is not None else "-", justify="right"),
            "status": Text(one_line(status), style=_STATUS_STYLE.get(s.status, "")),
            "recording": self._verdict_cell(s, verdict),
            "id": Text(one_line(s.id, 40), style="dim"),
        }
        return [cells[key] for key, _ in SESSION_COLUMNS]

    @staticmethod
    def _verdict_cell(s: SessionInfo, verdict: Integrity | None) -> Text:
        if verdict is None:
            return Text("none" if not s.recording else "?", style="dim")
        return Text(verdict.label, style=verdict.style)

    def _show_status(self) -> None:
        verdicts = context_of(self).integrity.known()
        checked = sum(1 for s in self.sessions if s.id in verdicts)
        bad = sum(1 for s in self.sessions if s.id in verdicts and verdicts[s.id].verdict in
                  (Verdict.TAMPERED, Verdict.CUT_OFF, Verdict.MISSING))
        arrow = "↓" if self.sort_reverse else "↑"
        text = Text(f"{len(self.shown)} of {len(self.sessions)} sessions · sorted by "
                    f"{self.sort_key} {arrow} · {checked} recordings verified")
        if len(self.shown) > MAX_ROWS:
            text.append(f" · first {MAX_ROWS} listed: filter to narrow", style="yellow")
        if bad:
            text.append(f" · {bad} not intact", style="bold red")
        for problem in self._query.problems:
            text.append(f" · {problem}", style="yellow")
        if self.problem:
            text.append(f" · {one_line(self.problem, 300)}", style="bold red")
        self.query_one("#status", Static).update(text)

    # -- verification -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="sessions-verify")
    def verify_all(self) -> None:
        """Verify every local recording not verified yet, newest first (a worker thread)."""
        context = context_of(self)
        worker = get_current_worker()
        signer = context.source.signer()
        batch: list[str] = []
        last = time.monotonic()
        for s in list(self.sessions):
            if worker.is_cancelled:
                return
            path = context.source.local_recording(s) if s.recording else None
            if context.integrity.get(s.id, path) is not None:
                continue
            if not s.recording:
                integrity = Integrity(Verdict.NONE, "the session has no recording")
            elif path is None:
                integrity = Integrity(Verdict.MISSING, f"no file {s.recording}")
            else:
                integrity = check_recording(path, signer, live=s.live, session=facts_of(s))
            context.integrity.put(s.id, integrity, path)
            batch.append(s.id)
            if time.monotonic() - last > 0.25:
                self.app.call_from_thread(self._show_verdicts, batch)
                batch, last = [], time.monotonic()
        if batch:
            self.app.call_from_thread(self._show_verdicts, batch)

    def _show_verdicts(self, session_ids: list[str]) -> None:
        table = self.query_one("#sessions", DataTable)
        verdicts = context_of(self).integrity.known()
        by_id = {s.id: s for s in self.sessions}
        for sid in session_ids:
            if sid in table.rows and sid in by_id:
                table.update_cell(sid, "recording", self._verdict_cell(by_id[sid], verdicts.get(sid)))
        self._show_status()

    @work(exclusive=True, group="sessions-verify-one")
    async def verify_one(self, session: SessionInfo) -> None:
        """Fetch (if remote) and verify one recording."""
        context = context_of(self)
        if not session.recording:
            self.notify(f"session {session.id} has no recording", severity="warning")
            return
        try:
            path = await context.source.fetch_recording(session)
        except TuiError as exc:
            context.integrity.put(session.id, Integrity(Verdict.MISSING, str(exc)))
            self._show_verdicts([session.id])
            self.notify(str(exc), title="Verify", severity="error", timeout=10)
            return
        integrity = await asyncio.to_thread(check_recording, path, context.source.signer(),
                                            live=session.live, session=facts_of(session))
        context.integrity.put(session.id, integrity, path)
        self._show_verdicts([session.id])
        self.notify(one_line(integrity.banner(), 300), title=f"Recording {session.id}",
                    severity="information" if integrity.trustworthy else "error", timeout=8)

    # -- actions ----------------------------------------------------------------------------

    def highlighted(self) -> SessionInfo | None:
        """The session under the cursor."""
        table = self.query_one("#sessions", DataTable)
        if not 0 <= table.cursor_row < table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((s for s in self.shown if s.id == key), None)

    def action_open(self) -> None:
        """Replay the highlighted session."""
        from tui.screens.replay import ReplayScreen

        session = self.highlighted()
        if session is not None:
            self.app.push_screen(ReplayScreen(session))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter or a click on a row replays it."""
        event.stop()
        self.action_open()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts by it (again: reverses)."""
        key = str(event.column_key.value)
        if key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key, self.sort_reverse = key, key in ("start", "duration")
        self.populate()

    def action_sort(self) -> None:
        """Sort by the next column."""
        keys = [k for k, _ in SESSION_COLUMNS]
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self.sort_reverse = self.sort_key in ("start", "duration")
        self.populate()

    def action_reverse(self) -> None:
        """Reverse the order."""
        self.sort_reverse = not self.sort_reverse
        self.populate()

    def action_verify(self) -> None:
        """Verify the highlighted session's recording now."""
        session = self.highlighted()
        if session is not None:
            self.verify_one(session)

    def action_reload(self) -> None:
        """Load the list again."""
        self.load()

    def action_focus_filter(self) -> None:
        """Go to the filter field."""
        self.set_focus(self.query_one("#filter", Input))

    def action_clear_filter(self) -> None:
        """Empty the filter and go back to the table."""
        field = self.query_one("#filter", Input)
        if field.value:
            field.value = ""
        self.set_focus(self.query_one("#sessions", DataTable))

    def on_input_changed(self, event: Input.Changed) -> None:
        """Filter as the auditor types."""
        self.query_text = event.value
        self._query = parse_query(event.value, _FILTER_KEYS)
        self.populate()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the filter goes back to the table."""
        self.set_focus(self.query_one("#sessions", DataTable))
