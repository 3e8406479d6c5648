"""The records the bastion keeps: access requests, reviews, certificates, sessions, audit events.

All timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = [
    "AccessRequest",
    "AuditEvent",
    "Decision",
    "IdentityBinding",
    "IssuedCertificate",
    "Node",
    "QueryRecord",
    "RequestStatus",
    "Review",
    "SessionRecord",
    "SessionStatus",
    "utcnow",
]


def utcnow() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


class RequestStatus(StrEnum):
    """Where an access request stands."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    REVOKED = "revoked"
    EXPIRED = "expired"


class Decision(StrEnum):
    """What a reviewer decided."""

    APPROVE = "approve"
    DENY = "deny"


class SessionStatus(StrEnum):
    """Where a session through the bastion stands."""

    LIVE = "live"
    ENDED = "ended"
    ENDED_ABNORMALLY = "ended_abnormally"


@dataclass(frozen=True)
class Review:
    """One reviewer's decision on one request."""

    request_id: int
    reviewer: str
    decision: Decision
    comment: str
    at: datetime
    reviewer_key: str = ""  # fingerprint of the key the review was made with


@dataclass(frozen=True)
class AccessRequest:
    """A user's request for time-limited access to one target."""

    id: int
    user: str
    target: str
    reason: str
    duration: timedelta
    status: RequestStatus
    created_at: datetime
    pending_until: datetime
    approvals_required: int
    approved_at: datetime | None = None
    expires_at: datetime | None = None
    closed_by: str | None = None
    closed_reason: str | None = None
    reviews: tuple[Review, ...] = ()
    unmasked: bool = False
    requester_key: str = ""  # fingerprint of the key the request was made with

    def status_at(self, now: datetime) -> RequestStatus:
        """Return the status at `now`, counting a lapsed window or pending time as expired."""
        if self.status is RequestStatus.PENDING and now >= self.pending_until:
            return RequestStatus.EXPIRED
        if (
            self.status is RequestStatus.APPROVED
            and self.expires_at is not None
            and now >= self.expires_at
        ):
            return RequestStatus.EXPIRED
        return self.status

    @property
    def approvers(self) -> tuple[str, ...]:
        """Distinct reviewers who approved, in order of approval."""
        seen: list[str] = []
        for review in self.reviews:
            if review.decision is Decision.APPROVE and review.reviewer not in seen:
                seen.append(review.reviewer)
        return tuple(seen)


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate the user CA signed for an approved request."""

    serial: int
    request_id: int
    user: str
    key_fingerprint: str
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    issued_at: datetime


@dataclass(frozen=True)
class SessionRecord:
    """A login to a target through the bastion."""

    id: str
    user: str
    target: str
    kind: str
    request_id: int
    cert_serial: int
    client: str
    bastion_id: str
    started_at: datetime
    status: SessionStatus = SessionStatus.LIVE
    ended_at: datetime | None = None
    end_reason: str | None = None
    recording: str | None = None


@dataclass(frozen=True)
class Node:
    """One bastion of a cluster as the store knows it: its last heartbeat."""

    bastion_id: str
    address: str
    started_at: datetime
    heartbeat_at: datetime


# Not frozen, unlike the other records: one is made per relayed statement, and a frozen
# dataclass's __init__ costs 1.8 µs for these fields (0.16 µs without).
@dataclass(slots=True)
class QueryRecord:
    """One SQL statement in the masked query log: literals redacted, never a sensitive value."""

    session_id: str
    user: str
    target: str
    statement: str
    kind: str
    started_at: datetime
    duration_ms: float
    rows: int | None
    blocked: str | None = None
    error: str | None = None
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict."""
        return {
            "id": self.id, "session_id": self.session_id, "user": self.user,
            "target": self.target, "statement": self.statement, "kind": self.kind,
            "started_at": self.started_at.isoformat(), "duration_ms": round(self.duration_ms, 3),
            "rows": self.rows, "blocked": self.blocked, "error": self.error,
        }


@dataclass(frozen=True)
class AuditEvent:
    """One thing that happened, as the audit trail keeps it."""

    kind: str
    at: datetime
    actor: str | None = None
    target: str | None = None
    request_id: int | None = None
    session_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the event as a JSON-ready dict."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "actor": self.actor,
            "target": self.target,
            "request_id": self.request_id,
            "session_id": self.session_id,
            "details": self.details,
        }


@dataclass(frozen=True)
class IdentityBinding:
    """An SSH public key bound to a person who signed in through the identity provider.

    The tokens are sealed (encrypted by the bastion) and never shown; `checked_at` is the last
    time the provider confirmed the person.
    """

    key_fingerprint: str
    public_key: str  # the OpenSSH public key line
    user: str
    subject: str
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    amr: tuple[str, ...]
    acr: str | None
    mfa: bool
    bound_at: datetime
    expires_at: datetime
    checked_at: datetime
    sealed_tokens: str = field(default="", repr=False)

    def to_json(self) -> dict[str, Any]:
        """The binding as `identities --json` and `whoami --json` show it (no tokens)."""
        return {
            "user": self.user, "key": self.key_fingerprint, "subject": self.subject,
            "roles": list(self.roles), "groups": list(self.groups), "amr": list(self.amr),
            "acr": self.acr, "mfa": self.mfa, "bound_at": self.bound_at.isoformat(),
            "expires_at": self.expires_at.isoformat(), "checked_at": self.checked_at.isoformat(),
        }
