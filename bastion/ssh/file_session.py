"""An sftp session's life: the policy check, the recording, the target's SFTP server, and its
end (revoke, kill, window end, user removal, idle timeout: the channel and the connection to
the target close at once, and no request is relayed after)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncssh

from bastion import policy
from bastion.config import Target
from bastion.models import SessionStatus
from bastion.recording import RecordingUnavailable
from bastion.sessions import ENDED_BY_BASTION, LiveSession, close_recording, watch_window
from bastion.ssh.file_transfer import TransferLimits, TransferRules, TransferServer
from bastion.ssh.upstream import UpstreamError, connect_upstream
from recorder import RecordingError

if TYPE_CHECKING:
    from bastion.server import Bastion

__all__ = ["refusing_server", "start_transfer"]


def refusing_server(chan: asyncssh.SSHServerChannel[bytes], reason: str) -> TransferServer:
    """For a refused session: a server that relays nothing (the channel is already closing)."""
    rules = TransferRules(refusal=lambda _: reason, limits=lambda: TransferLimits(0, 0),
                          ended=lambda: reason, touch=_nothing, stop=_ignore)
    return TransferServer(chan, None, rules, None, _no_audit, _no_exit)


async def _no_audit(*_: object, **__: object) -> None:
    return None


def _nothing() -> None:
    return None


def _ignore(_: str) -> None:
    return None


async def _no_exit() -> None:
    return None


async def start_transfer(bastion: Bastion, chan: asyncssh.SSHServerChannel[bytes],
                         live: LiveSession, target: Target,
                         end: Callable[[SessionStatus, str], Awaitable[None]]) -> TransferServer:
    """Open the SFTP session on the target for a session that `end` closes; a refusal (policy,
    recording, target) is said on the channel's stderr, audited, and ends the session."""
    record = live.record

    def current() -> Target | None:
        """The target as the config says now (a reload applies to live sessions)."""
        return bastion.config.target(target.name)

    def refusal(direction: str) -> str | None:
        now = current()
        if now is None:
            return f"{target.name} is no longer in the configuration"
        return policy.transfer_refusal(bastion.config, record.user, now, direction)

    def limits() -> TransferLimits:
        now = current() or target
        return TransferLimits(now.max_file_size, now.max_transfer_size)

    def say(text: str) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            chan.write_stderr(f"bastion: {text}\r\n".encode())

    audit = functools.partial(bastion.audit.record, actor=record.user, target=record.target,
                              session_id=record.id)

    async def refused(event: str, reason: str, **details: Any) -> TransferServer:
        say(reason)
        chan.exit(1)
        await audit(event, reason=reason, **details)
        await end(SessionStatus.ENDED, f"refused: {reason}")
        return refusing_server(chan, reason)

    refused_session = policy.transfer_session_refusal(bastion.config, record.user, target)
    if refused_session is not None:
        return await refused("transfer.refused", refused_session, subsystem="sftp")
    try:
        recording = bastion.recordings.open(record, 80, 24, "", command="sftp")
    except RecordingUnavailable as exc:
        return await refused("recording.failed", f"session refused: {exc} (no recording, "
                             "no session)")
    try:
        upstream = await connect_upstream(bastion.upstream_ca, target, record.user, record.id,
                                          live.window_end)
    except UpstreamError as exc:
        await close_recording(recording)
        return await refused("transfer.failed", f"cannot open {target.name}: {exc}")
    try:
        client = await upstream.start_sftp_client(path_encoding=None)
    except (asyncssh.Error, OSError) as exc:
        upstream.close()
        await close_recording(recording)
        return await refused("transfer.failed", f"{target.name} offers no SFTP: {exc}")
    def disconnect() -> None:
        client.exit()
        upstream.close()

    try:
        await recording.marker(f"sftp: session on {target.name}; allowed: "
                               + ", ".join(d for d in ("download", "upload") if refusal(d) is None))
    except RecordingError as exc:
        disconnect()
        await close_recording(recording)
        return await refused("recording.failed", f"session refused: the recording failed ({exc}); "
                             "no recording, no session")
    watcher = asyncio.create_task(watch_window(live, bastion.config.server.idle_timeout, say))
    finished = False

    async def on_exit() -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        watcher.cancel()
        for task in (stopper, gone):
            if task is not asyncio.current_task():  # (on_exit may run inside either)
                task.cancel()
        disconnect()
        reason = "the client ended the sftp session"
        with contextlib.suppress(OSError, asyncssh.Error):
            chan.exit(0 if live.end_reason is None else ENDED_BY_BASTION)  # scp checks it
        if live.end_reason is not None:
            reason = live.end_reason
            with contextlib.suppress(RecordingError):
                await recording.marker(f"ended by the bastion: {live.end_reason}")
        closed = await close_recording(recording)
        await end(SessionStatus.ENDED if closed else SessionStatus.ENDED_ABNORMALLY, reason)

    rules = TransferRules(refusal=refusal, limits=limits, ended=lambda: live.end_reason,
                          touch=live.touch, stop=live.end)
    server = TransferServer(chan, client, rules, recording, audit, on_exit)
    stopper = asyncio.create_task(_end_when_stopped(live, chan, say, disconnect, server))
    gone = asyncio.create_task(_end_when_closed(chan, server))
    return server


async def _end_when_closed(chan: asyncssh.SSHServerChannel[bytes], server: TransferServer) -> None:
    """The client's channel closed: the session ends even where asyncssh does not call the
    server's exit() (a client that leaves before its first packet, a close that failed)."""
    await chan.wait_closed()
    await server.end()


async def _end_when_stopped(live: LiveSession, chan: asyncssh.SSHServerChannel[bytes],
                            say: Callable[[str], None], disconnect: Callable[[], None],
                            server: TransferServer) -> None:
    """Revoke, kill, window end, user removal, idle: the target's connection closes at once (no
    request the client sent before is relayed after), the client is told and let go, and the
    session ends now, not when the client gets round to closing its channel."""
    await live.stop.wait()
    disconnect()
    say(f"session ended: {live.end_reason}")
    with contextlib.suppress(OSError, asyncssh.Error):
        chan.exit(ENDED_BY_BASTION)
    await server.end()
