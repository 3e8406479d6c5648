"""A native database client's connection through the bastion: one forwarded channel, one session.

`ssh -L 15432:demo-pg:5432 demo-pg@bastion` and then `psql -h 127.0.0.1 -p 15432`: each
connection the client makes arrives as a `direct-tcpip` channel to the target's name. The
forwarded-channel lifecycle (bastion.ssh.forwarding) checks it and holds it as a session; this
module runs what is inside: it logs in to the database with the grant's own account
(bastion.db.grants), opens the recording, and hands both ends to the protocol's relay
(bastion.wire.postgres, bastion.wire.mysql). The relay tells this module what happened —
the client program, each statement and its result, protocol errors — and this module writes it to
the recording, the masked query log and the audit trail, in order, off the relay's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from bastion.db.grants import GrantLogin, StoreLookupBudget
from bastion.models import QueryRecord, SessionStatus, utcnow
from bastion.recording import RecordingUnavailable
from bastion.sql.policy import SqlPolicy
from bastion.wire.gate import StatementGate
from recorder import RecordingError, RecordingWriter

if TYPE_CHECKING:
    from bastion.config import Target
    from bastion.server import Bastion
    from bastion.sessions import LiveSession

__all__ = ["ClientReader", "ClientWriter", "Statement", "WireContext", "run_database_channel"]

log = logging.getLogger("bastion.wire")

RECORDED_ROWS = 200  # rows of each result kept as structured data in the recording
LOG_QUEUE = 1024  # statements waiting to be logged before the relay waits for the log
LOG_BATCH = 256  # statements written to the store in one transaction, at most
# How long the log waits after a statement for more to join its transaction: a busy client's
# statements then cost one commit per batch instead of one each (the relay never waits for it).
LOG_LINGER = 0.05


class ClientReader(Protocol):
    """The client's side of the channel, as the relays read it."""

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes; b"" at end of input."""
        ...


class ClientWriter(Protocol):
    """The client's side of the channel, as the relays write it."""

    def write(self, data: bytes) -> None:
        """Queue bytes for the client."""
        ...

    async def drain(self) -> None:
        """Wait until the client has taken what was queued (flow control)."""
        ...

    def close(self) -> None:
        """Close the channel."""
        ...


@dataclass(slots=True)
class Statement:
    """One statement as the client sent it and the server answered, for the logs."""

    redacted: str
    kind: str
    started: datetime = field(default_factory=utcnow)
    refused: str | None = None
    error: str | None = None
    status: str | None = None  # the server's command tag, e.g. "SELECT 3"
    rows: int | None = None
    duration_ms: float = 0.0
    columns: list[str] | None = None
    recorded: list[list[str]] = field(default_factory=list)  # the first RECORDED_ROWS rows
    truncated: bool = False  # more rows than were recorded

    def add_row(self, row: list[str]) -> None:
        """Keep a row for the recording (the first RECORDED_ROWS of each result)."""
        if len(self.recorded) < RECORDED_ROWS:
            self.recorded.append(row)
        else:
            self.truncated = True


class SessionRefused(Exception):
    """The session cannot start (no recording, the grant's account cannot log in); the relay
    tells the client in its protocol's words."""


class WireContext:
    """What a relay is given: the target, the live session and, once `open` succeeds, the
    recording, the gate and the grant's account; and where it reports what happened."""

    def __init__(self, bastion: Bastion, live: LiveSession, target: Target) -> None:
        self.bastion = bastion
        self.live = live
        self.target = target
        self.program: str | None = None
        self._recording: RecordingWriter | None = None
        self._grant: GrantLogin | None = None
        self._gate: StatementGate | None = None
        self._queue: asyncio.Queue[Statement | None] = asyncio.Queue(LOG_QUEUE)
        self._writer: asyncio.Task[None] | None = None

    @property
    def recording(self) -> RecordingWriter:
        """The session's recording (after `open`)."""
        assert self._recording is not None
        return self._recording

    @property
    def grant(self) -> GrantLogin:
        """The grant's own database account (after `open`)."""
        assert self._grant is not None
        return self._grant

    @property
    def gate(self) -> StatementGate:
        """The statement gate (after `open`)."""
        assert self._gate is not None
        return self._gate

    async def open(self) -> None:
        """Start the recording and log the grant's account in (created if need be), or raise
        SessionRefused saying why not."""
        record = self.live.record
        try:
            self._recording = self.bastion.recordings.open(record, 80, 24, "", command=None)
        except RecordingUnavailable as exc:
            await self.bastion.audit.record("recording.failed", actor=record.user,
                                            target=record.target, session_id=record.id,
                                            error=str(exc))
            raise SessionRefused(f"session refused: {exc} (no recording, no session)") from None
        try:
            request = await self.bastion.store.get_request(record.request_id)
            if request is None:
                raise LookupError(f"request {record.request_id} is gone")
            self._grant = await self.bastion.db_grants.login(self.target, request)
        except Exception as exc:  # the grants raise BastionError with clean messages
            with contextlib.suppress(RecordingError):
                await self.recording.marker(f"database login failed: {exc}")
            raise SessionRefused(f"cannot open {self.target.name}: {exc}") from None
        dialect = "mysql" if self.target.kind == "mysql" else "postgres"
        self._gate = StatementGate(SqlPolicy.for_target(self.target), dialect, self._grant.lookups,
                                   StoreLookupBudget(self.bastion.store, record.request_id))
        self._writer = asyncio.create_task(self._write_log())

    async def started(self, program: str | None, database: str | None) -> None:
        """The client's start-up was read: audit the session's start with the client program."""
        record = self.live.record
        self.program = program
        await self.bastion.audit.record(
            "session.started", actor=record.user, target=record.target,
            request_id=record.request_id, session_id=record.id, client=record.client,
            program=program, database=database, native=True,
        )
        if self._recording is not None:
            with contextlib.suppress(RecordingError):
                await self.recording.marker(f"native client: {program or 'unnamed'}")

    async def log(self, statement: Statement) -> None:
        """Record one statement and its result (queued: the relay does not wait for the disk,
        unless the log falls LOG_QUEUE statements behind)."""
        if self._writer is not None and self._writer.done():
            self._writer.result()  # the recording failed: no recording, no session
        await self._queue.put(statement)

    async def protocol_error(self, reason: str) -> None:
        """The client sent something the relay cannot accept: audit it."""
        record = self.live.record
        await self.bastion.audit.record("wire.protocol_error", actor=record.user,
                                        target=record.target, session_id=record.id, error=reason)
        if self._recording is not None:
            with contextlib.suppress(RecordingError):
                await self.recording.marker(f"protocol error: {reason}")

    async def close(self) -> None:
        """Write what is still queued, then close the recording."""
        try:
            if self._writer is not None:
                await self._queue.put(None)
                await self._writer
        finally:
            if self._recording is not None:
                if self.live.end_reason is not None:
                    with contextlib.suppress(RecordingError):
                        await self._recording.marker(f"ended by the bastion: {self.live.end_reason}")
                with contextlib.suppress(RecordingError, TimeoutError):
                    async with asyncio.timeout(5):
                        await self._recording.close()

    async def _write_log(self) -> None:
        """Write queued statements: each to the recording, then those of the last LOG_LINGER
        seconds to the store in one transaction (a busy client's statements cost one commit
        per batch, not one each)."""
        record = self.live.record
        ending = False
        while not ending:
            batch = [await self._queue.get()]
            if batch[0] is not None and self._queue.qsize() < LOG_BATCH:
                await asyncio.sleep(LOG_LINGER)
            while not self._queue.empty() and len(batch) < LOG_BATCH:
                batch.append(self._queue.get_nowait())
            ending = batch[-1] is None
            statements = [st for st in batch if st is not None]
            for st in statements:
                try:
                    await self._record(st)
                except RecordingError:
                    raise
                except Exception:  # e.g. an event over the size limit: the log still gets it
                    log.exception("recording a statement of session %s failed", record.id)
            await self._store(statements)

    async def _store(self, statements: list[Statement]) -> None:
        """The query log and the audit trail: one transaction for the batch; if the store
        refuses it, one statement at a time, so one bad row loses only itself."""
        record = self.live.record
        rows = [QueryRecord(
            session_id=record.id, user=record.user, target=record.target,
            # PostgreSQL (a cluster's store) takes no NUL in text, which MySQL statements may hold.
            statement=st.redacted.replace("\x00", "\\x00"), kind=st.kind, started_at=st.started,
            duration_ms=st.duration_ms, rows=st.rows, blocked=st.refused, error=st.error,
        ) for st in statements]
        try:
            await self.bastion.store.record_queries(rows)
        except Exception:
            log.exception("logging %d statements of session %s failed; one at a time",
                          len(rows), record.id)
            for row in rows:
                try:
                    await self.bastion.store.record_queries([row])
                except Exception:  # the store is down: the recording still has it
                    log.exception("logging a statement of session %s failed", record.id)
        for st, row in zip(statements, rows, strict=True):
            if st.refused:
                try:
                    await self.bastion.audit.record(
                        "sql.blocked", actor=record.user, target=record.target,
                        session_id=record.id, statement=row.statement, reason=st.refused)
                except Exception:
                    log.exception("auditing a refused statement of session %s failed", record.id)

    async def _record(self, st: Statement) -> None:
        await self.recording.sql_statement({
            "statement": st.redacted, "kind": st.kind, "blocked": st.refused, "error": st.error,
            "rows": st.rows, "status": st.status, "duration_ms": round(st.duration_ms, 3),
        })
        if st.columns:
            await self.recording.sql_result({
                "columns": st.columns, "masked": {}, "rows": st.recorded, "rowcount": st.rows,
                "truncated": st.truncated,
            })


Relay = Callable[[WireContext, ClientReader, ClientWriter], Awaitable[str]]


def _relay_for(kind: str) -> Relay:
    if kind == "postgres":
        from bastion.wire.postgres import relay_postgres

        return relay_postgres
    from bastion.wire.mysql import relay_mysql

    return relay_mysql


async def run_database_channel(bastion: Bastion, live: LiveSession, target: Target,
                               reader: ClientReader, writer: ClientWriter
                               ) -> tuple[SessionStatus, str]:
    """Run one native client connection to its end; return the session's status and reason."""
    context = WireContext(bastion, live, target)
    try:
        reason = await _relay_for(target.kind)(context, reader, writer)
    finally:
        await context.close()
    if live.end_reason is not None:
        return SessionStatus.ENDED, live.end_reason
    return SessionStatus.ENDED, reason
