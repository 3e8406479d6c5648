"""The demo's `demo-shell` target: a small SSH server that trusts the upstream CA and runs a real
shell, in a PTY when the client asks for one, so the demo takes the same path as production.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import struct
import termios
from pathlib import Path

import asyncssh

__all__ = ["DemoShell"]


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class DemoShell:
    """An SSH server on 127.0.0.1 whose only login is certificates signed by the upstream CA."""

    def __init__(self, host_key: asyncssh.SSHKey, upstream_ca: asyncssh.SSHKey, login: str,
                 files: Path | None = None) -> None:
        self.host_key = host_key
        self.login = login
        self.files = files  # what its SFTP server serves (the bastion relays it), if anything
        line = upstream_ca.export_public_key().decode().strip()
        self._authorized = asyncssh.import_authorized_keys(f'cert-authority,principals="{login}" {line}\n')
        self._server: asyncssh.SSHAcceptor | None = None

    @property
    def port(self) -> int:
        """The loopback port it listens on."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1."""
        self._server = await asyncssh.create_server(
            lambda: _DemoServer(self.login),
            "127.0.0.1",
            port,
            server_host_keys=[self.host_key],
            authorized_client_keys=self._authorized,
            process_factory=self._run,
            sftp_factory=self._sftp if self.files is not None else None,
            encoding=None,
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
        )

    def _sftp(self, chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        assert self.files is not None
        return asyncssh.SFTPServer(chan, chroot=str(self.files).encode())

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _run(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        shell = os.environ.get("SHELL", "/bin/sh")
        command = process.command
        argv = [shell, "-c", command] if command else [shell, "-i"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
               "USER": self.login, "SHELL": shell, "PS1": "demo-shell$ ",
               "TERM": process.term_type or "dumb"}
        if process.term_type:
            await self._with_pty(process, argv, env)
        else:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
            )
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            # The command's output is copied here, not redirected: the exit status is sent only
            # once both pipes are read to their end and their bytes are written to the channel
            # (with asyncssh's redirect the channel could close with stderr still in flight).
            feeding = asyncio.create_task(_feed(process, proc.stdin))
            copies = [asyncio.create_task(_copy(proc.stdout, process.stdout)),
                      asyncio.create_task(_copy(proc.stderr, process.stderr))]
            hangup = asyncio.create_task(_hang_up_when_closed(process, proc.pid))
            try:
                status = await proc.wait()
                await asyncio.gather(*copies)
            finally:
                feeding.cancel()
                hangup.cancel()
            process.exit(status if status >= 0 else 128 - status)

    async def _with_pty(
        self, process: asyncssh.SSHServerProcess[bytes], argv: list[str], env: dict[str, str]
    ) -> None:
        master, slave = pty.openpty()
        cols, rows, _, _ = process.term_size
        _set_size(slave, cols or 80, rows or 24)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
            preexec_fn=_controlling_tty,
        )
        os.close(slave)
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if data:
                process.stdout.write(data)
            else:
                loop.remove_reader(master)
                done.set()

        loop.add_reader(master, readable)
        # The shell's exit ends the session even while the client still has input open.
        typing = asyncio.create_task(self._pump_input(process, master))
        hangup = asyncio.create_task(_hang_up_when_closed(process, proc.pid))
        try:
            await done.wait()
        finally:
            typing.cancel()
            hangup.cancel()
            loop.remove_reader(master)
            status = await proc.wait()
            with contextlib.suppress(OSError):
                os.close(master)
        process.exit(status if status >= 0 else 128 - status)

    @staticmethod
    async def _pump_input(process: asyncssh.SSHServerProcess[bytes], master: int) -> None:
        """Copy the client's keystrokes to the PTY until the client's input ends."""
        while True:
            try:
                data = await process.stdin.read(65536)
            except asyncssh.TerminalSizeChanged as change:
                _set_size(master, change.width, change.height)
                continue
            except asyncssh.BreakReceived:
                continue
            if not data:
                return
            try:
                os.write(master, data)
            except OSError:
                return


async def _copy(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
    """Copy a pipe to the channel until the pipe ends (or the channel goes)."""
    with contextlib.suppress(asyncssh.Error, OSError, ConnectionError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()


async def _feed(process: asyncssh.SSHServerProcess[bytes], sink: asyncio.StreamWriter) -> None:
    """Copy the client's input to the command's stdin; close it when the input ends."""
    with contextlib.suppress(asyncssh.Error, OSError, ConnectionError):
        while data := await process.stdin.read(65536):
            sink.write(data)
            await sink.drain()
    sink.close()


async def _hang_up_when_closed(process: asyncssh.SSHServerProcess[bytes], pid: int) -> None:
    """When the channel closes (the bastion ended the session, or the client left), end the
    command's whole process group as sshd does: SIGHUP, then SIGKILL for what ignores it."""
    await process.channel.wait_closed()
    for sig, grace in ((signal.SIGHUP, 2.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        await asyncio.sleep(grace)


def _controlling_tty() -> None:
    # The new session's leader takes stdin (the PTY slave) as its controlling terminal so job
    # control and Ctrl-C work as in a normal login.
    with contextlib.suppress(OSError):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _DemoServer(asyncssh.SSHServer):
    def __init__(self, login: str) -> None:
        self.login = login

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False
