"""A MySQL server's answer to one command, followed packet by packet, without I/O.

The relay passes the server's packets to the client as they came; this follows them to know
where the answer ends (OK or ERR; or column definitions, rows and the closing EOF or OK, again
for each result while the server says more results exist; COM_STMT_PREPARE's definitions), and
to log each statement with its status, row count, column names and first rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bastion.sql.scrub import scrub_message
from bastion.wire.gate import Checked
from bastion.wire.mysql_protocol import (
    MAX_PACKET,
    STATUS_CURSOR_EXISTS,
    STATUS_MORE_RESULTS,
    Column,
    ProtocolViolation,
    binary_row,
    build_err,
    build_text_row,
    column_definition,
    err_packet,
    ok_packet,
    read_lenenc_int,
    read_lenenc_str,
    text_row,
)
from bastion.wire.scrubbing import Scrubber
from bastion.wire.session import RECORDED_ROWS, Statement

__all__ = ["Answer", "Prepared"]


@dataclass
class Prepared:
    """A prepared statement as the relay knows it: what passed the gate, and its columns."""

    checked: Checked
    columns: list[Column] = field(default_factory=list)


@dataclass
class Answer:
    """The answer to one command, as far as it has come."""

    kind: str  # query, prepare, execute, fetch, fields, single, own
    deprecate_eof: bool
    statements: list[Checked] = field(default_factory=list)  # query: one per statement
    prepared: Prepared | None = None  # prepare, execute, fetch
    state: str = "start"
    left: int = 0  # column definitions (or prepare packets) still to come
    columns: list[Column] = field(default_factory=list)
    index: int = 0  # which statement of a multi-statement text the server is answering
    rows: int = 0
    current: Statement | None = None
    started: float = field(default_factory=time.perf_counter)
    error: str | None = None  # the last ERR's message
    statement_id: int | None = None  # prepare: the id the server gave the statement
    finished: list[Statement] = field(default_factory=list)  # to log
    # Which result columns are scrubbed on their way to the client (set by the relay's plan).
    # (kind, the statement's names — asked for only when needed —, columns) → the plan.
    plan: Callable[[str, Callable[[], frozenset[str]], list[Column]],
                   list[tuple[int, Scrubber]]] | None = None
    scrub: list[tuple[int, Scrubber]] = field(default_factory=list)
    names: frozenset[str] = frozenset()  # names kept in scrubbed error messages
    replacement: bytes | None = None  # what the client gets instead of the last packet
    max_rows: int | None = None  # rows of a result sent to the client (the target's max_rows)
    dropped: bool = False  # the last packet is a row past max_rows: not sent

    def __post_init__(self) -> None:
        if self.kind == "fetch" and self.prepared is not None:
            self.state, self.columns = "rows", self.prepared.columns
        elif self.kind == "fields":
            self.state = "fields"

    def statement(self) -> Statement | None:
        """The statement the server answers now (None past the last one the client sent)."""
        if self.current is None and self.kind in ("query", "execute", "fetch", "prepare"):
            if self.prepared is not None:
                checked: Checked | None = self.prepared.checked if self.index == 0 else None
            else:
                checked = self.statements[self.index] if self.index < len(self.statements) \
                    else None
            if checked is None:
                return None
            self.current = Statement(checked.redacted, checked.kind)
        return self.current

    def take(self) -> list[Statement]:
        """The statements finished since the last call, to log."""
        done, self.finished = self.finished, []
        return done

    def follow(self, p: bytes) -> bool:
        """Follow one packet's payload; True when it is the answer's last."""
        if not p:
            raise ProtocolViolation("an empty packet")
        first = p[0]
        if self.state == "start":
            if first == 0xFF:
                return self._error(p)
            if self.kind == "single":
                return True
            if self.kind == "prepare" and first == 0x00:
                return self._prepared(p)
            if first == 0x00:
                ok = ok_packet(p)
                return self._finish(affected=ok.affected, more=ok.status)
            if first == 0xFB:
                raise ProtocolViolation("a LOCAL INFILE request")
            count, _ = read_lenenc_int(p, 0)
            if not count:
                raise ProtocolViolation("a result with no columns")
            self.state, self.left, self.columns, self.rows = "columns", count, [], 0
            return False
        if self.state == "columns":
            return self._column(p)
        if self.state == "columns_eof":
            if ok_packet(p).status & STATUS_CURSOR_EXISTS and self.kind == "execute":
                return self._finish(cursor=True)
            self.state = "rows"
            return False
        if self.state == "prepare":
            self.left -= 1
            return self.left <= 0
        if self.state == "fields":
            return first in (0xFE, 0xFF) and len(p) < MAX_PACKET
        return self._row(p)

    def _column(self, p: bytes) -> bool:
        self.columns.append(column_definition(p))
        self.left -= 1
        if self.left == 0:
            st = self.statement()
            if st is not None:
                st.columns = [c.name for c in self.columns]
            if self.prepared is not None and self.kind == "execute":
                self.prepared.columns = self.columns
            self.scrub = self.plan(st.kind, self._statement_names, self.columns) \
                if self.plan is not None and st is not None else []
            self.state = "rows" if self.deprecate_eof else "columns_eof"
        return False

    def _row(self, p: bytes) -> bool:
        first = p[0]
        if first == 0xFE and len(p) < (MAX_PACKET if self.deprecate_eof else 9):
            status = ok_packet(p).status
            if self.kind == "execute" and status & STATUS_CURSOR_EXISTS and self.rows == 0:
                return self._finish(cursor=True)
            return self._finish(rows=self.rows, more=status)
        if first == 0xFF:
            return self._error(p)
        self.rows += 1
        st = self.statement()
        if self.max_rows is not None and self.rows > self.max_rows:
            self.dropped = True
            if st is not None:
                st.truncated = True
            return False
        if self.scrub and self.prepared is None:
            self.replacement = self._scrubbed(p)
        if st is not None and len(st.recorded) < RECORDED_ROWS:
            try:
                row = binary_row(p, self.columns) if self.prepared is not None \
                    else text_row(p, len(self.columns))
            except ProtocolViolation:
                row = ["(undecodable row)"]
            st.add_row(row)
        elif st is not None:
            st.truncated = True
        return False

    def _error(self, p: bytes) -> bool:
        """An ERR: its message scrubbed of values (as the console's), and the answer's end."""
        err = err_packet(p)
        message = scrub_message(err.message, self.names | self._statement_names())
        if message != err.message:
            self.replacement = build_err(err.code, err.state, message)
        return self._finish(error=message)

    def _statement_names(self) -> frozenset[str]:
        if self.prepared is not None:
            return self.prepared.checked.names
        return frozenset().union(*(c.names for c in self.statements))

    def _scrubbed(self, p: bytes) -> bytes | None:
        """A text row with its scrubbed columns, or None when nothing changed."""
        values: list[bytes | None] = []
        pos = 0
        for _ in range(len(self.columns)):
            value, pos = read_lenenc_str(p, pos)
            values.append(value)
        changed = False
        for i, scrub in self.scrub:
            value = values[i]
            if value is not None:
                new = scrub(value)
                if new != value:
                    values[i] = new
                    changed = True
        return build_text_row(values) if changed else None

    def _prepared(self, p: bytes) -> bool:
        """COM_STMT_PREPARE_OK: note the statement's id; count the definitions that follow."""
        if len(p) < 9:
            raise ProtocolViolation("a malformed COM_STMT_PREPARE_OK")
        self.statement_id = int.from_bytes(p[1:5], "little")
        columns, params = int.from_bytes(p[5:7], "little"), int.from_bytes(p[7:9], "little")
        eofs = 0 if self.deprecate_eof else (columns > 0) + (params > 0)
        self.state, self.left = "prepare", columns + params + eofs
        return self.left == 0

    def _finish(self, *, error: str | None = None, affected: int | None = None,
                rows: int | None = None, more: int = 0, cursor: bool = False) -> bool:
        """One statement's answer is complete; True when the command's answer is."""
        self.error = error
        st = self.statement()
        if st is not None and not (self.kind == "prepare" and error is None):
            st.duration_ms = (time.perf_counter() - self.started) * 1000
            verb = st.kind.upper() if st.kind and st.kind != "other" else "OK"
            if error is not None:
                st.error = error
            elif cursor:
                st.status = "CURSOR"
            elif rows is not None:
                st.status, st.rows = f"{'FETCH' if self.kind == 'fetch' else verb} {rows}", rows
            else:
                st.status, st.rows = f"{verb} {affected or 0}", affected or 0
            self.finished.append(st)
        self.current = None
        if error is None and more & STATUS_MORE_RESULTS:
            self.index += 1
            self.state, self.started = "start", time.perf_counter()
            return False
        return True
