"""One implementation of the Store over a tiny async transaction adapter.

The SQLite and PostgreSQL stores only supply `_transaction()` (connection handling, locking
and error translation) and a `Tx` that runs statements written with `?` placeholders.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.errors import InvalidRequest, NotFound, StoreError
from bastion.models import (
    AccessRequest,
    AuditEvent,
    Decision,
    IssuedCertificate,
    QueryRecord,
    RequestStatus,
    Review,
    SessionRecord,
    SessionStatus,
)
from bastion.store.base import ReviewOutcome, Store
from bastion.store.migrations import Dialect, apply_migrations
from bastion.store.queries import INSERT_QUERY, QUERY_COLUMNS, query_params, query_record, select_queries

__all__ = ["SqlStore", "Tx"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MAX_SERIAL = 2**63 - 1  # BIGINT on both backends

_REQUEST_COLUMNS = (
    "id, username, target, reason, duration, status, created_at, pending_until, "
    "approvals_required, approved_at, expires_at, closed_by, closed_reason, unmasked, requester_key"
)
_CERT_COLUMNS = (
    "serial, request_id, username, key_fingerprint, principals, valid_after, valid_before, "
    "issued_at"
)
_SESSION_COLUMNS = (
    "id, username, target, kind, request_id, cert_serial, client, bastion_id, started_at, "
    "status, ended_at, end_reason, recording"
)
_AUDIT_COLUMNS = "id, at, kind, actor, target, request_id, session_id, details"

Row = tuple[Any, ...]


class Tx(ABC):
    """One open transaction; statements use `?` placeholders."""

    dialect: Dialect
    # Appended to a SELECT that must lock its rows until commit; SQLite locks the whole file.
    for_update: str = ""

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement."""

    @abstractmethod
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query and return all rows."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run one query and return its first row, or None."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    @abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once for each parameter row."""


def to_us(moment: datetime) -> int:
    """Return an aware datetime as integer microseconds since the epoch."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: the store only takes aware datetimes")
    return (moment - _EPOCH) // _MICROSECOND


def from_us(value: int | None) -> datetime | None:
    """Return microseconds since the epoch as an aware UTC datetime (None stays None)."""
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _at(value: int) -> datetime:
    """Return a non-null stored timestamp as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=value)


def _placeholders(count: int) -> str:
    """Return `?, ?, …` for an IN list."""
    return ", ".join("?" * count)


def _request(row: Row, reviews: Sequence[Review]) -> AccessRequest:
    """Build an AccessRequest from a requests row and its reviews."""
    return AccessRequest(
        id=row[0],
        user=row[1],
        target=row[2],
        reason=row[3],
        duration=timedelta(microseconds=row[4]),
        status=RequestStatus(row[5]),
        created_at=_at(row[6]),
        pending_until=_at(row[7]),
        approvals_required=row[8],
        approved_at=from_us(row[9]),
        expires_at=from_us(row[10]),
        closed_by=row[11],
        closed_reason=row[12],
        reviews=tuple(reviews),
        unmasked=bool(row[13]),
        requester_key=row[14] or "",
    )


def _certificate(row: Row) -> IssuedCertificate:
    """Build an IssuedCertificate from a certificates row."""
    return IssuedCertificate(
        serial=row[0],
        request_id=row[1],
        user=row[2],
        key_fingerprint=row[3],
        principals=tuple(json.loads(row[4])),
        valid_after=_at(row[5]),
        valid_before=_at(row[6]),
        issued_at=_at(row[7]),
    )


def _session(row: Row) -> SessionRecord:
    """Build a SessionRecord from a sessions row."""
    return SessionRecord(
        id=row[0],
        user=row[1],
        target=row[2],
        kind=row[3],
        request_id=row[4],
        cert_serial=row[5],
        client=row[6],
        bastion_id=row[7],
        started_at=_at(row[8]),
        status=SessionStatus(row[9]),
        ended_at=from_us(row[10]),
        end_reason=row[11],
        recording=row[12],
    )


def _audit(row: Row) -> AuditEvent:
    """Build an AuditEvent from an audit row."""
    return AuditEvent(
        id=row[0],
        at=_at(row[1]),
        kind=row[2],
        actor=row[3],
        target=row[4],
        request_id=row[5],
        session_id=row[6],
        details=json.loads(row[7]),
    )


async def _load_requests(tx: Tx, where: str, params: Sequence[Any]) -> list[AccessRequest]:
    """Return the requests matching a WHERE/ORDER/LIMIT tail, each with its reviews."""
    rows = await tx.fetchall(f"SELECT {_REQUEST_COLUMNS} FROM requests {where}", params)
    if not rows:
        return []
    ids = [row[0] for row in rows]
    review_rows = await tx.fetchall(
        "SELECT request_id, reviewer, decision, comment, at, reviewer_key FROM reviews "
        f"WHERE request_id IN ({_placeholders(len(ids))}) ORDER BY id",
        ids,
    )
    reviews: dict[int, list[Review]] = {request_id: [] for request_id in ids}
    for rid, reviewer, decision, comment, at, key in review_rows:
        reviews[rid].append(Review(rid, reviewer, Decision(decision), comment, _at(at), key or ""))
    return [_request(row, reviews[row[0]]) for row in rows]


async def _one_request(tx: Tx, request_id: int, *, lock: bool = False) -> AccessRequest:
    """Return one request with its reviews (row-locked if asked); NotFound if unknown."""
    if lock:
        # Taking the row lock first makes concurrent reviewers on other bastions queue here.
        await tx.fetchone(f"SELECT id FROM requests WHERE id = ?{tx.for_update}", (request_id,))
    found = await _load_requests(tx, "WHERE id = ?", (request_id,))
    if not found:
        raise NotFound(f"no access request #{request_id}")
    return found[0]


class SqlStore(Store, ABC):
    """The Store behaviour, written once against `Tx`."""

    @abstractmethod
    def _transaction(self, *, write: bool) -> AbstractAsyncContextManager[Tx]:
        """Open a transaction that commits on success and rolls back on error."""

    async def _migrate(self) -> int:
        """Apply pending schema migrations."""
        async with self._transaction(write=True) as tx:
            return await apply_migrations(tx, tx.dialect)

    async def schema_version(self) -> int:
        """Return the schema version the store is at."""
        async with self._transaction(write=False) as tx:
            row = await tx.fetchone("SELECT MAX(version) FROM schema_version")
        return int(row[0]) if row is not None and row[0] is not None else 0

    # requests ---------------------------------------------------------------------------

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
        """Create a request; with `approvals_required == 0` it is approved at once."""
        if approvals_required < 0:
            raise InvalidRequest("approvals_required cannot be negative")
        if duration <= timedelta(0):
            raise InvalidRequest("the access duration must be positive")
        approved = approvals_required == 0
        status = RequestStatus.APPROVED if approved else RequestStatus.PENDING
        approved_at = to_us(now) if approved else None
        expires_at = to_us(now + duration) if approved else None
        async with self._transaction(write=True) as tx:
            row = await tx.fetchone(
                "INSERT INTO requests (username, target, reason, duration, status, created_at, "
                "pending_until, approvals_required, approved_at, expires_at, unmasked, "
                "requester_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (user, target, reason, duration // _MICROSECOND, status.value, to_us(now),
                 to_us(pending_until), approvals_required, approved_at, expires_at,
                 1 if unmasked else 0, requester_key),
            )
            assert row is not None
            return await _one_request(tx, int(row[0]))

    async def get_request(self, request_id: int) -> AccessRequest | None:
        """Return one request with its reviews, or None."""
        async with self._transaction(write=False) as tx:
            found = await _load_requests(tx, "WHERE id = ?", (request_id,))
        return found[0] if found else None

    async def list_requests(
        self,
        *,
        user: str | None = None,
        statuses: Sequence[RequestStatus] | None = None,
        limit: int = 200,
    ) -> list[AccessRequest]:
        """Return requests, newest first, optionally of one user and some stored statuses."""
        clauses: list[str] = []
        params: list[Any] = []
        if user is not None:
            clauses.append("username = ?")
            params.append(user)
        if statuses is not None:
            if not statuses:
                return []
            clauses.append(f"status IN ({_placeholders(len(statuses))})")
            params.extend(RequestStatus(s).value for s in statuses)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        async with self._transaction(write=False) as tx:
            return await _load_requests(
                tx, f"{where}ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit)
            )

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
        """Record a review atomically, even against concurrent reviewers on other bastions."""
        decision = Decision(decision)
        async with self._transaction(write=True) as tx:
            request = await _one_request(tx, request_id, lock=True)
            current = request.status_at(now)
            if current is not RequestStatus.PENDING:
                raise InvalidRequest(f"request #{request_id} is {current}, not pending")
            if any(r.reviewer == reviewer and r.decision is decision for r in request.reviews):
                return ReviewOutcome(request, recorded=False, changed=False)
            await tx.execute(
                "INSERT INTO reviews (request_id, reviewer, decision, comment, at, reviewer_key) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (request_id, reviewer, decision.value, comment, to_us(now), reviewer_key),
            )
            changed = True
            if decision is Decision.DENY:
                await tx.execute(
                    "UPDATE requests SET status = ? WHERE id = ?",
                    (RequestStatus.DENIED.value, request_id),
                )
            elif len(set(request.approvers) | {reviewer}) >= request.approvals_required:
                await tx.execute(
                    "UPDATE requests SET status = ?, approved_at = ?, expires_at = ? WHERE id = ?",
                    (RequestStatus.APPROVED.value, to_us(now), to_us(now + request.duration),
                     request_id),
                )
            else:
                changed = False
            return ReviewOutcome(await _one_request(tx, request_id), recorded=True, changed=changed)

    async def close_request(
        self,
        request_id: int,
        *,
        status: RequestStatus,
        by: str,
        reason: str,
        now: datetime,
    ) -> AccessRequest:
        """Move a pending or approved request to revoked or expired; revoking revokes its certs."""
        status = RequestStatus(status)
        if status not in (RequestStatus.REVOKED, RequestStatus.EXPIRED):
            raise InvalidRequest(f"a request is closed as revoked or expired, not {status}")
        async with self._transaction(write=True) as tx:
            request = await _one_request(tx, request_id, lock=True)
            if request.status not in (RequestStatus.PENDING, RequestStatus.APPROVED):
                raise InvalidRequest(f"request #{request_id} is already {request.status}")
            await tx.execute(
                "UPDATE requests SET status = ?, closed_by = ?, closed_reason = ? WHERE id = ?",
                (status.value, by, reason, request_id),
            )
            if status is RequestStatus.REVOKED:
                await tx.execute(
                    "INSERT INTO revocations (serial, reason, revoked_at) "
                    "SELECT serial, ?, ? FROM certificates WHERE request_id = ? "
                    "ON CONFLICT (serial) DO NOTHING",
                    (reason, to_us(now), request_id),
                )
            return await _one_request(tx, request_id)

    async def expire_stale(self, now: datetime) -> list[AccessRequest]:
        """Expire pending requests past `pending_until` and approved ones past `expires_at`."""
        at = to_us(now)
        async with self._transaction(write=True) as tx:
            # RETURNING reports only the rows this call changed, even when bastions race.
            rows = await tx.fetchall(
                "UPDATE requests SET status = 'expired', closed_reason = CASE status "
                "WHEN 'pending' THEN 'not approved in time' ELSE 'access window ended' END "
                "WHERE (status = 'pending' AND pending_until <= ?) "
                "OR (status = 'approved' AND expires_at <= ?) RETURNING id",
                (at, at),
            )
            if not rows:
                return []
            ids = sorted(int(row[0]) for row in rows)
            return await _load_requests(
                tx, f"WHERE id IN ({_placeholders(len(ids))}) ORDER BY id", ids
            )

    # certificates -------------------------------------------------------------------------

    async def record_certificate(self, cert: IssuedCertificate) -> None:
        """Store an issued certificate; raises StoreError if its serial was used before."""
        if not 0 <= cert.serial <= _MAX_SERIAL:
            raise InvalidRequest(f"certificate serial {cert.serial} is outside 0..2**63-1")
        async with self._transaction(write=True) as tx:
            if await tx.fetchone("SELECT 1 FROM certificates WHERE serial = ?", (cert.serial,)):
                raise StoreError(f"certificate serial {cert.serial} was already used")
            await tx.execute(
                f"INSERT INTO certificates ({_CERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (cert.serial, cert.request_id, cert.user, cert.key_fingerprint,
                 json.dumps(list(cert.principals)), to_us(cert.valid_after),
                 to_us(cert.valid_before), to_us(cert.issued_at)),
            )

    async def get_certificate(self, serial: int) -> IssuedCertificate | None:
        """Return an issued certificate by serial, or None."""
        if not 0 <= serial <= _MAX_SERIAL:
            return None
        async with self._transaction(write=False) as tx:
            row = await tx.fetchone(
                f"SELECT {_CERT_COLUMNS} FROM certificates WHERE serial = ?", (serial,)
            )
        return _certificate(row) if row is not None else None

    async def certificates_for_key(self, key_fingerprint: str) -> list[IssuedCertificate]:
        """Return every certificate issued for one public key, newest first."""
        async with self._transaction(write=False) as tx:
            rows = await tx.fetchall(
                f"SELECT {_CERT_COLUMNS} FROM certificates WHERE key_fingerprint = ? "
                "ORDER BY issued_at DESC, serial DESC",
                (key_fingerprint,),
            )
        return [_certificate(row) for row in rows]

    async def revoke_certificate(self, serial: int, *, reason: str, now: datetime) -> None:
        """Add a serial to the revocation list (idempotent)."""
        if not 0 <= serial <= _MAX_SERIAL:
            raise InvalidRequest(f"certificate serial {serial} is outside 0..2**63-1")
        async with self._transaction(write=True) as tx:
            await tx.execute(
                "INSERT INTO revocations (serial, reason, revoked_at) VALUES (?, ?, ?) "
                "ON CONFLICT (serial) DO NOTHING",
                (serial, reason, to_us(now)),
            )

    async def is_revoked(self, serial: int) -> bool:
        """Return whether a serial is on the revocation list."""
        if not 0 <= serial <= _MAX_SERIAL:
            return False
        async with self._transaction(write=False) as tx:
            row = await tx.fetchone("SELECT 1 FROM revocations WHERE serial = ?", (serial,))
        return row is not None

    # sessions ---------------------------------------------------------------------------

    async def start_session(self, session: SessionRecord) -> None:
        """Store a new live session."""
        s = session
        async with self._transaction(write=True) as tx:
            if await tx.fetchone("SELECT 1 FROM sessions WHERE id = ?", (s.id,)):
                raise StoreError(f"session {s.id} already exists")
            await tx.execute(
                f"INSERT INTO sessions ({_SESSION_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (s.id, s.user, s.target, s.kind, s.request_id, s.cert_serial, s.client,
                 s.bastion_id, to_us(s.started_at), SessionStatus(s.status).value,
                 None if s.ended_at is None else to_us(s.ended_at), s.end_reason, s.recording),
            )

    async def end_session(
        self, session_id: str, *, status: SessionStatus, reason: str, now: datetime
    ) -> None:
        """Mark a session ended (no-op if it already ended); NotFound for an unknown session."""
        status = SessionStatus(status)
        if status is SessionStatus.LIVE:
            raise InvalidRequest("a session cannot be ended as live")
        async with self._transaction(write=True) as tx:
            rows = await tx.fetchall(
                "UPDATE sessions SET status = ?, ended_at = ?, end_reason = ? "
                "WHERE id = ? AND status = 'live' RETURNING id",
                (status.value, to_us(now), reason, session_id),
            )
            if not rows and not await tx.fetchone(
                "SELECT 1 FROM sessions WHERE id = ?", (session_id,)
            ):
                raise NotFound(f"no session {session_id}")

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """Return one session, or None."""
        async with self._transaction(write=False) as tx:
            row = await tx.fetchone(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
            )
        return _session(row) if row is not None else None

    async def list_sessions(
        self, *, user: str | None = None, live_only: bool = False, limit: int = 200
    ) -> list[SessionRecord]:
        """Return sessions, newest first."""
        clauses: list[str] = []
        params: list[Any] = []
        if user is not None:
            clauses.append("username = ?")
            params.append(user)
        if live_only:
            clauses.append("status = 'live'")
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        async with self._transaction(write=False) as tx:
            rows = await tx.fetchall(
                f"SELECT {_SESSION_COLUMNS} FROM sessions {where}"
                "ORDER BY started_at DESC, id DESC LIMIT ?",
                (*params, limit),
            )
        return [_session(row) for row in rows]

    async def end_abandoned_sessions(self, bastion_id: str, now: datetime) -> list[SessionRecord]:
        """Mark live sessions of a bastion that restarted as ended abnormally; return them."""
        async with self._transaction(write=True) as tx:
            rows = await tx.fetchall(
                "UPDATE sessions SET status = 'ended_abnormally', ended_at = ?, end_reason = ? "
                f"WHERE bastion_id = ? AND status = 'live' RETURNING {_SESSION_COLUMNS}",
                (to_us(now), "bastion restarted", bastion_id),
            )
        return sorted((_session(row) for row in rows), key=lambda s: (s.started_at, s.id))

    # audit --------------------------------------------------------------------------------

    async def append_audit(self, event: AuditEvent) -> AuditEvent:
        """Append an event and return it with its id."""
        # default=str: an odd value in details must not cost the audit trail its event.
        details = json.dumps(event.details, sort_keys=True, default=str)
        async with self._transaction(write=True) as tx:
            row = await tx.fetchone(
                "INSERT INTO audit (at, kind, actor, target, request_id, session_id, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (to_us(event.at), event.kind, event.actor, event.target, event.request_id,
                 event.session_id, details),
            )
        assert row is not None
        return dataclasses.replace(event, id=int(row[0]), details=json.loads(details))

    async def list_audit(
        self,
        *,
        kind: str | None = None,
        actor: str | None = None,
        request_id: int | None = None,
        limit: int = 500,
    ) -> list[AuditEvent]:
        """Return events, newest first; `kind` matches a prefix (e.g. "login.")."""
        clauses: list[str] = []
        params: list[Any] = []
        if kind is not None:
            # substr, not LIKE: LIKE is case-insensitive in SQLite and needs escaping for `_`.
            clauses.append("substr(kind, 1, CAST(? AS INTEGER)) = ?")
            params.extend((len(kind), kind))
        if actor is not None:
            clauses.append("actor = ?")
            params.append(actor)
        if request_id is not None:
            clauses.append("request_id = ?")
            params.append(request_id)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        async with self._transaction(write=False) as tx:
            rows = await tx.fetchall(
                f"SELECT {_AUDIT_COLUMNS} FROM audit {where}ORDER BY at DESC, id DESC LIMIT ?",
                (*params, limit),
            )
        return [_audit(row) for row in rows]

    # query log -----------------------------------------------------------------------------

    async def record_query(self, query: QueryRecord) -> QueryRecord:
        """Append a statement to the masked query log and return it with its id."""
        async with self._transaction(write=True) as tx:
            row = await tx.fetchone(INSERT_QUERY, query_params(query, to_us(query.started_at)))
        assert row is not None
        return dataclasses.replace(query, id=int(row[0]))

    async def record_queries(self, queries: Sequence[QueryRecord]) -> None:
        """Append statements to the masked query log in one transaction."""
        if not queries:
            return
        await self._insert_rows(INSERT_QUERY.removesuffix(" RETURNING id"),
                                [query_params(q, to_us(q.started_at)) for q in queries])

    async def _insert_rows(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run an INSERT for each row, in one write transaction."""
        async with self._transaction(write=True) as tx:
            await tx.executemany(sql, rows)

    async def spend_lookups(self, request_id: int, count: int, limit: int) -> tuple[bool, int]:
        """Count lookups against a grant within its limit, atomically across bastions."""
        async with self._transaction(write=True) as tx:
            await tx.execute("INSERT INTO lookups (request_id, used) VALUES (?, 0) "
                             "ON CONFLICT (request_id) DO NOTHING", (request_id,))
            row = await tx.fetchone(f"SELECT used FROM lookups WHERE request_id = ?{tx.for_update}",
                                    (request_id,))
            used = int(row[0]) if row is not None else 0
            if used + count > limit:
                return False, used
            await tx.execute("UPDATE lookups SET used = ? WHERE request_id = ?",
                             (used + count, request_id))
        return True, used

    async def installation_tag(self, new_tag: str) -> str:
        """The installation's tag, set to `new_tag` by the first bastion that asks."""
        async with self._transaction(write=True) as tx:
            await tx.execute("INSERT INTO installation (one, tag) VALUES (1, ?) "
                             "ON CONFLICT (one) DO NOTHING", (new_tag,))
            row = await tx.fetchone("SELECT tag FROM installation WHERE one = 1")
        assert row is not None
        return str(row[0])

    async def list_queries(
        self, *, session_id: str | None = None, user: str | None = None, limit: int = 500
    ) -> list[QueryRecord]:
        """Return logged statements, newest first."""
        where, params = select_queries(session_id, user)
        async with self._transaction(write=False) as tx:
            rows = await tx.fetchall(
                f"SELECT {QUERY_COLUMNS} FROM queries {where}ORDER BY started_at DESC, id DESC "
                "LIMIT ?",
                (*params, limit),
            )
        return [query_record(row, _at(row[6])) for row in rows]
