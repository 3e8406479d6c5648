"""The audit trail: every request, review, login, session and reload, filterable."""

from __future__ import annotations

import asyncio
import json
from typing import Final

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Static

from tui.context import context_of
from tui.errors import TuiError
from tui.filters import Query, parse_query
from tui.models import AuditInfo, format_time
from tui.safe import one_line, printable

__all__ = ["AuditScreen"]

_FILTER_KEYS: Final = ("kind", "actor", "target", "request", "session")
_MAX_LIMIT: Final = 10_000


def _kind_style(kind: str) -> str:
    if kind.endswith(("refused", "failed", "denied", "killed", "ended_abnormally", "blocked")):
        return "bold red"
    if kind.startswith(("request.approved", "login.success")):
        return "green"
    return ""


class AuditScreen(Screen[None]):
    """The newest audit events; `l` loads more."""

    # The list, not the filter field: otherwise single-key bindings would type into the filter.
    AUTO_FOCUS = "#audit"
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter"),
        Binding("l", "more", "Load more"),
        Binding("r", "reload", "Refresh"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.events: list[AuditInfo] = []
        self.shown: list[AuditInfo] = []
        self.limit = 1000
        self.problem = ""
        self.ready_event = asyncio.Event()
        self._query: Query = parse_query("", _FILTER_KEYS)

    def compose(self) -> ComposeResult:
        """Filter, table, details, status."""
        yield Header()
        with Horizontal(classes="filter-bar"):
            yield Label("Filter ", classes="filter-label")
            yield Input(placeholder="kind:login. actor:bob target:prod date:2026-11-22 words…",
                        id="filter")
        yield DataTable(id="audit", cursor_type="row", zebra_stripes=True)
        yield Static(id="audit-detail", classes="detail")
        yield Static(id="status", classes="status-line")
        yield Footer()

    def on_mount(self) -> None:
        """Columns and first load."""
        context = context_of(self)
        self.title = "Audit trail"
        self.sub_title = context.source.description
        table = self.query_one("#audit", DataTable)
        for key, label in (("at", "Time (UTC)"), ("kind", "Kind"), ("actor", "Actor"),
                           ("target", "Target"), ("request", "Req"), ("session", "Session"),
                           ("details", "Details")):
            table.add_column(label, key=key)
        table.focus()
        self.load()

    @work(exclusive=True, group="audit-load")
    async def load(self) -> None:
        """Fetch the newest `limit` events."""
        table = self.query_one("#audit", DataTable)
        table.loading = True
        try:
            self.events = await context_of(self).source.audit(limit=self.limit)
            self.problem = ""
        except TuiError as exc:
            self.problem = str(exc)
            self.events = []
            self.notify(str(exc), title="Audit trail", severity="error", timeout=10)
        finally:
            table.loading = False
        self.populate()
        self.ready_event.set()

    def populate(self) -> None:
        """Fill the table with the events that pass the filter."""
        table = self.query_one("#audit", DataTable)
        self.shown = [e for e in self.events if self._matches(e)]
        table.clear()
        for i, e in enumerate(self.shown):
            table.add_row(
                Text(format_time(e.at, seconds=True)),
                Text(one_line(e.kind, 40), style=_kind_style(e.kind)),
                Text(one_line(e.actor or "-", 24)),
                Text(one_line(e.target or "-", 24)),
                Text(str(e.request_id) if e.request_id is not None else "-", justify="right"),
                Text(one_line(e.session_id or "-", 24), style="dim"),
                Text(one_line(self._summary(e), 120)),
                key=str(i),
            )
        self.show_detail()
        self.show_status()

    @staticmethod
    def _summary(e: AuditInfo) -> str:
        text = e.details.get("text")
        if isinstance(text, str):
            return text
        return json.dumps(dict(e.details), sort_keys=True, ensure_ascii=False, default=str)

    def _matches(self, e: AuditInfo) -> bool:
        if self._query.empty:
            return True
        fields = {"kind": e.kind, "actor": e.actor or "", "target": e.target or "",
                  "request": str(e.request_id or ""), "session": e.session_id or ""}
        extra = json.dumps(dict(e.details), ensure_ascii=False, default=str)
        # `kind:` is a prefix, like the bastion's `audit --kind`.
        kinds = self._query.terms.get("kind")
        if kinds and not any(e.kind.lower().startswith(k) for k in kinds):
            return False
        return self._query.matches(fields, e.at, extra=extra)

    def highlighted(self) -> AuditInfo | None:
        """The event under the cursor."""
        table = self.query_one("#audit", DataTable)
        if not self.shown or not 0 <= table.cursor_row < len(self.shown):
            return None
        return self.shown[table.cursor_row]

    def show_detail(self) -> None:
        """The highlighted event in full."""
        e = self.highlighted()
        detail = self.query_one("#audit-detail", Static)
        if e is None:
            detail.update(Text(printable(self.problem) or "no event selected",
                               style="bold red" if self.problem else "dim"))
            return
        body = json.dumps(dict(e.details), indent=1, sort_keys=True, ensure_ascii=False, default=str)
        text = Text(f"#{e.id} {format_time(e.at, seconds=True)} {one_line(e.kind)}", style="bold")
        text.append(f"  actor {one_line(e.actor or '-')} · target {one_line(e.target or '-')} · "
                    f"request {e.request_id or '-'} · session {one_line(e.session_id or '-')}\n")
        text.append(printable(body, keep_newlines=True), style="dim")
        detail.update(text)

    def show_status(self) -> None:
        """Counts, and the error if the trail could not be read."""
        text = Text(f"{len(self.shown)} of {len(self.events)} events (newest {self.limit})")
        for problem in self._query.problems:
            text.append(f" · {problem}", style="yellow")
        if self.problem:
            text.append(f" · {one_line(self.problem, 300)}", style="bold red")
        self.query_one("#status", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Follow the cursor."""
        self.show_detail()

    def action_more(self) -> None:
        """Load four times as many events (up to 10,000)."""
        self.limit = min(self.limit * 4, _MAX_LIMIT)
        self.load()

    def action_reload(self) -> None:
        """Load again."""
        self.load()

    def action_focus_filter(self) -> None:
        """Go to the filter field."""
        self.set_focus(self.query_one("#filter", Input))

    def action_clear_filter(self) -> None:
        """Empty the filter."""
        field = self.query_one("#filter", Input)
        if field.value:
            field.value = ""
        self.set_focus(self.query_one("#audit", DataTable))

    def on_input_changed(self, event: Input.Changed) -> None:
        """Filter as the auditor types."""
        self._query = parse_query(event.value, _FILTER_KEYS)
        self.populate()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Back to the table."""
        self.set_focus(self.query_one("#audit", DataTable))
