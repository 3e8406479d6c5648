"""The PostgreSQL relay's view of what it forwarded and what came back, without I/O: the
statements and portals it knows, the message whose response it waits for, and what it does to
result rows and messages on their way to the client (record the first rows, scrub computed
values and server text, scrub errors and notices)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bastion.sql.scrub import scrub_message
from bastion.wire.gate import Checked
from bastion.wire.pg_protocol import build_data_row, build_error, error_fields, parse_data_row
from bastion.wire.scrubbing import Scrubber, computed_scrubber, scrub_binary_integer
from bastion.wire.session import RECORDED_ROWS, Statement

__all__ = ["Column", "Op", "Prepared", "copy_line", "record_row", "scrub_plan", "scrubbed_message",
           "scrubbed_row"]

TEXT_TYPES = frozenset({25, 1043, 1042, 19, 705, 114})  # text, varchar, bpchar, name, unknown, json
INTEGER_TYPES = {20: 8, 21: 2, 23: 4}  # int8, int2, int4: their sizes in binary format
Column = tuple[str, int, int, int]  # name, table OID (0: computed), type OID, format


@dataclass(slots=True)
class Prepared:
    """A named (or unnamed) statement or portal, as the relay knows it."""

    checked: Checked | None
    columns: list[Column] | None = None  # from Describe
    formats: list[int] = field(default_factory=list)  # portals: the result formats Bind asked
    sent: int = 0  # portals: rows sent so far, over every Execute (max_rows counts them all)
    noticed: bool = False  # portals: the client was told max_rows cut it


@dataclass(slots=True)
class Op:
    """One message forwarded to the server whose response the relay waits for (three or four
    per pgbench transaction: slotted, and its empty defaults are shared tuples, not new lists)."""

    kind: str  # Q, P, B, D, E, C, S (the client message's tag); F is sent as Q
    statements: Sequence[Checked] = ()  # Q: the statements it runs
    target: tuple[str, str] | None = None  # D: what it describes
    portal: Prepared | None = None  # E: what it executes
    swallow: bool = False  # the bastion's own (lookup naming): the client never sees it
    refusal: bytes | None = None  # the bastion's error, in place of the server's
    current: Statement | None = None
    formats: Sequence[int] = ()  # per result column: 0 text, 1 binary
    scrub: Sequence[tuple[int, Scrubber]] = ()  # columns scrubbed per row
    started: float = 0.0
    index: int = 0  # Q: which of its statements the server is answering
    sent: int = 0  # Q: rows of the current result so far
    noticed: bool = False
    # A statement or portal name as it was before this message (put back if the server skips
    # or rejects it): (which dictionary, name, the entry before).
    restore: tuple[dict[str, Prepared], str, Prepared | None] | None = None
    names: frozenset[str] = frozenset()  # statement and portal names it gives (kept in errors)

    def known_names(self) -> frozenset[str]:
        """The names its statements use (kept when messages and plans are scrubbed)."""
        if self.statements:
            return frozenset().union(*(c.names for c in self.statements))
        return self.portal.checked.names if self.portal and self.portal.checked else frozenset()

    def statement(self) -> Statement:
        """The statement the server is answering now (started on its first message)."""
        if self.current is None:
            checked: Checked | None
            if self.kind == "Q":
                checked = self.statements[self.index] if self.index < len(self.statements) \
                    else None
            else:
                checked = self.portal.checked if self.portal else None
            self.current = Statement(checked.redacted if checked else "(unknown)",
                                     checked.kind if checked else "other")
            if self.kind == "E" and self.portal is not None and self.portal.columns:
                self.current.columns = [c[0] for c in self.portal.columns]
                codes = self.portal.formats
                self.formats = [codes[0] if len(codes) == 1 else codes[i] if i < len(codes)
                                else 0 for i in range(len(self.portal.columns))]
            if self.kind == "Q":
                self.started = time.perf_counter()
        return self.current


def scrub_plan(op: Op, columns: list[Column], masked: bool) -> list[tuple[int, Scrubber]]:
    """Which result columns are scrubbed on their way to the client, as the console does:
    plans and SHOW output are server text (values quoted in them go); computed values of a
    masked grant pass the content detectors. Columns read from a table or view pass as they
    are (the database masked them)."""
    scrub = computed_scrubber(op.statement().kind, op.known_names, masked)
    if scrub is None:
        return []
    plan: list[tuple[int, Scrubber]] = []
    for i, (_, table, type_oid, _) in enumerate(columns):
        if table:
            continue
        binary = i < len(op.formats) and op.formats[i] == 1
        if not binary or type_oid in TEXT_TYPES:
            plan.append((i, scrub))
        elif type_oid in INTEGER_TYPES:
            plan.append((i, scrub_binary_integer))
    return plan


def scrubbed_row(op: Op, payload: bytes | memoryview) -> bytes | None:
    """A DataRow with its scrubbed columns, or None when scrubbing changed nothing."""
    values = parse_data_row(payload)
    changed = False
    for i, scrub in op.scrub:
        value = values[i] if i < len(values) else None
        if value is not None:
            new = scrub(value)
            if new != value:
                values[i] = new
                changed = True
    return build_data_row(values) if changed else None


def record_row(op: Op, payload: bytes | memoryview) -> None:
    """Keep a DataRow's values as text for the recording."""
    formats = op.formats
    row = []
    for i, value in enumerate(parse_data_row(payload)):
        if value is None:
            row.append("NULL")
        elif i < len(formats) and formats[i] == 1:
            row.append("\\x" + value.hex())
        else:
            row.append(value.decode("utf-8", "replace"))
    op.statement().add_row(row)


def copy_line(op: Op, payload: bytes | memoryview) -> None:
    """Keep a line of COPY … TO STDOUT for the recording (the first RECORDED_ROWS)."""
    if len(op.statement().recorded) < RECORDED_ROWS:
        op.statement().add_row([bytes(payload).decode("utf-8", "replace").rstrip("\n")])


def scrubbed_message(payload: bytes | memoryview, tag: bytes, op: Op | None) -> bytes:
    """An error or notice with values taken out of its texts (as the console's)."""
    names = op.known_names() | op.names if op is not None else frozenset()
    fields = [(code, scrub_message(value, names) if code in "MDHWpq" else value)
              for code, value in error_fields(payload)]
    if op is not None and op.current is not None:
        op.current.error = next((v for c, v in fields if c == "M"), "error")
    return build_error(fields, tag)
