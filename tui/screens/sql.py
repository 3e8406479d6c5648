"""A SQL session's statements: timing, rows, what was blocked, and the masked results as shown.

The payloads are whatever JSON the database proxy recorded; the known keys (`statement`,
`duration_ms`, `rows`, `blocked`, `error`, `columns`, `masked`, `truncated`) get their own
columns, and anything else is listed as key: value, so newer payloads still show.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static

from tui.models import SessionInfo
from tui.replay.index import SqlExchange
from tui.safe import one_line, printable

__all__ = ["SqlScreen", "outcome", "statement_text"]

_KNOWN: Final = frozenset({"statement", "sql", "duration_ms", "rows", "blocked", "error", "kind",
                           "status"})


def statement_text(payload: Mapping[str, Any]) -> str:
    """The statement of a payload (`statement`, or `sql`)."""
    value = payload.get("statement", payload.get("sql", ""))
    return value if isinstance(value, str) else json.dumps(value)


def outcome(payload: Mapping[str, Any]) -> Text:
    """ok / blocked: reason / error: message, styled."""
    if payload.get("blocked"):
        return Text(f"blocked: {one_line(str(payload['blocked']), 60)}", style="bold red")
    if payload.get("error"):
        return Text(f"error: {one_line(str(payload['error']), 60)}", style="yellow")
    status = payload.get("status")
    return Text(one_line(str(status), 30) if status else "ok", style="green")


def _number(value: Any, fmt: str = "{}") -> Text:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Text(fmt.format(value), justify="right")
    return Text("-", justify="right", style="dim")


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return one_line(value, 80)
    return one_line(json.dumps(value, ensure_ascii=False), 80)


class SqlScreen(Screen[None]):
    """Statements on top, the selected one's result (or payload) below."""

    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, session: SessionInfo, exchanges: Sequence[SqlExchange]) -> None:
        super().__init__()
        self.session = session
        self.exchanges = list(exchanges)

    def compose(self) -> ComposeResult:
        """The statements table and the result pane."""
        yield Header()
        yield DataTable(id="statements", cursor_type="row", zebra_stripes=True)
        with Vertical(id="result-pane"):
            yield Label("", id="result-title")
            yield DataTable(id="result", zebra_stripes=True)
            yield Static(id="payload")
        yield Footer()

    def on_mount(self) -> None:
        """Fill the statements table."""
        from tui.screens.replay import clock_text

        self.title = f"SQL · {one_line(self.session.user)} → {one_line(self.session.target)}"
        self.sub_title = f"session {one_line(self.session.id)}"
        table = self.query_one("#statements", DataTable)
        table.add_column("Time", key="t")
        table.add_column("ms", key="ms")
        table.add_column("Rows", key="rows")
        table.add_column("Outcome", key="outcome")
        table.add_column("Statement", key="statement")
        for i, exchange in enumerate(self.exchanges):
            p = exchange.statement
            rows = p.get("rows")
            if not isinstance(rows, int) and exchange.result is not None:
                rows = exchange.result.get("rowcount")
            table.add_row(
                Text(clock_text(exchange.t), style="dim"),
                _number(p.get("duration_ms"), "{:.1f}"),
                _number(rows),
                outcome(p),
                Text(one_line(statement_text(p), 200)),
                key=str(i),
            )
        table.focus()
        if self.exchanges:
            self.show_exchange(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Show the highlighted statement's result."""
        if event.data_table.id == "statements" and event.row_key.value is not None:
            self.show_exchange(int(event.row_key.value))

    def show_exchange(self, i: int) -> None:
        """Show one statement in full and its masked result."""
        exchange = self.exchanges[i]
        result = exchange.result or {}
        table = self.query_one("#result", DataTable)
        table.clear(columns=True)
        columns = result.get("columns")
        rows = result.get("rows")
        masked = result.get("masked") if isinstance(result.get("masked"), Mapping) else {}
        title = Text(printable(statement_text(exchange.statement)), style="bold")
        if isinstance(columns, list) and isinstance(rows, list):
            for c, name in enumerate(columns):
                label = one_line(str(name), 40)
                if isinstance(masked, Mapping) and name in masked:
                    label += f" [masked: {one_line(str(masked[name]), 12)}]"
                table.add_column(Text(label), key=f"c{c}")
            for row in rows:
                if isinstance(row, list):
                    cells = [_cell(v) for v in row][: len(columns)]
                    cells += [""] * (len(columns) - len(cells))
                    table.add_row(*[Text(c) for c in cells])
            shown = f"{len(rows)} row(s) as the user saw them"
            if result.get("truncated"):
                shown += " (truncated)"
            if isinstance(result.get("rowcount"), int):
                shown += f"; {result['rowcount']} in all"
            title.append(f"\n{shown}", style="dim")
            table.display = True
        else:
            table.display = False
        extra = {k: v for k, v in exchange.statement.items() if k not in _KNOWN}
        lines = [f"{one_line(str(k), 40)}: {_cell(v)}" for k, v in sorted(exchange.statement.items())
                 if k not in ("statement", "sql") and v is not None]
        if extra or not isinstance(columns, list):
            for k, v in sorted(result.items()):
                if k not in ("columns", "rows", "masked"):
                    lines.append(f"result {one_line(str(k), 40)}: {_cell(v)}")
        self.query_one("#result-title", Label).update(title)
        self.query_one("#payload", Static).update(Text("\n".join(lines), style="dim"))

    def action_back(self) -> None:
        """Back to the replay."""
        self.app.pop_screen()
