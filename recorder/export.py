"""Exports of decrypted recordings: asciicast v2 (for asciinema) and JSON lines."""

from __future__ import annotations

import base64
import codecs
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from recorder.events import (
    Event,
    ExitEvent,
    InputEvent,
    KeyframeEvent,
    MarkerEvent,
    OutputEvent,
    ResizeEvent,
    SqlResultEvent,
    SqlStatementEvent,
)
from recorder.format import format_time
from recorder.reader import RecordingReader

__all__ = ["event_to_json", "export_asciicast", "export_jsonl"]


@contextlib.contextmanager
def _text_out(out: IO[str] | str | Path) -> Iterator[IO[str]]:
    if isinstance(out, str | Path):
        with open(out, "w", encoding="utf-8", newline="\n") as f:
            yield f
    else:
        yield out


def _line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n"


def _sql_text(payload: Any) -> str:
    for key in ("sql", "statement", "query"):
        value = payload.get(key) if isinstance(payload, dict) else None
        if isinstance(value, str):
            return value
    return json.dumps(payload, ensure_ascii=False)


def export_asciicast(
    reader: RecordingReader,
    out: IO[str] | str | Path,
    *,
    include_input: bool = False,
    include_sql: bool = True,
) -> int:
    """Write the recording as asciicast v2; return the number of events written.

    Output becomes "o" events (bytes decoded as UTF-8 across event boundaries, invalid bytes
    replaced), input "i" events if asked, resizes "r" events, markers and the exit "m" events. SQL
    statements and results of database sessions are shown as output lines, since asciicast
    has no event type for them.
    """
    header = reader.header
    meta: dict[str, Any] = {
        "version": 2,
        "width": header.cols,
        "height": header.rows,
        "timestamp": int(header.start.timestamp()),
        "title": f"{header.user}@{header.target} ({header.kind.value}) {header.session_id}",
    }
    decoders = {
        "o": codecs.getincrementaldecoder("utf-8")("replace"),
        "i": codecs.getincrementaldecoder("utf-8")("replace"),
    }
    count = 0
    with _text_out(out) as f:
        f.write(_line(meta))

        def emit(t: float, code: str, data: str) -> None:
            nonlocal count
            if data or code not in ("o", "i"):
                f.write(_line([round(t, 6), code, data]))
                count += 1

        for event in reader.events():
            match event:
                case OutputEvent(t=t, data=data):
                    emit(t, "o", decoders["o"].decode(data))
                case InputEvent(t=t, data=data) if include_input:
                    emit(t, "i", decoders["i"].decode(data))
                case ResizeEvent(t=t, cols=cols, rows=rows):
                    emit(t, "r", f"{cols}x{rows}")
                case MarkerEvent(t=t, label=label):
                    emit(t, "m", label)
                case SqlStatementEvent(t=t, payload=payload) if include_sql:
                    text = _sql_text(payload).replace("\n", "\r\n")
                    emit(t, "o", f"\x1b[1m{text}\x1b[0m\r\n")
                case SqlResultEvent(t=t, payload=payload) if include_sql:
                    emit(t, "o", f"-- {json.dumps(payload, ensure_ascii=False)}\r\n")
                case ExitEvent(t=t, status=status, signal=sig):
                    emit(t, "m", f"exit: signal {sig}" if sig else f"exit: status {status}")
                case _:
                    pass
    return count


def event_to_json(event: Event) -> dict[str, Any]:
    """Return one event as a JSON object (bytes as exact base64 plus lossy UTF-8 text)."""
    obj: dict[str, Any] = {"t": round(event.t, 6)}
    match event:
        case OutputEvent(data=data) | InputEvent(data=data):
            obj["type"] = "output" if isinstance(event, OutputEvent) else "input"
            obj["b64"] = base64.b64encode(data).decode()
            obj["text"] = data.decode("utf-8", "replace")
        case ResizeEvent(cols=cols, rows=rows):
            obj.update(type="resize", cols=cols, rows=rows)
        case ExitEvent(status=status, signal=sig):
            obj.update(type="exit", status=status, signal=sig)
        case MarkerEvent(label=label):
            obj.update(type="marker", label=label)
        case SqlStatementEvent(payload=payload):
            obj.update(type="sql_statement", payload=payload)
        case SqlResultEvent(payload=payload):
            obj.update(type="sql_result", payload=payload)
        case KeyframeEvent(payload=payload):
            obj.update(type="keyframe", payload=payload)
    return obj


def export_jsonl(reader: RecordingReader, out: IO[str] | str | Path, *, keyframes: bool = False) -> int:
    """Write a header line then one JSON object per event; return the number of events."""
    header = reader.header
    count = 0
    with _text_out(out) as f:
        head = {
            "type": "header",
            "session_id": header.session_id,
            "user": header.user,
            "target": header.target,
            "kind": header.kind.value,
            "start": format_time(header.start),
            "cols": header.cols,
            "rows": header.rows,
            "metadata": header.metadata,
            "signer": header.signer_fingerprint,
            "recipients": list(header.recipient_fingerprints),
        }
        f.write(json.dumps(head, ensure_ascii=False) + "\n")
        for event in reader.events(keyframes=keyframes):
            f.write(json.dumps(event_to_json(event), ensure_ascii=False) + "\n")
            count += 1
        if reader.cut_off:
            # Said in the export too, so a reader of the JSON alone knows the end is missing.
            f.write(json.dumps({"type": "cut_off", "after_chunk": reader.last_chunk}) + "\n")
    return count
