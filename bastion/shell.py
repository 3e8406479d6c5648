"""Shell sessions: the user's SSH channel relayed to the target, every byte recorded.

Phases: open the recording (no recording, no session) → connect upstream with a fresh upstream-CA
certificate → relay both ways until the target exits or the session is ended (window over,
revoked, user removed, idle, killed by an auditor, recording failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from recorder import RecordingWriter

__all__ = ["CLIENT_GONE", "SessionEnd", "ShellRelay", "transfer_refusal"]

READ_SIZE = 256 * 1024
CLIENT_GONE = "the client disconnected"


def transfer_refusal(process: asyncssh.SSHServerProcess[bytes]) -> str | None:
    """Why a file-transfer request (sftp or scp) is refused, or None for a shell or command.

    File transfers through the bastion are refused: they would bypass the terminal recording's
    meaning, and users who need files on a target get them there by the target's own means.
    """
    if process.subsystem:
        return (f"the {process.subsystem} subsystem is not available through the bastion; file "
                "transfer (sftp, scp) is disabled: copy files by the target's own deployment means")
    command = (process.command or "").strip()
    if command.split(" ", 1)[0] in ("scp", "/usr/bin/scp", "rsync", "sftp-server"):
        return ("scp/rsync are not available through the bastion; file transfer is disabled: copy "
                "files by the target's own deployment means")
    return None


@dataclass
class SessionEnd:
    """How a session ended: exit status or signal from the target, or the bastion's reason."""

    status: int | None = None
    signal: tuple[str, bool, str, str] | None = None
    reason: str | None = None


class ShellRelay:
    """Relays one shell or command session between the user and the target."""

    def __init__(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        recording: RecordingWriter,
        on_input: Callable[[], None],
    ) -> None:
        self.process = process
        self.recording = recording
        self.on_input = on_input

    async def run(self, upstream: asyncssh.SSHClientConnection, stop: asyncio.Event) -> SessionEnd:
        """Relay until the target's process exits or `stop` is set."""
        front = self.process
        cols, rows, pw, ph = front.term_size
        remote = await upstream.create_process(
            front.command,
            term_type=front.term_type,
            term_size=(cols, rows, pw, ph) if front.term_type else None,
            term_modes=front.term_modes or None,
            encoding=None,
            # The client's choice, command or not (`ssh -t host top`); asyncssh's "auto" would
            # drop the PTY of a command.
            request_pty=bool(front.term_type),
        )
        relays = [
            asyncio.create_task(self._pump_out(remote.stdout, front.stdout)),
            asyncio.create_task(self._pump_out(remote.stderr, front.stderr)),
            asyncio.create_task(self._pump_in(remote)),
        ]
        stopped: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        exited: asyncio.Task[Any] = asyncio.create_task(self._outputs_done(remote, relays[:2]))
        # A client that goes away looks like stdin EOF; without this the session (and the
        # target's command) would stay live until the command ends by itself.
        gone: asyncio.Task[Any] = asyncio.create_task(front.channel.wait_closed())
        pending: set[asyncio.Task[Any]] = {stopped, exited, gone, relays[2]}
        try:
            while True:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if stopped in done:
                    return SessionEnd(reason="stopped")
                if gone in done and exited not in done:
                    return SessionEnd(reason=CLIENT_GONE)
                for task in done:
                    task.result()  # a recording or channel failure surfaces here
                if exited in done:
                    return SessionEnd(status=remote.exit_status, signal=remote.exit_signal)
        finally:
            for task in (*relays, stopped, exited, gone):
                task.cancel()
            remote.close()

    async def _outputs_done(
        self, remote: asyncssh.SSHClientProcess[bytes], pumps: list[asyncio.Task[None]]
    ) -> None:
        await asyncio.gather(*pumps)
        await remote.wait_closed()

    async def _pump_out(
        self, source: asyncssh.SSHReader[bytes], sink: asyncssh.SSHWriter[bytes]
    ) -> None:
        while True:
            data = await source.read(READ_SIZE)
            if not data:
                return
            # Recorded before it is shown: nothing reaches the user that is not in the recording.
            await self.recording.output(data)
            sink.write(data)
            await sink.drain()

    async def _pump_in(self, remote: asyncssh.SSHClientProcess[bytes]) -> None:
        stdin = self.process.stdin
        while True:
            try:
                data = await stdin.read(READ_SIZE)
            except asyncssh.TerminalSizeChanged as change:
                remote.change_terminal_size(change.width, change.height,
                                            change.pixwidth, change.pixheight)
                await self.recording.resize(change.width, change.height)
                continue
            except asyncssh.BreakReceived as brk:
                remote.send_break(brk.msec)
                await self.recording.marker(f"break {brk.msec} ms")
                continue
            except asyncssh.SignalReceived as sig:
                remote.send_signal(sig.signal)
                await self.recording.marker(f"signal {sig.signal}")
                continue
            if not data:
                remote.stdin.write_eof()
                return
            self.on_input()
            await self.recording.input(data)
            remote.stdin.write(data)
            await remote.stdin.drain()
