"""The integrity verdict of a recording, as the lists and the replay show it.

Every recording the TUI opens is verified first (signatures, hash chain, completeness; no key
needed). A cut-off or tampered recording is labelled so wherever it appears; a live session's
recording is expected to lack its final signature and is labelled "in progress" instead.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recorder import SessionFacts, VerifyResult, VerifyStatus, verify_for_session, verify_recording
from tui.models import SessionInfo

__all__ = ["Integrity", "IntegrityCache", "Verdict", "check_recording"]


class Verdict(StrEnum):
    """What is known about a session's recording."""

    INTACT = "intact"
    IN_PROGRESS = "in_progress"
    CUT_OFF = "cut_off"
    TAMPERED = "tampered"
    MISSING = "missing"
    NONE = "none"
    UNCHECKED = "unchecked"


_LABELS = {
    Verdict.INTACT: "intact",
    Verdict.IN_PROGRESS: "recording",
    Verdict.CUT_OFF: "CUT OFF",
    Verdict.TAMPERED: "TAMPERED",
    Verdict.MISSING: "missing",
    Verdict.NONE: "none",
    Verdict.UNCHECKED: "?",
}
_STYLES = {
    Verdict.INTACT: "green",
    Verdict.IN_PROGRESS: "cyan",
    Verdict.CUT_OFF: "bold black on yellow",
    Verdict.TAMPERED: "bold white on red",
    Verdict.MISSING: "bold red",
    Verdict.NONE: "dim",
    Verdict.UNCHECKED: "dim",
}


@dataclass(frozen=True)
class Integrity:
    """A verdict with the verifier's explanation."""

    verdict: Verdict
    message: str = ""
    signer: str | None = None
    pinned: bool = False  # the signer was checked against the bastion's known key
    chunks: int = 0
    signed_chunks: int = 0

    @property
    def label(self) -> str:
        """A short word for the sessions list."""
        return _LABELS[self.verdict]

    @property
    def style(self) -> str:
        """The Rich style the label is shown in."""
        return _STYLES[self.verdict]

    @property
    def trustworthy(self) -> bool:
        """Whether the content may be presented as complete and unaltered."""
        return self.verdict is Verdict.INTACT

    def banner(self) -> str:
        """The sentence the replay screen shows above the terminal."""
        if self.verdict is Verdict.INTACT:
            who = f"signed by {self.signer}" if self.signer else "signed"
            pin = "" if self.pinned else " (signer not pinned: key named in the file)"
            return f"✔ Intact: {self.chunks} chunks {who}{pin}"
        if self.verdict is Verdict.IN_PROGRESS:
            return (f"● Live session: recording in progress ({self.signed_chunks} of {self.chunks} "
                    "chunks signed so far)")
        if self.verdict is Verdict.CUT_OFF:
            return f"⚠ CUT OFF: {self.message}. The end of the session is missing."
        if self.verdict is Verdict.TAMPERED:
            return f"✖ TAMPERED: {self.message}. Do not trust what follows."
        if self.verdict is Verdict.MISSING:
            return f"✖ Recording missing: {self.message}"
        if self.verdict is Verdict.NONE:
            return "No recording for this session"
        return "Not verified yet"

    @classmethod
    def from_result(cls, result: VerifyResult, *, live: bool, pinned: bool) -> Integrity:
        """Translate the recorder's verdict (a live session is not yet closed)."""
        if result.status is VerifyStatus.INTACT:
            verdict = Verdict.INTACT
        elif result.status is VerifyStatus.CUT_OFF:
            verdict = Verdict.IN_PROGRESS if live else Verdict.CUT_OFF
        else:
            verdict = Verdict.TAMPERED
        return cls(verdict, result.message, result.signer, pinned, result.chunks, result.signed_chunks)


def facts_of(session: SessionInfo, *, live: bool | None = None) -> SessionFacts:
    """What the session list says of a session, to compare its recording with."""
    status = "live" if live else session.status
    return SessionFacts(session.id, session.user, session.target, status, session.started_at,
                        session.end_reason)


def check_recording(path: str | Path, signer: Ed25519PublicKey | None, *, live: bool = False,
                    session: SessionFacts | None = None) -> Integrity:
    """Verify a recording file (blocking: call it from a worker thread); with `session`, also
    that the file is that session's and, if cut off, that the session did not end normally."""
    try:
        result = (verify_for_session(path, signer, session) if session is not None
                  else verify_recording(path, signer))
    except FileNotFoundError:
        return Integrity(Verdict.MISSING, f"no file {path}")
    except OSError as exc:
        return Integrity(Verdict.MISSING, f"cannot read {path}: {exc.strerror}")
    return Integrity.from_result(result, live=live, pinned=signer is not None)


class IntegrityCache:
    """Verdicts by session id, remembered with the file's size and time (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple[int, int] | None, Integrity]] = {}

    @staticmethod
    def _stamp(path: Path | None) -> tuple[int, int] | None:
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns)

    def get(self, session_id: str, path: Path | None = None) -> Integrity | None:
        """Return the remembered verdict (None if unknown or the file changed since)."""
        with self._lock:
            entry = self._entries.get(session_id)
        if entry is None:
            return None
        if path is not None and entry[0] is not None and entry[0] != self._stamp(path):
            return None
        return entry[1]

    def put(self, session_id: str, integrity: Integrity, path: Path | None = None) -> None:
        """Remember a verdict."""
        stamp = self._stamp(path)
        with self._lock:
            self._entries[session_id] = (stamp, integrity)

    def mark_damaged(self, session_id: str, message: str) -> Integrity:
        """Record that reading found damage the verifier did not (e.g. a chunk fails to decrypt)."""
        integrity = Integrity(Verdict.TAMPERED, message)
        with self._lock:
            self._entries[session_id] = (None, integrity)
        return integrity

    def known(self) -> dict[str, Integrity]:
        """Return every remembered verdict."""
        with self._lock:
            return {key: value for key, (_, value) in self._entries.items()}
