"""One pass over a recording for what the replay screen navigates by: commands, markers, SQL.

Runs in a worker thread with its own RecordingReader (a reader's file position is not shared
between threads). Output is counted, not kept; searching reads the output again on demand.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from recorder import (
    CorruptRecording,
    ExitEvent,
    InputEvent,
    MarkerEvent,
    OutputEvent,
    RecordingReader,
    ResizeEvent,
    SqlResultEvent,
    SqlStatementEvent,
)
from tui.safe import describe_input

__all__ = [
    "Command",
    "RecordingIndex",
    "SqlExchange",
    "TimelineEntry",
    "build_index",
    "search_output",
    "strip_escapes",
]

Progress = Callable[[int, int], None]
# Keystrokes further apart than this (seconds) start a new line in the input list.
TYPING_PAUSE: Final = 1.5
Cancelled = Callable[[], bool]

_ESCAPES: Final = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"          # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"     # DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]"                  # other escapes
    r"|[\x00-\x08\x0b-\x1f\x7f]"          # C0 controls except tab and newline
)


# Entering or leaving the alternate screen (less, vim, top starting or quitting): keys typed
# before it went to another program than the keys typed after, so they are separate lines.
_SCREEN_SWITCH: Final = re.compile(rb"\x1b\[\?(?:47|1047|1049)[hl]")


def strip_escapes(text: str) -> str:
    """Return terminal output without escape sequences and control characters."""
    return _ESCAPES.sub("", text)


@dataclass(frozen=True)
class Command:
    """A line the user typed, at the time its Enter was pressed."""

    t: float
    text: str


@dataclass(frozen=True)
class SqlExchange:
    """A SQL statement event and the result event that followed it, if any."""

    t: float
    statement: Mapping[str, Any]
    result: Mapping[str, Any] | None = None
    result_t: float | None = None


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the replay's side list: typed input, a marker, a resize or the exit."""

    t: float
    kind: str  # "input", "marker", "resize", "exit", "sql"
    text: str


@dataclass
class RecordingIndex:
    """What a pass over the whole recording found."""

    end: float = 0.0
    events: int = 0
    output_bytes: int = 0
    commands: list[Command] = field(default_factory=list)
    markers: list[MarkerEvent] = field(default_factory=list)
    entries: list[TimelineEntry] = field(default_factory=list)
    sql: list[SqlExchange] = field(default_factory=list)
    exit: ExitEvent | None = None
    damage: str | None = None
    damaged_chunk: int | None = None

    def next_command(self, t: float) -> Command | None:
        """Return the first command strictly after `t` (with a little slack for rounding)."""
        times = [c.t for c in self.commands]
        pos = bisect.bisect_right(times, t + 1e-6)
        return self.commands[pos] if pos < len(self.commands) else None

    def previous_command(self, t: float) -> Command | None:
        """Return the last command strictly before `t`."""
        times = [c.t for c in self.commands]
        pos = bisect.bisect_left(times, t - 1e-6)
        return self.commands[pos - 1] if pos > 0 else None

    def next_marker(self, t: float) -> MarkerEvent | None:
        """Return the first marker strictly after `t`."""
        return next((m for m in self.markers if m.t > t + 1e-6), None)

    def previous_marker(self, t: float) -> MarkerEvent | None:
        """Return the last marker strictly before `t`."""
        return next((m for m in reversed(self.markers) if m.t < t - 1e-6), None)


class _Typing:
    """Groups keystrokes into lines: up to each Enter, or up to a pause in typing.

    An entry is timed at its last keystroke (for a command: its Enter), where the output it
    caused begins; the text shows named keys (⏎, ⟨↑⟩, ^C) rather than their escape sequences.
    """

    def __init__(self, index: RecordingIndex) -> None:
        self.index = index
        self.typed = bytearray()
        self.last_t = 0.0

    def feed(self, event: InputEvent) -> None:
        """Add one input event."""
        if self.typed and event.t - self.last_t >= TYPING_PAUSE:
            self.flush()
        data = event.data
        while data:
            cut = max(data.rfind(b"\r"), data.rfind(b"\n"))
            if cut < 0:
                self.typed += data
                break
            self.typed += data[: cut + 1]
            self.last_t = event.t
            self.flush()
            data = data[cut + 1 :]
        self.last_t = event.t

    def flush(self) -> None:
        """End the current line."""
        if not self.typed:
            return
        text = describe_input(bytes(self.typed))
        self.index.entries.append(TimelineEntry(self.last_t, "input", text))
        if self.typed.endswith((b"\r", b"\n")):
            self.index.commands.append(Command(self.last_t, text))
        self.typed.clear()


def build_index(
    path: str | Path,
    identity: X25519PrivateKey,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> RecordingIndex:
    """Read every chunk once and collect commands, markers, SQL and the exit."""
    index = RecordingIndex()
    typing = _Typing(index)
    pending_sql: SqlStatementEvent | None = None
    with RecordingReader(path, identity) as reader:
        total = len(reader.chunks)
        if reader.chunks:
            index.end = reader.chunks[-1].t
        for info in reader.chunks:
            if cancelled is not None and cancelled():
                break
            try:
                events = reader.read_chunk(info.index)
            except CorruptRecording as exc:
                index.damage, index.damaged_chunk = str(exc), info.index
                break
            for event in events:
                index.events += 1
                index.end = max(index.end, event.t)
                if isinstance(event, OutputEvent):
                    index.output_bytes += len(event.data)
                    if _SCREEN_SWITCH.search(event.data):
                        typing.flush()
                elif isinstance(event, InputEvent):
                    typing.feed(event)
                elif isinstance(event, MarkerEvent):
                    index.markers.append(event)
                    index.entries.append(TimelineEntry(event.t, "marker", event.label))
                elif isinstance(event, ResizeEvent):
                    index.entries.append(TimelineEntry(event.t, "resize", f"{event.cols}x{event.rows}"))
                elif isinstance(event, ExitEvent):
                    index.exit = event
                    how = f"signal {event.signal}" if event.signal else f"status {event.status}"
                    index.entries.append(TimelineEntry(event.t, "exit", f"exit {how}"))
                elif isinstance(event, SqlStatementEvent):
                    if pending_sql is not None:
                        index.sql.append(SqlExchange(pending_sql.t, pending_sql.payload))
                    pending_sql = event
                    text = event.payload.get("statement") or event.payload.get("sql") or ""
                    index.entries.append(TimelineEntry(event.t, "sql", str(text)))
                elif isinstance(event, SqlResultEvent):
                    if pending_sql is not None:
                        index.sql.append(SqlExchange(pending_sql.t, pending_sql.payload,
                                                     event.payload, event.t))
                        pending_sql = None
                    else:
                        index.sql.append(SqlExchange(event.t, {}, event.payload, event.t))
            if progress is not None:
                progress(info.index + 1, total)
        if index.damage is None and reader.problem is not None:
            index.damage, index.damaged_chunk = str(reader.problem), reader.problem.chunk
    if pending_sql is not None:
        index.sql.append(SqlExchange(pending_sql.t, pending_sql.payload))
    typing.flush()
    index.entries.sort(key=lambda e: e.t)
    return index


def search_output(
    path: str | Path,
    identity: X25519PrivateKey,
    needle: str,
    after: float,
    cancelled: Cancelled | None = None,
) -> float | None:
    """Return the time of the first output after `after` that shows `needle` (case-insensitive).

    Escape sequences are removed before matching, and the end of each output event is carried
    into the next so that text split across writes is found.
    """
    needle = needle.lower()
    if not needle:
        return None
    carry = ""
    with RecordingReader(path, identity) as reader:
        times = [c.t for c in reader.chunks]
        start = max(bisect.bisect_right(times, after) - 1, 0)
        for info in reader.chunks[start:]:
            if cancelled is not None and cancelled():
                return None
            try:
                events = reader.read_chunk(info.index)
            except CorruptRecording:
                return None
            for event in events:
                if not isinstance(event, OutputEvent):
                    continue
                text = strip_escapes(event.data.decode("utf-8", "replace")).lower()
                if event.t > after and needle in carry + text:
                    return event.t
                carry = (carry + text)[-(len(needle) - 1):] if len(needle) > 1 else ""
    return None
