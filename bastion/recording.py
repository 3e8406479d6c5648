"""Opening a session's recording: encrypted for the configured auditors, signed by the bastion."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from bastion.config import RecordingsConfig
from bastion.errors import BastionError
from bastion.models import SessionRecord
from recorder import (
    KeyFileError,
    RecordingError,
    RecordingWriter,
    generate_signing_key,
    load_auditor_public_key,
    load_signing_key,
    write_key_pair,
)

__all__ = ["RecordingSetup", "RecordingUnavailable"]


class RecordingUnavailable(BastionError):
    """A session cannot be recorded, so it must not start (no recording, no session)."""


class RecordingSetup:
    """The keys and directory recordings need, loaded once at start and on reload."""

    def __init__(self, config: RecordingsConfig) -> None:
        self.directory = config.dir
        self.recipients: list[X25519PublicKey] = []
        for path in config.auditor_keys:
            try:
                self.recipients.append(load_auditor_public_key(path))
            except KeyFileError as exc:
                raise BastionError(f"recordings.auditor_keys: {exc}") from None
        self.signing_key = _signing_key(config.signing_key)

    def open(self, session: SessionRecord, cols: int, rows: int, term: str,
             command: str | None = None) -> RecordingWriter:
        """Start the recording of a session, or raise RecordingUnavailable saying why."""
        if not self.recipients:
            raise RecordingUnavailable("no auditor key is configured (recordings.auditor_keys)")
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            return RecordingWriter(
                self.directory,
                session_id=session.id,
                user=session.user,
                target=session.target,
                kind=session.kind,
                recipients=self.recipients,
                signing_key=self.signing_key,
                cols=max(1, min(cols or 80, 0xFFFF)),
                rows=max(1, min(rows or 24, 0xFFFF)),
                metadata={"request_id": session.request_id, "client": session.client,
                          "bastion_id": session.bastion_id, "term": term,
                          # In the sealed, signed header: what the session ran (exec mode).
                          "command": command},
                start=session.started_at,
            )
        except (RecordingError, OSError) as exc:
            raise RecordingUnavailable(f"the recording cannot be written: {exc}") from None


def _signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the bastion's recording signing key, creating it on first start."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_key_pair(path, generate_signing_key(), comment="bastion recording signer")
    try:
        return load_signing_key(path)
    except KeyFileError as exc:
        raise BastionError(f"recordings.signing_key: {exc}") from None


