"""Forwarded channels (`ssh -L`, `-W`, `-D`) as sessions of the one session lifecycle.

Each channel is checked when it opens (the certificate again, as for every session, and the
destination against the roles' `forward_to` patterns), is a session in the store and the live
registry (so revoke, an auditor's `kill`, window end, user removal and the idle timeout end it like
any other), and is audited when it opens, is refused, and closes (with its byte counts). The bytes
go through the target host: the bastion opens a `direct-tcpip` channel on its own upstream
connection to the target, so the destination is whatever the target can reach, as the user would
see it from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.stream import SSHTCPStreamSession

from bastion import policy
from bastion.ca import Forwarding
from bastion.config import Target
from bastion.models import SessionRecord, SessionStatus, utcnow
from bastion.sessions import LiveSession, watch_window
from bastion.ssh.upstream import UpstreamError, connect_upstream
from recorder import RECORDING_SUFFIX

if TYPE_CHECKING:
    from bastion.ssh.frontdoor import FrontDoor
    from bastion.ssh.login import Identity, Login

__all__ = ["FORWARD_KIND", "Forwards"]

log = logging.getLogger("bastion.ssh.forwarding")

FORWARD_KIND = "forward"
# Bytes buffered towards a slow side before the other side stops being read.
HIGH_WATER = 256 * 1024
READ_SIZE = 64 * 1024


def _refused(reason: str) -> asyncssh.ChannelOpenError:
    return asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"bastion: {reason}")


class Forwards:
    """Opens forwarded channels for the front door and runs each in the session lifecycle."""

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self._upstreams: dict[int, asyncssh.SSHClientConnection] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def open(self, login: Login, identity: Identity, host: str, port: int
                   ) -> asyncssh.SSHTCPSession[bytes]:
        """Check one channel's destination and the certificate behind it; start its session."""
        bastion = self.door.bastion
        config = bastion.config
        assert identity.facts is not None
        destination = policy.forward_destination(host, port)
        facts = await self.door.refreshed(identity.facts)
        target = config.target(facts.username)
        person = facts.issued.user if facts.issued else identity.person
        reason = await self.door.sign_in_refusal(facts, identity.key, login.peer)
        config = bastion.config  # a sign-in may have just been re-read
        reason = reason or policy.check_login(config, facts, utcnow())
        if reason is None and target is not None and facts.issued is not None:
            reason = policy.forward_refusal(config, facts.issued.user, target, host, port)
        if reason is None and target is not None and facts.issued is not None and \
                facts.request is not None:
            reason = self.door.reserve(login, facts.issued.user)
        if reason is not None or target is None or facts.issued is None or facts.request is None:
            reason = reason or "the certificate is no longer on record"
            await bastion.audit.record("forward.refused", actor=person, target=facts.username,
                                       destination=destination, reason=reason, client=login.peer)
            raise _refused(reason)
        window_end = min(facts.valid_before, facts.issued.valid_before)
        record = SessionRecord(
            id=uuid.uuid4().hex[:16], user=facts.issued.user, target=target.name, kind=FORWARD_KIND,
            request_id=facts.request.id, cert_serial=facts.serial, client=login.peer,
            bastion_id=config.server.bastion_id, started_at=utcnow(), recording=None,
        )
        if target.kind != "ssh":
            record = dataclasses.replace(
                record, kind=target.kind,
                recording=str(config.recordings.dir / f"{record.id}{RECORDING_SUFFIX}"))
            return await self._open_database(login, record, window_end, target,
                                             facts.request.unmasked)
        try:
            upstream = await self._upstream(login, target, facts.issued.user, window_end)
            reader, writer = await upstream.open_connection(host, port)
        except BaseException as exc:
            self.door.release(login, facts.issued.user)
            if not isinstance(exc, UpstreamError | asyncssh.Error | OSError):
                raise
            why = getattr(exc, "reason", None) or str(exc)
            await bastion.audit.record("forward.failed", actor=person, target=target.name,
                                       destination=destination, error=why, client=login.peer)
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED,
                f"bastion: {target.name} could not reach {destination}: {why}") from None
        try:
            await bastion.store.start_session(record)
        except BaseException:
            self.door.release(login, record.user)
            writer.close()
            raise
        live = LiveSession(record, window_end)
        relay = _Relay(live, reader, writer)
        self.door.track(login, live)
        await bastion.audit.record(
            "forward.opened", actor=record.user, target=record.target, request_id=record.request_id,
            session_id=record.id, destination=destination, client=login.peer,
        )
        self.door.spawn(self._run(login, live, relay, destination))
        return relay

    async def _open_database(self, login: Login, record: SessionRecord, window_end: Any,
                             target: Target, unmasked: bool) -> asyncssh.SSHTCPSession[bytes]:
        """A native database client's connection: a session of the target's kind, recorded,
        whose bytes the protocol's relay carries (bastion.wire)."""
        try:
            await self.door.bastion.store.start_session(record)
        except BaseException:
            self.door.release(login, record.user)
            raise
        live = LiveSession(record, window_end, unmasked=unmasked)
        self.door.track(login, live)

        def started(reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]) -> None:
            self.door.spawn(self._run_database(login, live, target, reader, writer))

        return SSHTCPStreamSession(started)

    async def _run_database(self, login: Login, live: LiveSession, target: Target,
                            reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]
                            ) -> None:
        from bastion.wire.session import run_database_channel

        bastion = self.door.bastion
        record = live.record
        watcher = asyncio.create_task(
            watch_window(live, bastion.config.server.idle_timeout, lambda _text: None))
        status, reason = SessionStatus.ENDED_ABNORMALLY, "internal error"
        try:
            status, reason = await run_database_channel(bastion, live, target, reader, writer)
        finally:
            watcher.cancel()
            writer.close()
            self.door.untrack(login, live)
            await bastion.store.end_session(record.id, status=status, reason=reason, now=utcnow())
            await bastion.audit.record(
                "session.ended", actor=record.user, target=record.target,
                request_id=record.request_id, session_id=record.id, reason=reason,
            )

    async def _run(self, login: Login, live: LiveSession, relay: _Relay, destination: str) -> None:
        bastion = self.door.bastion
        record = live.record
        watcher = asyncio.create_task(
            watch_window(live, bastion.config.server.idle_timeout, lambda _text: None))
        try:
            await relay.run()
        finally:
            watcher.cancel()
            self.door.untrack(login, live)
            reason = live.end_reason or relay.end_reason
            await bastion.store.end_session(record.id, status=SessionStatus.ENDED, reason=reason,
                                            now=utcnow())
            await bastion.audit.record(
                "forward.closed", actor=record.user, target=record.target,
                request_id=record.request_id, session_id=record.id, destination=destination,
                reason=reason, bytes_in=relay.bytes_in, bytes_out=relay.bytes_out,
            )
            if live.end_reason is not None:
                self.door.ended_by_bastion(login, live.end_reason)

    async def _upstream(self, login: Login, target: Target, user: str, window_end: Any
                        ) -> asyncssh.SSHClientConnection:
        """The connection's one upstream connection for its forwarded channels."""
        key = id(login)
        async with self._locks.setdefault(key, asyncio.Lock()):
            upstream = self._upstreams.get(key)
            if upstream is None:
                upstream = await connect_upstream(
                    self.door.bastion.upstream_ca, target, user, f"fwd-{uuid.uuid4().hex[:12]}",
                    window_end, Forwarding(port=True))
                self._upstreams[key] = upstream
            return upstream

    def forget(self, login: Login) -> None:
        """The client connection closed: close its upstream connection."""
        self._locks.pop(id(login), None)
        upstream = self._upstreams.pop(id(login), None)
        if upstream is not None:
            upstream.close()


class _Relay(asyncssh.SSHTCPSession[bytes]):
    """The client's channel on one side, the upstream `direct-tcpip` streams on the other."""

    def __init__(self, live: LiveSession, reader: asyncssh.SSHReader[bytes],
                 writer: asyncssh.SSHWriter[bytes]) -> None:
        self.live = live
        self.reader = reader
        self.writer = writer
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.bytes_in = 0  # from the client
        self.bytes_out = 0  # to the client
        self.end_reason = "closed"
        self._client_writable = asyncio.Event()
        self._client_writable.set()
        self._closed = asyncio.Event()
        self._opened = asyncio.Event()
        self._draining = False
        self._drain_task: asyncio.Future[None] | None = None

    # the client's channel ----------------------------------------------------------------

    def connection_made(self, chan: Any) -> None:
        assert isinstance(chan, asyncssh.SSHTCPChannel)
        self.chan = chan
        self._opened.set()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bytes_in += len(data)
        self.live.touch()
        self.writer.write(data)
        if self.chan is not None and not self._draining and \
                self.writer.channel.get_write_buffer_size() > HIGH_WATER:
            self._draining = True
            self.chan.pause_reading()
            self._drain_task = asyncio.ensure_future(self._drain_upstream())

    async def _drain_upstream(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError, ConnectionError):
            await self.writer.drain()
        self._draining = False
        if self.chan is not None and not self._closed.is_set():
            self.chan.resume_reading()

    def eof_received(self) -> bool:
        with contextlib.suppress(asyncssh.Error, OSError):
            self.writer.write_eof()
        return True  # keep the channel half-open: the other direction may still carry data

    def pause_writing(self) -> None:
        self._client_writable.clear()

    def resume_writing(self) -> None:
        self._client_writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()
        self._client_writable.set()

    # the session -------------------------------------------------------------------------

    async def run(self) -> None:
        """Relay upstream → client until either side closes or the session is ended."""
        pump = asyncio.create_task(self._pump())
        closed = asyncio.create_task(self._closed.wait())
        stopped = asyncio.create_task(self.live.stop.wait())
        try:
            await asyncio.wait({pump, closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done() and not pump.cancelled() and pump.exception() is not None:
                self.end_reason = f"the destination failed: {pump.exception()}"
            elif self.live.end_reason is None and not pump.done():
                self.end_reason = "the client closed the channel"
        finally:
            for task in (pump, closed, stopped):
                task.cancel()
            self.writer.close()
            if self.chan is not None:
                self.chan.close()

    async def _pump(self) -> None:
        await self._opened.wait()
        while True:
            data = await self.reader.read(READ_SIZE)
            if not data:
                break
            await self._client_writable.wait()
            if self.chan is None or self._closed.is_set():
                return
            self.bytes_out += len(data)
            self.chan.write(data)
        if self.chan is not None and not self._closed.is_set():
            self.chan.write_eof()
            await self._closed.wait()  # the client closes once it has read everything
