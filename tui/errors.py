"""Errors the TUI explains to the auditor (never a traceback).

TuiError                      base class; the message says what happened and what to do
├── KeyProblem                the auditor key cannot be loaded (missing, wrong type, passphrase)
│   └── PassphraseNeeded      the key is encrypted and no passphrase was given yet
├── SourceError               the sessions, requests or audit trail cannot be read
│   ├── BastionUnreachable    no SSH connection to the bastion (DNS, refused, timeout, host key)
│   ├── LoginRefused          the bastion refused the SSH key
│   └── CommandFailed         a control command failed; carries the bastion's own message
│       └── NotAnAuditor      the command is for auditors and the user has no `audit` role
└── RecordingProblem          a recording cannot be fetched, opened or decrypted with this key
"""

from __future__ import annotations

__all__ = [
    "BastionUnreachable",
    "CommandFailed",
    "KeyProblem",
    "LoginRefused",
    "NotAnAuditor",
    "PassphraseNeeded",
    "RecordingProblem",
    "SourceError",
    "TuiError",
]


class TuiError(Exception):
    """Base class of every error the TUI shows to its user."""


class KeyProblem(TuiError):
    """The auditor's private key cannot be used."""


class PassphraseNeeded(KeyProblem):
    """The auditor key is passphrase-protected."""


class SourceError(TuiError):
    """Data cannot be read from the bastion or the local store."""


class BastionUnreachable(SourceError):
    """The bastion cannot be reached over SSH."""


class LoginRefused(SourceError):
    """The bastion did not accept the SSH login."""


class CommandFailed(SourceError):
    """A control command failed; the message is the bastion's."""

    def __init__(self, message: str, kind: str = "", exit_status: int | None = None) -> None:
        self.kind = kind
        self.exit_status = exit_status
        super().__init__(message)


class NotAnAuditor(CommandFailed):
    """The user lacks the `audit` role the command needs."""


class RecordingProblem(TuiError):
    """A recording cannot be fetched, opened or decrypted."""
