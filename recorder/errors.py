"""Errors raised by the recorder package.

RecordingError                 base class; every error below is one
├── RecordingFailed            the writer could not write (disk full, permission, missing directory):
│                              the session must end ("no recording, no session")
├── RecordingClosed            a write after `close()` (a programming error of the caller)
├── NoRecipients               a recording was started without any auditor public key
├── CorruptRecording           a file is damaged or tampered with (not a recording, bad frame,
│   │                          failed authentication); carries the chunk index when known
│   └── NotARecording          the file does not start with the recording magic
├── NotARecipient              the given auditor key is not among the recording's recipients
└── KeyFileError               a key file is missing, malformed, of the wrong type, or its
                               passphrase is missing or wrong
"""

from __future__ import annotations

__all__ = [
    "CorruptRecording",
    "KeyFileError",
    "NoRecipients",
    "NotARecipient",
    "NotARecording",
    "RecordingClosed",
    "RecordingError",
    "RecordingFailed",
]


class RecordingError(Exception):
    """Base class of every error the recorder raises."""


class RecordingFailed(RecordingError):
    """Writing a recording failed; the session it records must end."""


class RecordingClosed(RecordingError):
    """The recording was already closed."""


class NoRecipients(RecordingError):
    """A recording needs at least one auditor public key."""


class CorruptRecording(RecordingError):
    """A recording file is damaged or was tampered with."""

    def __init__(self, message: str, chunk: int | None = None) -> None:
        self.chunk = chunk
        super().__init__(message)


class NotARecording(CorruptRecording):
    """The file is not a session recording at all."""


class NotARecipient(RecordingError):
    """The auditor key cannot decrypt this recording."""

    def __init__(self, message: str, recipients: tuple[str, ...] = ()) -> None:
        self.recipients = recipients
        super().__init__(message)


class KeyFileError(RecordingError):
    """A key file cannot be used."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")
