"""An asyncssh server on a loopback port that takes any key, and the stock `ssh` run against it:
for tests (and benchmarks) of the SSH transport itself, without the bastion's checks."""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

__all__ = ["AnyKeyServer", "LoopbackForwarder", "PeerProcess", "PeerServer", "client_key",
           "echo", "hash_and_echo", "serve", "ssh_to_asyncssh"]


def client_key(directory: Path) -> Path:
    """An ed25519 client key file in `directory` (made once)."""
    key = directory / "id_asyncssh_peer"
    if not key.exists():
        key.write_text(asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode())
        key.chmod(0o600)
    return key


async def echo(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Writes stdin back until it ends."""
    while data := await process.stdin.read(65536):
        process.stdout.write(data)
        await process.stdout.drain()
    process.exit(0)


async def hash_and_echo(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Reads all of stdin; writes it back, then its SHA-256 on stderr."""
    digest = hashlib.sha256()
    while data := await process.stdin.read(65536):
        digest.update(data)
        process.stdout.write(data)
        await process.stdout.drain()
    process.stderr.write(digest.hexdigest().encode())
    process.exit(0)


class AnyKeyServer(asyncssh.SSHServer):
    """Lets any public key in."""

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return True


class PeerServer:
    """An asyncssh server of this process on a loopback port, any key let in, and the stock
    `ssh` run against it."""

    def __init__(self, listener: asyncssh.SSHAcceptor, key: Path) -> None:
        self.listener = listener
        self.key = key
        self.port = int(listener.sockets[0].getsockname()[1])

    def ssh(self, cipher: str, command: str, payload: bytes, *options: str
            ) -> subprocess.CompletedProcess[bytes]:
        """`ssh -vvv -c CIPHER ... COMMAND` with `payload` on its stdin (blocking)."""
        return subprocess.run([
            "ssh", "-F", "/dev/null", "-p", str(self.port), "-i", str(self.key), "-c", cipher,
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-vvv", *options, "tester@127.0.0.1", command],
            input=payload, capture_output=True, timeout=60)

    async def close(self) -> None:
        self.listener.close()
        await self.listener.wait_closed()


async def serve(tmp_path: Path, process_factory: Callable[..., Any], ciphers: list[str],
                **options: Any) -> PeerServer:
    """Serve `process_factory` with only `ciphers` offered (a client key made in `tmp_path`)."""
    key = client_key(tmp_path)
    listener = await asyncssh.create_server(
        AnyKeyServer, "127.0.0.1", 0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        process_factory=process_factory, encoding=None, encryption_algs=ciphers, **options)
    return PeerServer(listener, key)


async def ssh_to_asyncssh(tmp_path: Path, process_factory: Callable[..., Any], cipher: str,
                          payload: bytes, command: str) -> subprocess.CompletedProcess[bytes]:
    """Serve `process_factory` with only `cipher` offered; run `ssh -vvv -c CIPHER ... COMMAND`
    with `payload` on its stdin and return what it did."""
    server = await serve(tmp_path, process_factory, [cipher])
    try:
        return await asyncio.to_thread(server.ssh, cipher, command, payload)
    finally:
        await server.close()


class LoopbackForwarder(AnyKeyServer):
    """Lets any public key in and forwards `ssh -L` channels to loopback ports with asyncssh's
    own forwarding, inspecting nothing: the floor of what a Python SSH hop costs."""

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> bool:
        return dest_host == "127.0.0.1"


class PeerProcess:
    """A Python child process (`argv` after the interpreter) that prints `listening on PORT`
    once it serves; stopped with SIGTERM."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"{' '.join(argv[:2])} did not start: {line!r}")
        self.port = int(match.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
