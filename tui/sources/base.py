"""The one interface both data sources offer the screens."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tui.models import AuditInfo, Identity, RequestInfo, SessionInfo

__all__ = ["DataSource", "Decision", "FetchProgress"]

Decision = Literal["approve", "deny"]
FetchProgress = Callable[[int], None]


class DataSource(ABC):
    """Sessions, requests, the audit trail and recording files, from the bastion or from disk.

    Methods raise `tui.errors.SourceError` (or `RecordingProblem`) with a message for the user.
    """

    #: a short description for the title bar ("carol@bastion:2222", "local: /etc/bastion.toml")
    description: str = ""
    #: whether approve/deny can be attempted (the bastion still decides)
    can_review: bool = False
    #: whether recordings are files on this machine (verified in the background)
    files_local: bool = False
    #: seconds between refreshes of a list that shows live sessions
    refresh_interval: float = 5.0

    @abstractmethod
    async def open(self) -> Identity:
        """Connect or open the store; return who the TUI works as."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and temporary files."""

    @abstractmethod
    async def sessions(self) -> list[SessionInfo]:
        """Return sessions, newest first."""

    @abstractmethod
    async def requests(self) -> list[RequestInfo]:
        """Return access requests the user may see, newest first."""

    @abstractmethod
    async def audit(self, *, kind: str | None = None, limit: int = 1000) -> list[AuditInfo]:
        """Return audit events, newest first; `kind` is a prefix such as "login."."""

    @abstractmethod
    async def review(self, request_id: int, decision: Decision, text: str) -> RequestInfo:
        """Approve (with an optional comment) or deny (with a reason) a request."""

    @abstractmethod
    async def fetch_recording(self, session: SessionInfo, progress: FetchProgress | None = None) -> Path:
        """Return a local path of the session's (still encrypted) recording."""

    def local_recording(self, session: SessionInfo) -> Path | None:
        """The recording file when it is on this machine already (blocking; None if not)."""
        return None

    def signer(self) -> Ed25519PublicKey | None:
        """The bastion's recording signing key when known, to pin who signed."""
        return None
