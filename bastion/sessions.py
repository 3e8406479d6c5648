"""A target session's life: checks passed → recording → upstream → relay → end, audited throughout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import asyncssh

from bastion.config import Target
from bastion.durations import format_duration
from bastion.models import SessionRecord, SessionStatus, utcnow
from bastion.recording import RecordingUnavailable
from bastion.ssh.shell import (
    CLIENT_GONE,
    SessionEnd,
    ShellRelay,
    TransferRefused,
    size_notice,
    terminal_size,
    transfer_refusal,
)
from bastion.ssh.upstream import UpstreamError, connect_upstream
from recorder import RecordingError, RecordingWriter

if TYPE_CHECKING:
    from bastion.server import Bastion

__all__ = ["ENDED_BY_BASTION", "LiveSession", "close_recording", "run_target_session", "watch_window"]

log = logging.getLogger("bastion.sessions")

WARN_BEFORE_END = 300.0  # seconds before the window ends to warn the user
REFUSED = 1
ENDED_BY_BASTION = 255
# How long an ended session waits for its recording to take the last events and close.
RECORDING_GRACE = 5.0


class LiveSession:
    """A target session in progress, so revocation, reloads and auditors can end it."""

    def __init__(self, record: SessionRecord, window_end: datetime, *, unmasked: bool = False
                 ) -> None:
        self.record = record
        self.window_end = window_end
        self.unmasked = unmasked  # an approved unmasked grant (SQL targets)
        self.end_reason: str | None = None
        self.stop = asyncio.Event()
        self.last_input = time.monotonic()  # the idle timeout's clock (touch, watch)

    def touch(self) -> None:
        """Note user input now (for the idle timeout; time.monotonic, not the loop's clock: asking
        the loop costs a getpid() system call per relayed message)."""
        self.last_input = time.monotonic()

    def end(self, reason: str) -> None:
        """End the session now, telling the user why."""
        if self.end_reason is None:
            self.end_reason = reason
            self.stop.set()


def _say(process: asyncssh.SSHServerProcess[bytes], text: str) -> None:
    newline = "\r\n" if process.term_type else "\n"
    with contextlib.suppress(OSError):  # the client may have gone already
        process.stderr.write(f"{newline}bastion: {text}{newline}".encode())


async def watch_window(live: LiveSession, idle_timeout: float | None,
                       say: Callable[[str], None]) -> None:
    """Warn (through `say`) before the window ends, then end it; end idle sessions."""
    total = (live.window_end - live.record.started_at).total_seconds()
    warn_before = min(WARN_BEFORE_END, total / 2)
    warned = False
    while not live.stop.is_set():
        left = (live.window_end - utcnow()).total_seconds()
        if left <= 0:
            live.end("your access window has ended")
            return
        if not warned and left <= warn_before:
            say(f"your access ends in {_seconds(left)} ({live.window_end:%H:%M:%S} UTC); "
                          "ask for more time with `request`")
            warned = True
        wake = [left] if warned else [left - warn_before, left]
        if idle_timeout:
            idle = time.monotonic() - live.last_input
            if idle >= idle_timeout:
                live.end(f"idle for {_seconds(idle_timeout)}")
                return
            wake.append(idle_timeout - idle)
        # Sleep until the next thing that can happen (not every second: a thousand idle sessions
        # would keep a core busy), at most a minute so a changed clock is noticed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.stop.wait(), min(60.0, max(0.05, min(wake))))


def _seconds(seconds: float) -> str:
    return format_duration(timedelta(seconds=max(1, round(seconds))))


async def run_target_session(
    bastion: Bastion, process: asyncssh.SSHServerProcess[bytes], live: LiveSession, target: Target
) -> tuple[SessionStatus, str]:
    """Run an SSH target session to its end; return its final status and reason."""
    record = live.record
    refusal = transfer_refusal(process)
    if refusal:
        _say(process, refusal)
        await bastion.audit.record("transfer.refused", actor=record.user, target=record.target,
                                   session_id=record.id, reason=refusal, detected="command")
        process.exit(REFUSED)
        return SessionStatus.ENDED, f"refused: {refusal}"
    asked_cols, asked_rows, _, _ = process.term_size
    cols, rows = terminal_size(asked_cols, asked_rows)
    notice = size_notice(asked_cols, asked_rows) if process.term_type else None
    if notice is not None:
        _say(process, notice)
    try:
        recording = bastion.recordings.open(record, cols, rows, process.term_type or "",
                                            command=process.command)
    except RecordingUnavailable as exc:
        _say(process, f"session refused: {exc} (no recording, no session)")
        await bastion.audit.record("recording.failed", actor=record.user, target=record.target,
                                   session_id=record.id, error=str(exc))
        process.exit(REFUSED)
        return SessionStatus.ENDED, f"refused: {exc}"
    closed = False
    try:
        status, reason = await _connected(bastion, process, live, target, recording)
    finally:
        closed = await close_recording(recording)
    if not closed and status is SessionStatus.ENDED:
        # The file lacks its end: say so, so that `verify` reads "cut off", not "cut after the fact".
        if recording.failed:  # already ended, audited and explained as a recording failure
            return SessionStatus.ENDED_ABNORMALLY, reason
        await bastion.audit.record("recording.failed", actor=record.user, target=record.target,
                                   session_id=record.id, error="the recording could not be closed")
        return SessionStatus.ENDED_ABNORMALLY, f"{reason}; the recording could not be closed"
    return status, reason


async def close_recording(recording: RecordingWriter) -> bool:
    """Close a recording within RECORDING_GRACE; whether it was closed whole.

    A session ends whatever its recorder is doing: a writer still busy after the grace period
    is left to finish in its thread (its last events may be missing), never waited for.
    """
    try:
        async with asyncio.timeout(RECORDING_GRACE):
            await recording.close()
    except TimeoutError:
        log.error("the recording %s did not close within %.0f s", recording.path, RECORDING_GRACE)
        return False
    except RecordingError as exc:
        log.error("closing the recording %s failed: %s", recording.path, exc)
        return False
    return True


async def _connected(
    bastion: Bastion, process: asyncssh.SSHServerProcess[bytes], live: LiveSession,
    target: Target, recording: RecordingWriter,
) -> tuple[SessionStatus, str]:
    record = live.record
    watcher = asyncio.create_task(
        watch_window(live, bastion.config.server.idle_timeout, lambda text: _say(process, text)))
    try:
        if target.kind != "ssh":
            from bastion.console.sql_session import run_sql_session

            try:
                return await run_sql_session(bastion, process, live, target, recording)
            except RecordingError as exc:
                return await _recording_failed(bastion, process, live, exc)
        try:
            upstream = await connect_upstream(bastion.upstream_ca, target, record.user, record.id,
                                              live.window_end)
        except UpstreamError as exc:
            _say(process, f"cannot open {target.name}: {exc}")
            await recording.marker(f"upstream failed: {exc}")
            process.exit(REFUSED)
            return SessionStatus.ENDED, f"upstream failed: {exc}"
        relay = ShellRelay(process, recording, live.touch)
        try:
            end = await relay.run(upstream, live.stop)
        except RecordingError as exc:
            return await _recording_failed(bastion, process, live, exc)
        except TransferRefused as exc:
            _say(process, str(exc))
            with contextlib.suppress(RecordingError):
                await recording.marker(f"bastion: refused a file transfer: {exc}")
            await bastion.audit.record("transfer.refused", actor=record.user, target=record.target,
                                       session_id=record.id, reason=str(exc), detected="protocol")
            process.exit(REFUSED)
            return SessionStatus.ENDED, f"refused: {exc}"
        except (asyncssh.Error, OSError) as exc:
            live.end(f"the connection to {target.name} failed: {exc}")
            end = SessionEnd(reason="upstream failed")
        finally:
            upstream.close()
        return await _finish(process, live, recording, end)
    finally:
        watcher.cancel()


async def _recording_failed(bastion: Bastion, process: asyncssh.SSHServerProcess[bytes],
                            live: LiveSession, exc: RecordingError) -> tuple[SessionStatus, str]:
    record = live.record
    reason = f"the recording failed ({exc}); no recording, no session"
    live.end(reason)
    _say(process, f"session ended: {reason}")
    await bastion.audit.record("recording.failed", actor=record.user, target=record.target,
                               session_id=record.id, error=str(exc))
    process.exit(ENDED_BY_BASTION)
    return SessionStatus.ENDED, reason


async def _finish(
    process: asyncssh.SSHServerProcess[bytes], live: LiveSession, recording: RecordingWriter,
    end: SessionEnd,
) -> tuple[SessionStatus, str]:
    if end.reason == CLIENT_GONE and live.end_reason is None:
        with contextlib.suppress(RecordingError):
            await recording.marker(CLIENT_GONE)
        return SessionStatus.ENDED, CLIENT_GONE
    if live.end_reason is not None:
        # The user's channel closes first, whatever the recorder is doing; the marker follows,
        # within a bounded wait (the recording is closed, or abandoned, by run_target_session).
        _say(process, f"session ended: {live.end_reason}")
        process.exit(ENDED_BY_BASTION)
        with contextlib.suppress(RecordingError, TimeoutError):
            async with asyncio.timeout(RECORDING_GRACE):
                await recording.marker(f"ended by the bastion: {live.end_reason}")
                await recording.exit(status=ENDED_BY_BASTION)
        return SessionStatus.ENDED, live.end_reason
    with contextlib.suppress(RecordingError):
        if end.signal is not None:
            await recording.exit(signal=end.signal[0])
        else:
            await recording.exit(status=end.status if end.status is not None else 0)
    if end.signal is not None:
        name, core, msg, lang = end.signal
        process.exit_with_signal(name, core, msg, lang)
        return SessionStatus.ENDED, f"target process killed by signal {name}"
    status = end.status if end.status is not None else 0
    process.exit(status)
    return SessionStatus.ENDED, f"exit status {status}"
