"""The state store, run against both backends: SQLite in a temp dir and a fresh PostgreSQL DB."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bastion.errors import InvalidRequest, NotFound, StoreError
from bastion.models import (
    AccessRequest,
    AuditEvent,
    Decision,
    IssuedCertificate,
    QueryRecord,
    RequestStatus,
    SessionRecord,
    SessionStatus,
)
from bastion.store import Store, open_store
from bastion.store.migrations import LATEST_VERSION
from bastion.store.postgres import PostgresStore
from bastion.store.queries import INSERT_QUERY
from bastion.store.sql import SqlStore
from bastion.store.sqlite import SQLiteStore

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
HOUR = timedelta(hours=1)

Opener = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty store of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/bastion.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def open_new(store_url: str) -> AsyncIterator[Opener]:
    """Open another store on the same database (another bastion); all are closed afterwards."""
    opened: list[Store] = []

    async def make() -> Store:
        store = await open_store(store_url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_new: Opener) -> Store:
    """One open store."""
    return await open_new()


async def _versions(store: Store) -> list[int]:
    """Return the rows of the schema_version table."""
    assert isinstance(store, SqlStore)
    async with store._transaction(write=False) as tx:
        rows = await tx.fetchall("SELECT version FROM schema_version ORDER BY version")
    return [int(row[0]) for row in rows]


async def _request(
    store: Store,
    *,
    user: str = "alice",
    target: str = "db1",
    approvals: int = 1,
    now: datetime = T0,
    pending: timedelta = HOUR,
    duration: timedelta = 2 * HOUR,
) -> AccessRequest:
    """Create a request with sensible defaults."""
    return await store.create_request(
        user=user,
        target=target,
        reason="fix the thing",
        duration=duration,
        approvals_required=approvals,
        pending_until=now + pending,
        now=now,
    )


def _cert(
    serial: int, request_id: int, *, key: str = "SHA256:k1", at: datetime = T0
) -> IssuedCertificate:
    """An issued certificate for a request."""
    return IssuedCertificate(
        serial=serial,
        request_id=request_id,
        user="alice",
        key_fingerprint=key,
        principals=("db1", "admin"),
        valid_after=at,
        valid_before=at + HOUR,
        issued_at=at,
    )


def _session(sid: str, request_id: int, *, user: str = "alice", bastion: str = "b1",
             at: datetime = T0) -> SessionRecord:
    """A live session."""
    return SessionRecord(
        id=sid,
        user=user,
        target="db1",
        kind="ssh",
        request_id=request_id,
        cert_serial=7,
        client="10.0.0.1:5555",
        bastion_id=bastion,
        started_at=at,
    )


# migrations -------------------------------------------------------------------------------


async def test_fresh_store_reaches_latest_version(store: Store) -> None:
    assert await store.schema_version() == LATEST_VERSION
    assert await _versions(store) == list(range(1, LATEST_VERSION + 1))


async def test_reopening_is_a_no_op_and_keeps_data(store: Store, open_new: Opener) -> None:
    req = await _request(store)
    await store.close()
    again = await open_new()
    assert await again.schema_version() == LATEST_VERSION
    assert await _versions(again) == list(range(1, LATEST_VERSION + 1))
    assert await again.get_request(req.id) == req


async def test_concurrent_first_opens_migrate_once(open_new: Opener) -> None:
    stores = await asyncio.gather(*(open_new() for _ in range(4)))
    for store in stores:
        assert await store.schema_version() == LATEST_VERSION
    assert await _versions(stores[0]) == list(range(1, LATEST_VERSION + 1))


async def test_newer_schema_is_refused(store: Store, open_new: Opener) -> None:
    assert isinstance(store, SqlStore)
    async with store._transaction(write=True) as tx:
        await tx.execute("INSERT INTO schema_version (version) VALUES (?)", (LATEST_VERSION + 1,))
    with pytest.raises(StoreError, match="newer"):
        await open_new()


# requests ---------------------------------------------------------------------------------


async def test_create_and_get_request(store: Store) -> None:
    req = await _request(store, approvals=2)
    assert req.id > 0
    assert req.status is RequestStatus.PENDING
    assert (req.user, req.target, req.reason) == ("alice", "db1", "fix the thing")
    assert req.duration == 2 * HOUR
    assert req.created_at == T0 and req.created_at.tzinfo is not None
    assert req.created_at.utcoffset() == timedelta(0)
    assert req.pending_until == T0 + HOUR
    assert req.approvals_required == 2
    assert req.approved_at is None and req.expires_at is None and req.reviews == ()
    assert await store.get_request(req.id) == req
    assert await store.get_request(req.id + 1000) is None


async def test_times_in_other_zones_come_back_as_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=2))
    req = await _request(store, now=T0.astimezone(paris))
    assert req.created_at == T0
    assert req.created_at.utcoffset() == timedelta(0)


async def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="naive"):
        await _request(store, now=T0.replace(tzinfo=None))


async def test_zero_approvals_are_approved_at_once(store: Store) -> None:
    req = await _request(store, approvals=0, duration=3 * HOUR)
    assert req.status is RequestStatus.APPROVED
    assert req.approved_at == T0
    assert req.expires_at == T0 + 3 * HOUR
    assert await store.get_request(req.id) == req


async def test_list_requests_filters_newest_first(store: Store) -> None:
    a1 = await _request(store, user="alice", now=T0)
    b1 = await _request(store, user="bob", now=T0 + timedelta(minutes=1))
    a2 = await _request(store, user="alice", approvals=0, now=T0 + timedelta(minutes=2))
    assert [r.id for r in await store.list_requests()] == [a2.id, b1.id, a1.id]
    assert [r.id for r in await store.list_requests(user="alice")] == [a2.id, a1.id]
    pending = await store.list_requests(statuses=[RequestStatus.PENDING])
    assert [r.id for r in pending] == [b1.id, a1.id]
    mine = await store.list_requests(user="alice", statuses=[RequestStatus.APPROVED])
    assert mine == [a2]
    both = [RequestStatus.APPROVED, RequestStatus.PENDING]
    assert len(await store.list_requests(statuses=both)) == 3
    assert await store.list_requests(statuses=[]) == []
    assert [r.id for r in await store.list_requests(limit=2)] == [a2.id, b1.id]
    assert await store.list_requests(user="nobody") == []


async def test_list_requests_includes_reviews(store: Store) -> None:
    req = await _request(store, approvals=2)
    await store.add_review(req.id, reviewer="rita", decision=Decision.APPROVE, comment="ok", now=T0)
    (listed,) = await store.list_requests()
    assert listed.approvers == ("rita",)
    assert listed == await store.get_request(req.id)


# reviews ----------------------------------------------------------------------------------


async def test_deny_moves_to_denied(store: Store) -> None:
    req = await _request(store, approvals=2)
    at = T0 + timedelta(minutes=5)
    out = await store.add_review(req.id, reviewer="rita", decision=Decision.DENY,
                                 comment="no ticket", now=at)
    assert out.recorded and out.changed
    assert out.request.status is RequestStatus.DENIED
    (review,) = out.request.reviews
    assert (review.request_id, review.reviewer, review.decision) == (req.id, "rita", Decision.DENY)
    assert (review.comment, review.at) == ("no ticket", at)
    assert await store.get_request(req.id) == out.request
    with pytest.raises(InvalidRequest):
        await store.add_review(
            req.id, reviewer="sam", decision=Decision.APPROVE, comment="", now=at
        )


async def test_distinct_approvals_are_needed(store: Store) -> None:
    req = await _request(store, approvals=2)
    at = T0 + timedelta(minutes=10)
    first = await store.add_review(req.id, reviewer="rita", decision=Decision.APPROVE,
                                   comment="", now=at)
    assert first.recorded and not first.changed
    assert first.request.status is RequestStatus.PENDING
    again = await store.add_review(req.id, reviewer="rita", decision=Decision.APPROVE,
                                   comment="really", now=at)
    assert not again.recorded and not again.changed
    assert again.request.status is RequestStatus.PENDING
    assert len(again.request.reviews) == 1
    second = await store.add_review(req.id, reviewer="sam", decision=Decision.APPROVE,
                                    comment="", now=at)
    assert second.recorded and second.changed
    done = second.request
    assert done.status is RequestStatus.APPROVED
    assert done.approvers == ("rita", "sam")
    assert done.approved_at == at and done.expires_at == at + 2 * HOUR
    assert await store.get_request(req.id) == done


async def test_an_approver_may_still_deny(store: Store) -> None:
    req = await _request(store, approvals=2)
    await store.add_review(req.id, reviewer="rita", decision=Decision.APPROVE, comment="", now=T0)
    out = await store.add_review(req.id, reviewer="rita", decision=Decision.DENY,
                                 comment="changed my mind", now=T0)
    assert out.recorded and out.changed
    assert out.request.status is RequestStatus.DENIED
    assert [r.decision for r in out.request.reviews] == [Decision.APPROVE, Decision.DENY]


async def test_reviewing_a_closed_or_lapsed_request_is_refused(store: Store) -> None:
    approved = await _request(store, approvals=0)
    with pytest.raises(InvalidRequest):
        await store.add_review(approved.id, reviewer="rita", decision=Decision.APPROVE,
                               comment="", now=T0)
    lapsed = await _request(store, approvals=1, pending=HOUR)
    with pytest.raises(InvalidRequest):
        await store.add_review(lapsed.id, reviewer="rita", decision=Decision.APPROVE,
                               comment="", now=T0 + HOUR)
    assert (await store.get_request(lapsed.id)) == lapsed
    with pytest.raises(NotFound):
        await store.add_review(99999, reviewer="rita", decision=Decision.APPROVE,
                               comment="", now=T0)


async def test_concurrent_approvals_on_two_bastions(open_new: Opener) -> None:
    one, two = await open_new(), await open_new()
    for _ in range(5):
        req = await _request(one, approvals=2)
        outs = await asyncio.gather(
            one.add_review(req.id, reviewer="rita", decision=Decision.APPROVE, comment="",
                           now=T0),
            two.add_review(req.id, reviewer="sam", decision=Decision.APPROVE, comment="",
                           now=T0),
        )
        assert all(out.recorded for out in outs)
        assert sum(out.changed for out in outs) == 1
        final = await two.get_request(req.id)
        assert final is not None and final.status is RequestStatus.APPROVED
        assert sorted(final.approvers) == ["rita", "sam"]
        assert len(final.reviews) == 2
        assert final.approved_at == T0


async def test_concurrent_duplicate_approvals_count_once(open_new: Opener) -> None:
    one, two = await open_new(), await open_new()
    req = await _request(one, approvals=2)
    outs = await asyncio.gather(*(
        (one if i % 2 else two).add_review(req.id, reviewer="rita", decision=Decision.APPROVE,
                                           comment=f"try {i}", now=T0)
        for i in range(10)
    ))
    assert sum(out.recorded for out in outs) == 1
    assert not any(out.changed for out in outs)
    final = await one.get_request(req.id)
    assert final is not None and final.status is RequestStatus.PENDING
    assert len(final.reviews) == 1


# closing and expiry -----------------------------------------------------------------------


async def test_revoking_revokes_the_requests_certificates(store: Store) -> None:
    req = await _request(store, approvals=0)
    other = await _request(store, approvals=0)
    await store.record_certificate(_cert(11, req.id))
    await store.record_certificate(_cert(12, req.id))
    await store.record_certificate(_cert(13, other.id))
    await store.revoke_certificate(12, reason="lost laptop", now=T0)
    closed = await store.close_request(req.id, status=RequestStatus.REVOKED, by="rita",
                                       reason="incident over", now=T0 + HOUR)
    assert closed.status is RequestStatus.REVOKED
    assert (closed.closed_by, closed.closed_reason) == ("rita", "incident over")
    assert closed.expires_at == T0 + 2 * HOUR
    assert await store.get_request(req.id) == closed
    assert await store.is_revoked(11) and await store.is_revoked(12)
    assert not await store.is_revoked(13)
    with pytest.raises(InvalidRequest):
        await store.close_request(req.id, status=RequestStatus.REVOKED, by="rita", reason="",
                                  now=T0)
    with pytest.raises(NotFound):
        await store.close_request(99999, status=RequestStatus.REVOKED, by="rita", reason="",
                                  now=T0)


async def test_closing_as_expired_or_other_statuses(store: Store) -> None:
    pending = await _request(store, approvals=1)
    await store.record_certificate(_cert(21, pending.id))
    closed = await store.close_request(pending.id, status=RequestStatus.EXPIRED, by="system",
                                       reason="timeout", now=T0)
    assert closed.status is RequestStatus.EXPIRED
    assert not await store.is_revoked(21)
    approved = await _request(store, approvals=0)
    with pytest.raises(InvalidRequest):
        await store.close_request(approved.id, status=RequestStatus.APPROVED, by="x",
                                  reason="", now=T0)
    denied = await _request(store, approvals=1)
    await store.add_review(denied.id, reviewer="r", decision=Decision.DENY, comment="", now=T0)
    with pytest.raises(InvalidRequest):
        await store.close_request(denied.id, status=RequestStatus.REVOKED, by="x",
                                  reason="", now=T0)


async def test_expire_stale(store: Store) -> None:
    now = T0 + 3 * HOUR
    old_pending = await _request(store, approvals=1, pending=HOUR)
    fresh_pending = await _request(store, approvals=1, pending=4 * HOUR)
    old_approved = await _request(store, approvals=0, duration=HOUR)
    fresh_approved = await _request(store, approvals=0, duration=5 * HOUR)
    denied = await _request(store, approvals=1, pending=HOUR)
    await store.add_review(denied.id, reviewer="r", decision=Decision.DENY, comment="", now=T0)
    expired = await store.expire_stale(now)
    assert sorted(r.id for r in expired) == sorted([old_pending.id, old_approved.id])
    assert all(r.status is RequestStatus.EXPIRED for r in expired)
    for req in expired:
        assert await store.get_request(req.id) == req
    for req in (fresh_pending, fresh_approved, denied):
        again = await store.get_request(req.id)
        assert again is not None and again.status is not RequestStatus.EXPIRED
    assert await store.expire_stale(now) == []
    # The boundary counts as lapsed, as in AccessRequest.status_at.
    assert [r.id for r in await store.expire_stale(T0 + 4 * HOUR)] == [fresh_pending.id]


# certificates -----------------------------------------------------------------------------


async def test_certificates(store: Store) -> None:
    req = await _request(store, approvals=0)
    first = _cert(2**63 - 1, req.id, key="SHA256:k1", at=T0)
    second = _cert(1, req.id, key="SHA256:k1", at=T0 + HOUR)
    elsewhere = _cert(0, req.id, key="SHA256:k2", at=T0)
    for cert in (first, second, elsewhere):
        await store.record_certificate(cert)
    assert await store.get_certificate(2**63 - 1) == first
    assert await store.get_certificate(0) == elsewhere
    assert await store.get_certificate(5) is None
    assert await store.get_certificate(2**64 - 1) is None
    assert await store.certificates_for_key("SHA256:k1") == [second, first]
    assert await store.certificates_for_key("SHA256:none") == []
    with pytest.raises(StoreError):
        await store.record_certificate(_cert(1, req.id, key="SHA256:k3"))
    assert await store.certificates_for_key("SHA256:k3") == []


async def test_revocation_list(store: Store) -> None:
    assert not await store.is_revoked(2**63 - 1)
    await store.revoke_certificate(2**63 - 1, reason="compromised", now=T0)
    await store.revoke_certificate(2**63 - 1, reason="again", now=T0 + HOUR)
    assert await store.is_revoked(2**63 - 1)
    assert not await store.is_revoked(42)
    assert not await store.is_revoked(2**64 - 1)


# sessions ---------------------------------------------------------------------------------


async def test_sessions(store: Store) -> None:
    req = await _request(store, approvals=0)
    s1 = _session("s1", req.id, user="alice", at=T0)
    s2 = _session("s2", req.id, user="bob", at=T0 + timedelta(minutes=1))
    s3 = _session("s3", req.id, user="alice", at=T0 + timedelta(minutes=2))
    for s in (s1, s2, s3):
        await store.start_session(s)
    assert await store.get_session("s1") == s1
    assert await store.get_session("nope") is None
    with pytest.raises(StoreError):
        await store.start_session(s1)
    assert [s.id for s in await store.list_sessions()] == ["s3", "s2", "s1"]
    assert [s.id for s in await store.list_sessions(user="alice")] == ["s3", "s1"]
    assert [s.id for s in await store.list_sessions(limit=1)] == ["s3"]

    end = T0 + HOUR
    await store.end_session("s1", status=SessionStatus.ENDED, reason="logout", now=end)
    ended = await store.get_session("s1")
    assert ended is not None
    assert (ended.status, ended.ended_at, ended.end_reason) == (SessionStatus.ENDED, end, "logout")
    await store.end_session("s1", status=SessionStatus.ENDED_ABNORMALLY, reason="late",
                            now=end + HOUR)
    assert await store.get_session("s1") == ended
    assert [s.id for s in await store.list_sessions(live_only=True)] == ["s3", "s2"]
    with pytest.raises(NotFound):
        await store.end_session("nope", status=SessionStatus.ENDED, reason="", now=end)


async def test_session_recording_field_round_trips(store: Store) -> None:
    req = await _request(store, approvals=0)
    s = _session("rec", req.id)
    s = SessionRecord(**{**s.__dict__, "recording": "2025/03/01/rec.cast.enc"})
    await store.start_session(s)
    assert await store.get_session("rec") == s


async def test_end_abandoned_sessions_touches_only_that_bastion(store: Store) -> None:
    req = await _request(store, approvals=0)
    mine_live = _session("m1", req.id, bastion="b1", at=T0)
    mine_live2 = _session("m2", req.id, bastion="b1", at=T0 + timedelta(minutes=1))
    mine_done = _session("m3", req.id, bastion="b1")
    theirs = _session("t1", req.id, bastion="b2")
    for s in (mine_live, mine_live2, mine_done, theirs):
        await store.start_session(s)
    await store.end_session("m3", status=SessionStatus.ENDED, reason="logout", now=T0)
    restart = T0 + HOUR
    abandoned = await store.end_abandoned_sessions("b1", restart)
    assert sorted(s.id for s in abandoned) == ["m1", "m2"]
    for s in abandoned:
        assert s.status is SessionStatus.ENDED_ABNORMALLY and s.ended_at == restart
        assert await store.get_session(s.id) == s
    done = await store.get_session("m3")
    assert done is not None and done.end_reason == "logout"
    other = await store.get_session("t1")
    assert other is not None and other.status is SessionStatus.LIVE
    assert await store.end_abandoned_sessions("b1", restart) == []


# audit ------------------------------------------------------------------------------------


async def test_audit(store: Store) -> None:
    details = {"approvers": ["rita", "sam"], "n": 2, "nested": {"ok": True, "x": None}}
    events = [
        AuditEvent(kind="login.ok", at=T0, actor="alice", target="db1", session_id="s1"),
        AuditEvent(kind="request.created", at=T0 + timedelta(seconds=1), actor="alice",
                   request_id=5, details=details),
        AuditEvent(kind="login.failed", at=T0 + timedelta(seconds=2), actor="bob"),
        AuditEvent(kind="loginx", at=T0 + timedelta(seconds=3), actor="bob"),
        AuditEvent(kind="login_x", at=T0 + timedelta(seconds=4), actor="bob"),
    ]
    stored = [await store.append_audit(e) for e in events]
    ids = [e.id for e in stored]
    assert all(i is not None for i in ids) and len(set(ids)) == len(ids)
    for event, back in zip(events, stored, strict=True):
        assert back == AuditEvent(**{**event.__dict__, "id": back.id})

    everything = await store.list_audit()
    assert everything == stored[::-1]
    assert everything[3].details == details
    assert [e.kind for e in await store.list_audit(kind="login.")] == ["login.failed", "login.ok"]
    assert [e.kind for e in await store.list_audit(kind="LOGIN.")] == []
    assert [e.kind for e in await store.list_audit(kind="login_")] == ["login_x"]
    assert len(await store.list_audit(kind="login")) == 4
    assert [e.kind for e in await store.list_audit(actor="alice")] == [
        "request.created",
        "login.ok",
    ]
    assert await store.list_audit(request_id=5) == [stored[1]]
    assert await store.list_audit(kind="login.", actor="alice") == [stored[0]]
    assert await store.list_audit(limit=2) == stored[::-1][:2]


# backend specifics ------------------------------------------------------------------------


async def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "state.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        await _request(store)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert isinstance(store, SqlStore)
        async with store._transaction(write=False) as tx:
            assert await tx.fetchone("PRAGMA journal_mode") == ("wal",)
            assert await tx.fetchone("PRAGMA foreign_keys") == (1,)
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_never_shows_the_password(pg_url: str) -> None:
    secret = "hunter2-s3cret"
    with_password = pg_url.replace("://postgres@", f"://postgres:{secret}@")
    assert secret in with_password
    store = PostgresStore(with_password)  # trust auth: the password is accepted and ignored
    await store.open()
    try:
        assert secret not in repr(store)
        assert await store.schema_version() == LATEST_VERSION
    finally:
        await store.close()
    missing = with_password.rpartition("/")[0] + "/no_such_database_here"
    with pytest.raises(StoreError) as caught:
        await open_store(missing)
    assert secret not in str(caught.value) and "no_such_database_here" in str(caught.value)
    assert caught.value.__cause__ is None


async def test_query_log_round_trips_and_filters(store: Store) -> None:
    base = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    for i, session in enumerate(["s1", "s1", "s2"]):
        logged = await store.record_query(QueryRecord(
            session_id=session, user="alice" if session == "s1" else "erin", target="prod-db",
            statement=f"SELECT * FROM customers WHERE ssn = ? -- {i}", kind="select",
            started_at=base + timedelta(seconds=i), duration_ms=1.25 * (i + 1), rows=i,
            blocked="read-only target" if i == 2 else None,
        ))
        assert logged.id is not None
    everything = await store.list_queries()
    assert [q.statement[-1] for q in everything] == ["2", "1", "0"]  # newest first
    assert everything[0].blocked == "read-only target" and everything[2].duration_ms == 1.25
    assert everything[2].started_at == base
    assert [q.session_id for q in await store.list_queries(session_id="s1")] == ["s1", "s1"]
    assert [q.user for q in await store.list_queries(user="erin")] == ["erin"]


async def test_a_batch_of_statements_is_logged_in_one_call(store: Store) -> None:
    base = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    await store.record_queries([])  # nothing to write is not an error
    await store.record_queries([QueryRecord(
        session_id="s9", user="alice", target="pg", statement=f"SELECT {i} -- 100% ?",
        kind="select", started_at=base + timedelta(milliseconds=i), duration_ms=0.5, rows=1,
        blocked="refused" if i == 3 else None, error="error" if i == 4 else None,
    ) for i in range(300)])
    logged = await store.list_queries(session_id="s9", limit=1000)
    assert len(logged) == 300 and len({q.id for q in logged}) == 300
    assert logged[0].statement == "SELECT 299 -- 100% ?" and logged[-1].started_at == base
    by_text = {q.statement: q for q in logged}
    assert by_text["SELECT 3 -- 100% ?"].blocked == "refused"
    assert by_text["SELECT 4 -- 100% ?"].error == "error"
    # In the order given, across the multi-row INSERTs the SQLite store splits a batch into.
    ids = [by_text[f"SELECT {i} -- 100% ?"].id or 0 for i in range(300)]
    assert ids == sorted(ids)


async def test_a_batch_with_a_bad_row_logs_none_of_it(store: Store) -> None:
    """One transaction per batch: a row the store refuses (here a NOT NULL column left empty,
    in the batch's second multi-row INSERT) leaves nothing of the batch behind."""
    base = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
    rows = [QueryRecord(session_id="s10", user="alice", target="pg", statement=f"SELECT {i}",
                        kind="select", started_at=base, duration_ms=0.5, rows=1)
            for i in range(100)]
    rows[70] = dataclasses.replace(rows[70], statement=None)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        await store.record_queries(rows)
    assert await store.list_queries(session_id="s10") == []
    await store.record_queries(rows[:70])
    assert len(await store.list_queries(session_id="s10")) == 70


async def test_the_installation_tag_is_set_once_and_shared(store: Store, open_new: Opener) -> None:
    """The first bastion to ask sets the tag; every bastion on the same store reads the same."""
    first = await store.installation_tag("aaaaa")
    assert first == "aaaaa"
    assert await store.installation_tag("bbbbb") == "aaaaa"
    again = await open_new()
    assert await again.installation_tag("ccccc") == "aaaaa"


async def test_sqlite_refuses_rows_of_the_wrong_width_before_writing(tmp_path: Path) -> None:
    """The SQLite store joins a batch's rows into multi-row INSERTs: a row with a value missing
    would shift every value after it into the wrong column, so such a batch is refused whole."""
    store = await open_store(f"sqlite:///{tmp_path / 'state.db'}")
    assert isinstance(store, SQLiteStore)
    try:
        good = ("s11", "alice", "pg", "SELECT 1", "select", 1, 500, 1, None, None)
        with pytest.raises(StoreError, match="every row must have 10 values"):
            await store._insert_rows(INSERT_QUERY.removesuffix(" RETURNING id"),
                                     [good, good[:9], good])
        assert await store.list_queries(session_id="s11") == []
    finally:
        await store.close()
