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

from bastion.ssh.transfer import command_refusal, wire_refusal
from recorder import MAX_COLS, MAX_ROWS, RecordingWriter, emulated_size

__all__ = ["CLIENT_GONE", "SessionEnd", "ShellRelay", "TransferRefused", "size_notice",
           "terminal_size", "transfer_refusal"]

READ_SIZE = 256 * 1024
CLIENT_GONE = "the client disconnected"
# Signals a client may send (RFC 4254 §6.10); anything else is neither forwarded nor recorded.
SIGNALS = frozenset({"ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT", "SEGV",
                     "TERM", "USR1", "USR2"})
MAX_BREAK_MS = 10_000


def terminal_size(cols: int, rows: int) -> tuple[int, int]:
    """The terminal size a session uses: what the client asked for, within 1..1000 each way
    (the recorder emulates at most that; a 65535x65535 terminal would cost a core); 0 (unknown,
    or no terminal) means 80x24."""
    return emulated_size(cols or 80, rows or 24)


def size_notice(cols: int, rows: int) -> str | None:
    """What to tell a user whose terminal size was clamped, or None."""
    used = terminal_size(cols, rows)
    if used == (cols or 80, rows or 24):
        return None
    return (f"your terminal is {cols}x{rows}; sessions through the bastion use at most "
            f"{MAX_COLS}x{MAX_ROWS}, so the target sees {used[0]}x{used[1]}")


def transfer_refusal(process: asyncssh.SSHServerProcess[bytes]) -> str | None:
    """Why this session's command or subsystem is a file transfer (refused), or None."""
    return command_refusal(process.command, process.subsystem)


class TransferRefused(Exception):
    """The first bytes of a session without a terminal opened a file-transfer protocol."""


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
        self._size_told = False

    async def run(self, upstream: asyncssh.SSHClientConnection, stop: asyncio.Event) -> SessionEnd:
        """Relay until the target's process exits or `stop` is set."""
        front = self.process
        asked_cols, asked_rows, pw, ph = front.term_size
        cols, rows = terminal_size(asked_cols, asked_rows)
        if (cols, rows) != (asked_cols, asked_rows):
            pw = ph = 0
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
        # Without a terminal the first bytes are checked before they go anywhere (transfer.py).
        first = not self.process.term_type and sink is self.process.stdout
        while True:
            data = await source.read(READ_SIZE)
            if not data:
                return
            if first:
                first = False
                refusal = wire_refusal(data, from_client=False)
                if refusal is not None:
                    raise TransferRefused(refusal)
            # Recorded before it is shown: nothing reaches the user that is not in the recording.
            await self.recording.output(data)
            sink.write(data)
            await sink.drain()

    async def _pump_in(self, remote: asyncssh.SSHClientProcess[bytes]) -> None:
        stdin = self.process.stdin
        first = not self.process.term_type
        while True:
            try:
                data = await stdin.read(READ_SIZE)
            except asyncssh.TerminalSizeChanged as change:
                cols, rows = terminal_size(change.width, change.height)
                notice = size_notice(change.width, change.height)
                if notice is not None and not self._size_told:
                    self._size_told = True
                    await self.recording.marker(f"bastion: {notice}")
                    self.process.stderr.write(f"\r\nbastion: {notice}\r\n".encode())
                exact = (cols, rows) == (change.width, change.height)
                remote.change_terminal_size(cols, rows, change.pixwidth if exact else 0,
                                            change.pixheight if exact else 0)
                await self.recording.resize(cols, rows)
                continue
            except asyncssh.BreakReceived as brk:
                # Client-originated events are recorded in the bastion's words, never verbatim.
                msec = max(0, min(int(brk.msec), MAX_BREAK_MS))
                remote.send_break(msec)
                await self.recording.marker(f"client sent a break of {msec} ms")
                continue
            except asyncssh.SignalReceived as sig:
                name = str(sig.signal).upper().removeprefix("SIG")
                if name in SIGNALS:
                    remote.send_signal(name)
                    await self.recording.marker(f"client sent signal {name}")
                continue
            if not data:
                remote.stdin.write_eof()
                return
            if first:
                first = False
                refusal = wire_refusal(data, from_client=True)
                if refusal is not None:
                    raise TransferRefused(refusal)
            self.on_input()
            await self.recording.input(data)
            remote.stdin.write(data)
            await remote.stdin.drain()
