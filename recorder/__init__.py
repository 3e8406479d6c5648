"""Session recordings: encrypted for auditors, signed by the bastion, seekable, crash-tolerant.

The server writes with `RecordingWriter`; auditors read with `RecordingReader` and their X25519
key; anyone can check integrity with `verify_recording` (no key needed). FORMAT.md describes the
file byte by byte. This package imports nothing from the rest of the project.
"""

from __future__ import annotations

from recorder.crypto import key_fingerprint
from recorder.errors import (
    CorruptRecording,
    KeyFileError,
    NoRecipients,
    NotARecipient,
    NotARecording,
    RecordingClosed,
    RecordingError,
    RecordingFailed,
)
from recorder.events import (
    Event,
    ExitEvent,
    FileDataEvent,
    InputEvent,
    KeyframeEvent,
    MarkerEvent,
    OutputEvent,
    ResizeEvent,
    SqlResultEvent,
    SqlStatementEvent,
)
from recorder.export import event_to_json, export_asciicast, export_jsonl
from recorder.format import FORMAT_VERSION, RecordingHeader, SessionKind
from recorder.keyframes import MAX_COLS, MAX_ROWS, Keyframe, emulated_size
from recorder.keys import (
    fingerprint,
    generate_auditor_key,
    generate_signing_key,
    load_auditor_private_key,
    load_auditor_public_key,
    load_signing_key,
    load_signing_public_key,
    parse_public_key_line,
    public_key_line,
    write_key_pair,
)
from recorder.reader import ChunkInfo, RecordingReader, SeekResult, read_header_unencrypted
from recorder.verify import SessionFacts, VerifyResult, VerifyStatus, verify_for_session, verify_recording
from recorder.writer import RECORDING_SUFFIX, RecordingWriter, WriterSettings

__all__ = [
    "FORMAT_VERSION",
    "MAX_COLS",
    "MAX_ROWS",
    "RECORDING_SUFFIX",
    "ChunkInfo",
    "CorruptRecording",
    "Event",
    "ExitEvent",
    "FileDataEvent",
    "InputEvent",
    "KeyFileError",
    "Keyframe",
    "KeyframeEvent",
    "MarkerEvent",
    "NoRecipients",
    "NotARecipient",
    "NotARecording",
    "OutputEvent",
    "RecordingClosed",
    "RecordingError",
    "RecordingFailed",
    "RecordingHeader",
    "RecordingReader",
    "RecordingWriter",
    "ResizeEvent",
    "SeekResult",
    "SessionFacts",
    "SessionKind",
    "SqlResultEvent",
    "SqlStatementEvent",
    "VerifyResult",
    "VerifyStatus",
    "WriterSettings",
    "emulated_size",
    "event_to_json",
    "export_asciicast",
    "export_jsonl",
    "fingerprint",
    "generate_auditor_key",
    "generate_signing_key",
    "key_fingerprint",
    "load_auditor_private_key",
    "load_auditor_public_key",
    "load_signing_key",
    "load_signing_public_key",
    "parse_public_key_line",
    "public_key_line",
    "read_header_unencrypted",
    "verify_for_session",
    "verify_recording",
    "write_key_pair",
]
