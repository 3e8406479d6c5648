"""Offline forensics: the state store and the recordings directory, read directly.

Nothing goes through the bastion, so nothing can be approved from here (the bastion enforces
the approval rules; use `--connect`). Recordings are read where the store says they are, or in
the configured directory when the files were copied elsewhere.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.config import BastionConfig, load_config
from bastion.errors import BastionError
from bastion.models import AccessRequest, AuditEvent, SessionRecord, utcnow
from bastion.store import Store, open_store
from recorder import RECORDING_SUFFIX, RecordingError, load_signing_public_key
from tui.errors import CommandFailed, RecordingProblem, SourceError
from tui.models import AuditInfo, Identity, RequestInfo, ReviewInfo, SessionInfo
from tui.sources.base import DataSource, Decision, FetchProgress

__all__ = ["LocalSource", "request_info", "session_info"]

Clock = Callable[[], datetime]


def session_info(s: SessionRecord) -> SessionInfo:
    """Convert a stored session."""
    return SessionInfo(
        id=s.id, user=s.user, target=s.target, kind=s.kind, request_id=s.request_id,
        status=s.status.value, started_at=s.started_at, ended_at=s.ended_at,
        end_reason=s.end_reason, client=s.client, recording=s.recording,
    )


def request_info(r: AccessRequest, now: datetime) -> RequestInfo:
    """Convert a stored request, with its status at `now`."""
    return RequestInfo(
        id=r.id, user=r.user, target=r.target, reason=r.reason, status=r.status_at(now).value,
        created_at=r.created_at, expires_at=r.expires_at, pending_until=r.pending_until,
        duration=int(r.duration.total_seconds()), approvals_required=r.approvals_required,
        approvers=r.approvers,
        reviews=tuple(ReviewInfo(v.reviewer, v.decision.value, v.comment, v.at) for v in r.reviews),
        closed_by=r.closed_by, closed_reason=r.closed_reason,
    )


def audit_info(e: AuditEvent) -> AuditInfo:
    """Convert a stored audit event."""
    return AuditInfo(id=e.id, at=e.at, kind=e.kind, actor=e.actor, target=e.target,
                     request_id=e.request_id, session_id=e.session_id, details=e.details)


class LocalSource(DataSource):
    """The store and recordings named by a bastion config file."""

    can_review = False
    files_local = True

    def __init__(
        self, config_path: str | Path, *, clock: Clock = utcnow, session_limit: int = 100_000
    ) -> None:
        self.config_path = Path(config_path)
        self.description = f"local: {self.config_path}"
        self._clock = clock
        self._session_limit = session_limit
        self._store: Store | None = None
        self._config: BastionConfig | None = None
        self._signer: Ed25519PublicKey | None = None

    @property
    def config(self) -> BastionConfig:
        """The loaded config (after `open`)."""
        if self._config is None:
            raise SourceError("the source is not open")
        return self._config

    async def open(self) -> Identity:
        """Load the config and open its state store (never creating one)."""
        try:
            self._config = await asyncio.to_thread(load_config, self.config_path)
        except BastionError as exc:
            raise SourceError(f"cannot use the config: {exc}") from None
        except OSError as exc:
            raise SourceError(f"cannot read {self.config_path}: {exc.strerror}") from None
        url = self._config.server.state_store
        if url.startswith("sqlite:///"):
            db = Path(url.removeprefix("sqlite:///"))
            if not await asyncio.to_thread(db.is_file):
                raise SourceError(f"no state store at {db} (server.state_store in {self.config_path})")
        try:
            self._store = await open_store(url)
        except BastionError as exc:
            raise SourceError(f"cannot open the state store: {exc}") from None
        pub = Path(f"{self._config.recordings.signing_key}.pub")
        try:
            self._signer = await asyncio.to_thread(load_signing_public_key, pub)
        except (RecordingError, OSError):
            self._signer = None  # verification then names the key found in each file
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "local"
        return Identity(user=user, roles=("local files",), auditor=True, where=self.description)

    async def close(self) -> None:
        """Close the store."""
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    def _open_store(self) -> Store:
        if self._store is None:
            raise SourceError("the store is not open")
        return self._store

    async def sessions(self) -> list[SessionInfo]:
        """Return every session in the store, newest first."""
        try:
            records = await self._open_store().list_sessions(limit=self._session_limit)
        except BastionError as exc:
            raise SourceError(f"cannot read sessions: {exc}") from None
        return [session_info(s) for s in records]

    async def requests(self) -> list[RequestInfo]:
        """Return requests, newest first."""
        try:
            records = await self._open_store().list_requests(limit=10_000)
        except BastionError as exc:
            raise SourceError(f"cannot read requests: {exc}") from None
        now = self._clock()
        return [request_info(r, now) for r in records]

    async def audit(self, *, kind: str | None = None, limit: int = 1000) -> list[AuditInfo]:
        """Return audit events, newest first."""
        try:
            events = await self._open_store().list_audit(kind=kind, limit=limit)
        except BastionError as exc:
            raise SourceError(f"cannot read the audit trail: {exc}") from None
        return [audit_info(e) for e in events]

    async def review(self, request_id: int, decision: Decision, text: str) -> RequestInfo:
        """Refuse: only the bastion applies the approval rules."""
        raise CommandFailed(
            "reviews go through the bastion, which enforces who may approve: run "
            "bastion-tui --connect access@HOST --key KEY (or ssh access@HOST "
            f"{decision} {request_id})"
        )

    async def fetch_recording(self, session: SessionInfo, progress: FetchProgress | None = None) -> Path:
        """Return the recording file on disk."""
        candidates = []
        if session.recording:
            candidates.append(Path(session.recording))
        candidates.append(self.config.recordings.dir / f"{session.id}{RECORDING_SUFFIX}")
        for path in candidates:
            if await asyncio.to_thread(path.is_file):
                return path
        if not session.recording:
            raise RecordingProblem(f"session {session.id} has no recording")
        raise RecordingProblem(f"the recording of session {session.id} is missing: no file "
                               + " or ".join(str(p) for p in candidates))

    def local_recording(self, session: SessionInfo) -> Path | None:
        """The recording file on disk, if there is one (blocking)."""
        if not session.recording:
            return None
        for path in (Path(session.recording),
                     self.config.recordings.dir / f"{session.id}{RECORDING_SUFFIX}"):
            if path.is_file():
                return path
        return None

    def signer(self) -> Ed25519PublicKey | None:
        """The bastion's signing key from `recordings.signing_key` + `.pub`, if readable."""
        return self._signer
