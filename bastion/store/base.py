"""The state store interface: everything that must outlive one bastion process.

Two implementations share one behaviour and one test suite: SQLite (one bastion) and PostgreSQL
(several bastions behind one load balancer). Every method is atomic on its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bastion.models import (
    AccessRequest,
    AuditEvent,
    Decision,
    IdentityBinding,
    IssuedCertificate,
    Node,
    QueryRecord,
    RequestStatus,
    SessionRecord,
    SessionStatus,
)

__all__ = ["ReviewOutcome", "Store"]


@dataclass(frozen=True)
class ReviewOutcome:
    """What recording a review did.

    `recorded` is False when the same reviewer had already given the same decision (it counts once);
    `changed` is True when this review moved the request to approved or denied.
    """

    request: AccessRequest
    recorded: bool
    changed: bool


class Store(ABC):
    """Durable state: requests, reviews, certificates, revocations, sessions, audit events."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to the current version."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abstractmethod
    async def schema_version(self) -> int:
        """Return the schema version the store is at."""

    # requests -----------------------------------------------------------------------------

    @abstractmethod
    async def create_request(
        self,
        *,
        user: str,
        target: str,
        reason: str,
        duration: timedelta,
        approvals_required: int,
        pending_until: datetime,
        now: datetime,
        unmasked: bool = False,
        requester_key: str = "",
    ) -> AccessRequest:
        """Create a request; with `approvals_required == 0` it is approved at once (window from now).

        `unmasked` asks for a SQL target without column masking: a separate grant.
        """

    @abstractmethod
    async def get_request(self, request_id: int) -> AccessRequest | None:
        """Return one request with its reviews, or None."""

    @abstractmethod
    async def list_requests(
        self,
        *,
        user: str | None = None,
        statuses: Sequence[RequestStatus] | None = None,
        limit: int = 200,
    ) -> list[AccessRequest]:
        """Return requests, newest first, optionally of one user and some stored statuses."""

    @abstractmethod
    async def add_review(
        self,
        request_id: int,
        *,
        reviewer: str,
        decision: Decision,
        comment: str,
        now: datetime,
        reviewer_key: str = "",
    ) -> ReviewOutcome:
        """Record a review atomically, even against concurrent reviewers on other bastions.

        Raises NotFound for an unknown request and InvalidRequest when the request is no longer
        pending at `now` (already approved, denied, revoked, or past `pending_until`). A second
        approval by the same reviewer is not recorded again. A deny moves the request to denied.
        When the distinct approvers reach `approvals_required`, the request becomes approved with
        `approved_at = now` and `expires_at = now + duration`.
        """

    @abstractmethod
    async def close_request(
        self,
        request_id: int,
        *,
        status: RequestStatus,
        by: str,
        reason: str,
        now: datetime,
    ) -> AccessRequest:
        """Move a pending or approved request to revoked or expired; revoking also revokes its certs.

        Raises NotFound for an unknown request, InvalidRequest if it is already closed.
        """

    @abstractmethod
    async def expire_stale(self, now: datetime) -> list[AccessRequest]:
        """Mark pending requests past `pending_until` and approved ones past `expires_at` expired."""

    # certificates ---------------------------------------------------------------------------

    @abstractmethod
    async def record_certificate(self, cert: IssuedCertificate) -> None:
        """Store an issued certificate; raises StoreError if its serial was used before."""

    @abstractmethod
    async def get_certificate(self, serial: int) -> IssuedCertificate | None:
        """Return an issued certificate by serial, or None."""

    @abstractmethod
    async def certificates_for_key(self, key_fingerprint: str) -> list[IssuedCertificate]:
        """Return every certificate issued for one public key, newest first."""

    @abstractmethod
    async def revoke_certificate(self, serial: int, *, reason: str, now: datetime) -> None:
        """Add a serial to the revocation list (idempotent)."""

    @abstractmethod
    async def is_revoked(self, serial: int) -> bool:
        """Return whether a serial is on the revocation list."""

    # sessions ------------------------------------------------------------------------------

    @abstractmethod
    async def start_session(self, session: SessionRecord) -> None:
        """Store a new live session."""

    @abstractmethod
    async def end_session(
        self, session_id: str, *, status: SessionStatus, reason: str, now: datetime
    ) -> None:
        """Mark a session ended (no-op if it already ended)."""

    @abstractmethod
    async def get_session(self, session_id: str) -> SessionRecord | None:
        """Return one session, or None."""

    @abstractmethod
    async def list_sessions(
        self, *, user: str | None = None, live_only: bool = False, limit: int = 200
    ) -> list[SessionRecord]:
        """Return sessions, newest first."""

    @abstractmethod
    async def end_abandoned_sessions(self, bastion_id: str, now: datetime) -> list[SessionRecord]:
        """Mark live sessions of a bastion that restarted as ended abnormally; return them."""

    # cluster -------------------------------------------------------------------------------

    @abstractmethod
    async def heartbeat(self, bastion_id: str, address: str, now: datetime, *,
                        starting: bool = False) -> None:
        """Note that a bastion is alive now (`starting`: it has just started)."""

    @abstractmethod
    async def forget_node(self, bastion_id: str) -> None:
        """Remove a bastion that stopped cleanly (it is not dead, and has no live sessions)."""

    @abstractmethod
    async def list_nodes(self) -> list[Node]:
        """Return the bastions that heartbeat, by id."""

    @abstractmethod
    async def reap_dead_nodes(self, silent_since: datetime, now: datetime, *, by: str
                              ) -> list[tuple[Node, list[SessionRecord]]]:
        """Forget bastions (other than `by`) silent since `silent_since` and mark their live
        sessions ended abnormally; each dead node is returned to exactly one caller."""

    @abstractmethod
    async def sessions_to_end(self, session_ids: Sequence[str], now: datetime) -> dict[str, str]:
        """Of these live sessions, those the store says must end now, with the reason why."""

    @abstractmethod
    async def set_session_recording(self, session_id: str, location: str) -> None:
        """Point a session at where its recording is kept now."""

    # query log -----------------------------------------------------------------------------

    @abstractmethod
    async def record_query(self, query: QueryRecord) -> QueryRecord:
        """Append a statement to the masked query log and return it with its id."""

    @abstractmethod
    async def record_queries(self, queries: Sequence[QueryRecord]) -> None:
        """Append statements to the masked query log in one transaction (a busy session's
        statements, written together)."""

    @abstractmethod
    async def list_queries(
        self, *, session_id: str | None = None, user: str | None = None, limit: int = 500
    ) -> list[QueryRecord]:
        """Return logged statements, newest first."""

    @abstractmethod
    async def spend_lookups(self, request_id: int, count: int, limit: int) -> tuple[bool, int]:
        """Count `count` more masked-column lookups against a grant if that keeps it within
        `limit`; return whether it did and how many the grant had used before."""

    @abstractmethod
    async def installation_tag(self, new_tag: str) -> str:
        """The tag of the installation this store belongs to; `new_tag` becomes it if it has
        none yet (the first bastion to ask sets it, every other one reads it)."""

    # audit ---------------------------------------------------------------------------------

    @abstractmethod
    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        """Append an event and return it with its id."""

    @abstractmethod
    async def list_audit(
        self,
        *,
        kind: str | None = None,
        actor: str | None = None,
        request_id: int | None = None,
        limit: int = 500,
    ) -> list[AuditEvent]:
        """Return events, newest first; `kind` matches a prefix (e.g. "login.")."""

    # identity bindings -------------------------------------------------------------------

    @abstractmethod
    async def bind_identity(self, binding: IdentityBinding) -> None:
        """Store a key's binding, replacing any earlier binding of the same key."""

    @abstractmethod
    async def identity_bindings(self, *, user: str | None = None, key_fingerprint: str | None = None
                                ) -> list[IdentityBinding]:
        """Return bindings (of one user, or of one key), newest first."""

    @abstractmethod
    async def update_identity_check(self, key_fingerprint: str, *, roles: tuple[str, ...],
                                    groups: tuple[str, ...], checked_at: datetime,
                                    sealed_tokens: str) -> bool:
        """Record a re-check's outcome on a binding; return whether the binding still existed."""

    @abstractmethod
    async def unbind_identity(self, *, user: str | None = None, key_fingerprint: str | None = None
                              ) -> list[IdentityBinding]:
        """Remove the bindings of a user or of one key; return what was removed."""

    @abstractmethod
    async def name_owner(self, user: str) -> str | None:
        """The subject (the provider's id of a person) that last signed in as `user`, kept after
        the bindings end: a name that changes hands must not pass on its requests."""

    @abstractmethod
    async def own_name(self, user: str, subject: str, now: datetime) -> None:
        """Record `subject` as the owner of the user name `user`."""
