"""What the screens show, the same whichever source it came from (JSON over SSH or the store).

Parsing is strict about types and lenient about missing keys: a newer bastion may add fields,
an older one may lack some; nothing here trusts a value to be printable (see `tui.safe`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "AuditInfo",
    "Identity",
    "RequestInfo",
    "ReviewInfo",
    "SessionInfo",
    "format_duration",
    "format_time",
    "parse_time",
]


def parse_time(value: Any) -> datetime | None:
    """Parse an ISO 8601 timestamp (naive ones are UTC); None for anything else."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime | None, seconds: bool = False) -> str:
    """Return a UTC time as `YYYY-MM-DD HH:MM` (with `:SS` if asked), or "-"."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def format_duration(seconds: float | None) -> str:
    """Return a duration as `1h02m`, `4m05s` or `12s`; "-" when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 24:
        return f"{hours // 24}d{hours % 24:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _str(obj: Mapping[str, Any], key: str, default: str = "") -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else default


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class SessionInfo:
    """A session through the bastion (`sessions --json`, or the store's SessionRecord)."""

    id: str
    user: str
    target: str
    kind: str
    request_id: int | None
    status: str  # live, ended, ended_abnormally
    started_at: datetime | None
    ended_at: datetime | None = None
    end_reason: str | None = None
    client: str = ""
    recording: str | None = None  # a path on the bastion (remote) or on disk (local)

    @property
    def live(self) -> bool:
        """Whether the session is still running."""
        return self.status == "live"

    def duration(self, now: datetime) -> float | None:
        """Seconds from start to end (to `now` while live)."""
        if self.started_at is None:
            return None
        end = self.ended_at or (now if self.live else None)
        return None if end is None else max((end - self.started_at).total_seconds(), 0.0)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SessionInfo:
        """Parse one entry of `sessions --json`."""
        return cls(
            id=_str(obj, "id"), user=_str(obj, "user"), target=_str(obj, "target"),
            kind=_str(obj, "kind", "ssh"), request_id=_opt_int(obj, "request_id"),
            status=_str(obj, "status", "ended"), started_at=parse_time(obj.get("started_at")),
            ended_at=parse_time(obj.get("ended_at")), end_reason=_opt_str(obj, "end_reason"),
            client=_str(obj, "client"), recording=_opt_str(obj, "recording"),
        )


@dataclass(frozen=True)
class ReviewInfo:
    """One reviewer's decision on a request."""

    reviewer: str
    decision: str
    comment: str
    at: datetime | None


@dataclass(frozen=True)
class RequestInfo:
    """An access request (`requests --all --json`, or the store's AccessRequest)."""

    id: int
    user: str
    target: str
    reason: str
    status: str  # pending, approved, denied, revoked, expired
    created_at: datetime | None
    expires_at: datetime | None = None
    pending_until: datetime | None = None
    duration: int | None = None
    approvals_required: int = 1
    approvers: tuple[str, ...] = ()
    reviews: tuple[ReviewInfo, ...] = ()
    closed_by: str | None = None
    closed_reason: str | None = None

    @property
    def deny_reasons(self) -> tuple[str, ...]:
        """The comments of the reviews that denied the request."""
        return tuple(r.comment for r in self.reviews if r.decision == "deny" and r.comment)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RequestInfo:
        """Parse one entry of `requests --json`."""
        reviews = []
        for review in obj.get("reviews") or []:
            if isinstance(review, Mapping):
                reviews.append(ReviewInfo(_str(review, "reviewer"), _str(review, "decision"),
                                          _str(review, "comment"), parse_time(review.get("at"))))
        approvers = obj.get("approvers") or []
        return cls(
            id=_opt_int(obj, "id") or 0, user=_str(obj, "user"), target=_str(obj, "target"),
            reason=_str(obj, "reason"), status=_str(obj, "status", "pending"),
            created_at=parse_time(obj.get("created_at")),
            expires_at=parse_time(obj.get("expires_at")),
            pending_until=parse_time(obj.get("pending_until")),
            duration=_opt_int(obj, "duration"),
            approvals_required=_opt_int(obj, "approvals_required") or 0,
            approvers=tuple(a for a in approvers if isinstance(a, str)),
            reviews=tuple(reviews), closed_by=_opt_str(obj, "closed_by"),
            closed_reason=_opt_str(obj, "closed_reason"),
        )


@dataclass(frozen=True)
class AuditInfo:
    """One audit trail event."""

    id: int | None
    at: datetime | None
    kind: str
    actor: str | None = None
    target: str | None = None
    request_id: int | None = None
    session_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> AuditInfo:
        """Parse one entry of `audit --json`."""
        details = obj.get("details")
        return cls(
            id=_opt_int(obj, "id"), at=parse_time(obj.get("at")), kind=_str(obj, "kind"),
            actor=_opt_str(obj, "actor"), target=_opt_str(obj, "target"),
            request_id=_opt_int(obj, "request_id"), session_id=_opt_str(obj, "session_id"),
            details=details if isinstance(details, Mapping) else {},
        )


@dataclass(frozen=True)
class Identity:
    """Who the TUI works as: the bastion's `whoami`, or the local reader of files."""

    user: str
    roles: tuple[str, ...] = ()
    auditor: bool = True
    approves: frozenset[str] = frozenset()  # targets this user may approve ("*" for any)
    where: str = ""

    def may_review(self, target: str) -> bool:
        """Whether the user holds an approving role for `target` (the bastion decides anyway)."""
        return "*" in self.approves or target in self.approves

    @classmethod
    def from_json(cls, whoami: Mapping[str, Any], targets: Any, where: str) -> Identity:
        """Build from `whoami --json` and `targets --json`."""
        approves = set()
        for target in targets if isinstance(targets, list) else []:
            if isinstance(target, Mapping) and "approve" in (target.get("you_may") or []):
                approves.add(_str(target, "name"))
        roles = whoami.get("roles") or []
        return cls(
            user=_str(whoami, "user"), roles=tuple(r for r in roles if isinstance(r, str)),
            auditor=bool(whoami.get("auditor")), approves=frozenset(approves), where=where,
        )
