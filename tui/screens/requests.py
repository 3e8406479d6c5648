"""Access requests: pending, approved, denied with reasons; approve or deny through the bastion."""

from __future__ import annotations

import asyncio
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
from tui.models import RequestInfo, format_duration, format_time
from tui.safe import one_line, printable
from tui.screens.review import ReviewChoice, ReviewScreen
from tui.sources.base import Decision

__all__ = ["RequestsScreen"]

_FILTER_KEYS: Final = ("user", "target", "status", "id", "reviewer")
_STATUS_STYLE: Final = {"pending": "bold yellow", "approved": "bold green", "denied": "bold red",
                        "revoked": "red", "expired": "dim"}


class RequestsScreen(Screen[None]):
    """Every request the user may see; `a` approves, `d` denies."""

    # The list, not the filter field: otherwise single-key bindings would type into the filter.
    AUTO_FOCUS = "#requests"
    BINDINGS = [
        Binding("a", "review('approve')", "Approve"),
        Binding("d", "review('deny')", "Deny"),
        Binding("p", "pending_only", "Pending only"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("r", "reload", "Refresh"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RequestInfo] = []
        self.shown: list[RequestInfo] = []
        self.pending_only = False
        self.outcome = Text()
        self.ready_event = asyncio.Event()
        self._query: Query = parse_query("", _FILTER_KEYS)

    def compose(self) -> ComposeResult:
        """Filter, table, details of the highlighted request, status."""
        yield Header()
        with Horizontal(classes="filter-bar"):
            yield Label("Filter ", classes="filter-label")
            yield Input(placeholder="status:pending user:alice target:prod words…", id="filter")
        yield DataTable(id="requests", cursor_type="row", zebra_stripes=True)
        yield Static(id="request-detail", classes="detail")
        yield Static(id="status", classes="status-line")
        yield Footer()

    def on_mount(self) -> None:
        """Columns and first load."""
        context = context_of(self)
        self.title = "Access requests"
        self.sub_title = context.source.description
        table = self.query_one("#requests", DataTable)
        for key, label in (("id", "ID"), ("status", "Status"), ("user", "User"),
                           ("target", "Target"), ("approvals", "Appr."), ("created", "Created (UTC)"),
                           ("expires", "Until (UTC)"), ("reason", "Reason")):
            table.add_column(label, key=key)
        table.focus()
        self.load()

    @work(exclusive=True, group="requests-load")
    async def load(self) -> None:
        """Fetch the requests."""
        table = self.query_one("#requests", DataTable)
        table.loading = True
        try:
            self.requests = await context_of(self).source.requests()
        except TuiError as exc:
            self.outcome = Text(f"cannot list requests: {exc}", style="bold red")
            self.notify(str(exc), title="Requests", severity="error", timeout=10)
            self.show_status()
            return
        finally:
            table.loading = False
        self.populate()
        self.ready_event.set()

    def populate(self) -> None:
        """Fill the table (pending first, newest first), keeping the highlighted request."""
        table = self.query_one("#requests", DataTable)
        current = self.highlighted()
        shown = [r for r in self.requests if self._matches(r)]
        shown.sort(key=lambda r: (r.status != "pending", -r.id))
        self.shown = shown
        table.clear()
        for r in shown:
            until = r.pending_until if r.status == "pending" else r.expires_at
            table.add_row(
                Text(str(r.id), justify="right"),
                Text(r.status, style=_STATUS_STYLE.get(r.status, "")),
                Text(one_line(r.user, 24)),
                Text(one_line(r.target, 24)),
                Text(f"{len(r.approvers)}/{r.approvals_required}", justify="center"),
                Text(format_time(r.created_at)),
                Text(format_time(until)),
                Text(one_line(r.reason, 80)),
                key=str(r.id),
            )
        if current is not None and str(current.id) in table.rows:
            table.move_cursor(row=table.get_row_index(str(current.id)), animate=False)
        self.show_detail()
        self.show_status()

    def _matches(self, r: RequestInfo) -> bool:
        if self.pending_only and r.status != "pending":
            return False
        if self._query.empty:
            return True
        fields = {"user": r.user, "target": r.target, "status": r.status, "id": str(r.id),
                  "reviewer": " ".join(v.reviewer for v in r.reviews)}
        extra = " ".join([r.reason, *(v.comment for v in r.reviews), r.closed_reason or ""])
        return self._query.matches(fields, r.created_at, extra=extra)

    def highlighted(self) -> RequestInfo | None:
        """The request under the cursor."""
        table = self.query_one("#requests", DataTable)
        if not self.shown or not 0 <= table.cursor_row < len(self.shown):
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((r for r in self.shown if str(r.id) == key), None)

    def show_detail(self) -> None:
        """Reason, reviews with their comments, and how the request was closed."""
        r = self.highlighted()
        detail = self.query_one("#request-detail", Static)
        if r is None:
            detail.update(Text("no request selected", style="dim"))
            return
        text = Text()
        text.append(f"Request {r.id}", style="bold")
        text.append(f" by {one_line(r.user)} for {one_line(r.target)}, ")
        text.append(r.status, style=_STATUS_STYLE.get(r.status, ""))
        if r.duration is not None:
            text.append(f", {format_duration(r.duration)} window")
        text.append("\nReason: ", style="bold")
        text.append(printable(r.reason))
        for review in r.reviews:
            verb = "approved" if review.decision == "approve" else "denied"
            text.append(f"\n{format_time(review.at)}  {one_line(review.reviewer)} {verb}",
                        style="green" if review.decision == "approve" else "red")
            if review.comment:
                text.append(f": {one_line(review.comment, 300)}")
        if r.closed_by or r.closed_reason:
            text.append(f"\nClosed by {one_line(r.closed_by or '?')}: "
                        f"{one_line(r.closed_reason or '-', 300)}", style="yellow")
        identity = context_of(self).identity
        if r.status == "pending" and identity is not None and context_of(self).source.can_review \
                and not identity.may_review(r.target):
            text.append(f"\nYou hold no approving role for {one_line(r.target)}; "
                        "the bastion will refuse a review.", style="dim")
        detail.update(text)

    def show_status(self) -> None:
        """Counts and the outcome of the last action."""
        pending = sum(1 for r in self.requests if r.status == "pending")
        text = Text(f"{len(self.shown)} of {len(self.requests)} requests · {pending} pending")
        if self.pending_only:
            text.append(" · pending only")
        for problem in self._query.problems:
            text.append(f" · {problem}", style="yellow")
        if self.outcome:
            text.append(" · ")
            text.append_text(self.outcome)
        self.query_one("#status", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Follow the cursor in the detail pane."""
        self.show_detail()

    # -- actions ----------------------------------------------------------------------------

    def action_review(self, decision: Decision) -> None:
        """Ask for a comment (or reason), then send the review to the bastion."""
        context = context_of(self)
        r = self.highlighted()
        if r is None:
            return
        if not context.source.can_review:
            self.outcome = Text("read-only: reviews go through the bastion (bastion-tui --connect)",
                                style="yellow")
            self.show_status()
            return

        def reviewed(choice: ReviewChoice | None) -> None:
            if choice is not None:
                self.send_review(r, choice)

        self.app.push_screen(ReviewScreen(r, decision), reviewed)

    @work(exclusive=True, group="requests-review")
    async def send_review(self, request: RequestInfo, choice: ReviewChoice) -> None:
        """Send the review; show the bastion's answer, whatever it is."""
        self.outcome = Text(f"sending {choice.decision} for request {request.id}…", style="dim")
        self.show_status()
        try:
            updated = await context_of(self).source.review(request.id, choice.decision, choice.text)
        except TuiError as exc:
            self.outcome = Text(f"the bastion refused: {one_line(str(exc), 300)}", style="bold red")
            self.notify(one_line(str(exc), 300), title=f"Request {request.id}", severity="error",
                        timeout=10)
            self.show_status()
            return
        self.outcome = Text(f"request {updated.id} is now {updated.status} "
                            f"({len(updated.approvers)}/{updated.approvals_required} approvals)",
                            style="bold green")
        self.requests = [updated if r.id == updated.id else r for r in self.requests]
        self.populate()
        self.load()

    def action_pending_only(self) -> None:
        """Show only pending requests, or all again."""
        self.pending_only = not self.pending_only
        self.populate()

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
        self.set_focus(self.query_one("#requests", DataTable))

    def on_input_changed(self, event: Input.Changed) -> None:
        """Filter as the auditor types."""
        self._query = parse_query(event.value, _FILTER_KEYS)
        self.populate()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Back to the table."""
        self.set_focus(self.query_one("#requests", DataTable))
