"""Red team of the bastion's SSH transport changes (bastion/ssh/transport.py: libsodium
chacha20-poly1305, no per-packet SSH_MSG_IGNORE but under CBC, coalesced writes) and of a config
reload ending the logins whose key is no longer their user's (FrontDoor.end_logins).

Each attack uses the real parts: the stock OpenSSH client, asyncssh as the hostile peer (it holds
the session keys, so it can seal any packet it likes), and `bastion serve` with a real sshd.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import Byte, String, UInt32
from asyncssh_peer import PeerServer, echo, hash_and_echo, serve
from harness import (
    BastionProcess,
    World,
    control_json,
    free_port,
    running_bastion,
    ssh,
    ssh_argv,
    wait_for,
)

from bastion.ssh import chacha, transport

SODIUM = chacha.load_sodium()


# -- helpers: an asyncssh server with the bastion's transport, and clients against it -------------


async def _serve(tmp_path: Path, process_factory: Any, ciphers: list[str],
                 **options: Any) -> PeerServer:
    """An asyncssh server of this process with the bastion's transport installed."""
    transport.install()
    return await serve(tmp_path, process_factory, ciphers, **options)


async def _connect(server: PeerServer, cipher: str, **options: object
                   ) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1", server.port, username="tester", known_hosts=None,
        client_keys=[asyncssh.read_private_key(str(server.key))], agent_path=None, config=None,
        encryption_algs=[cipher], **options)


class _PacketLog(logging.Handler):
    """asyncssh's own packet log (debug level 3): what each side says it received."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def packet_log() -> AsyncIterator[_PacketLog]:  # type: ignore[misc]
    handler = _PacketLog()
    logger = logging.getLogger("asyncssh")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    asyncssh.set_debug_level(3)
    try:
        yield handler
    finally:
        asyncssh.set_debug_level(1)
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- 2. SSH_MSG_IGNORE under CBC ---------------------------------------------------------------


@pytest.mark.parametrize("cipher", ["seed-cbc@ssh.com", "blowfish-cbc", "aes192-cbc"])
async def test_every_cbc_cipher_asyncssh_negotiates_keeps_the_ignore_packets(
        tmp_path: Path, packet_log: _PacketLog, cipher: str) -> None:
    """Attack: a CBC cipher whose name does not end in "-cbc" (seed-cbc@ssh.com) loses RFC 4251
    §9.3.1's countermeasure. The asyncssh client (any client may offer it) counts the empty
    SSH_MSG_IGNOREs the server sent ahead of its packets."""
    if cipher.encode() not in asyncssh.encryption.get_encryption_algs():
        pytest.skip(f"{cipher} is not available in this asyncssh/cryptography")
    server = await _serve(tmp_path, echo, [cipher])
    try:
        async with await _connect(server, cipher) as conn:
            assert conn.get_extra_info("recv_cipher") == cipher
            payload = os.urandom(60_000)
            result = await conn.run("echo", input=payload, encoding=None)
            assert result.stdout == payload
    finally:
        await server.close()
    received = [line for line in packet_log.lines if line.startswith("[conn=")
                and "Received " in line]
    ignored = [line for line in received if "Received MSG_IGNORE" in line]
    assert len(ignored) > 5, (cipher, len(received))


async def test_rekey_keeps_the_ignore_packets_under_cbc_and_none_under_ctr(
        tmp_path: Path) -> None:
    """Attack: the cipher is read from the negotiated names, which a re-key changes before the
    new keys are in use. The stock client re-keys every 16 KiB under aes128-cbc, then under
    aes128-ctr; its packet log counts the SSH_MSG_IGNOREs it got."""
    server = await _serve(tmp_path, echo, ["aes128-cbc", "aes128-ctr"])
    try:
        counts = {}
        for cipher in ("aes128-cbc", "aes128-ctr"):
            payload = os.urandom(200_000)
            result = await asyncio.to_thread(server.ssh, cipher, "echo", payload,
                                             "-o", "RekeyLimit=16K")
            log = result.stderr.decode(errors="replace")
            assert result.returncode == 0, log[-2000:]
            assert result.stdout == payload
            assert log.count("SSH2_MSG_NEWKEYS received") > 3  # it did re-key, many times
            types = [line.rsplit(" ", 1)[1] for line in log.splitlines()
                     if "receive packet: type " in line]
            counts[cipher] = (types.count("2"), len(types))
    finally:
        await server.close()
    ignored, received = counts["aes128-cbc"]
    assert ignored * 2 >= received - 12 * 8, counts  # one before each packet, in every key epoch
    assert counts["aes128-ctr"][0] == 0, counts


# -- 1. chacha20-poly1305 through libsodium ------------------------------------------------------


needs_sodium = pytest.mark.skipif(SODIUM is None, reason="libsodium is not installed")


@needs_sodium
async def test_chacha_survives_many_rekeys_both_ways(tmp_path: Path) -> None:
    """Attack: keys and sequence numbers change at each re-key (strict kex resets them to 0).
    The stock client re-keys every 32 KiB, the server every 64 KiB; 2 MiB each way arrive
    intact, hashed by the server."""

    cipher = "chacha20-poly1305@openssh.com"
    server = await _serve(tmp_path, hash_and_echo, [cipher], rekey_bytes=65536)
    try:
        payload = os.urandom(2 * 1024 * 1024 + 777)
        result = await asyncio.to_thread(server.ssh, cipher, "hash", payload,
                                         "-o", "RekeyLimit=32K")
    finally:
        await server.close()
    log = result.stderr.decode(errors="replace")
    assert result.returncode == 0, log[-2000:]
    assert result.stdout == payload
    assert hashlib.sha256(payload).hexdigest() in log
    assert log.count("SSH2_MSG_NEWKEYS received") > 20
    encryption, _name = asyncssh.encryption._enc_params[cipher.encode()]
    assert encryption.__name__ == "_SodiumChachaEncryption"


def _sealed(conn: asyncssh.SSHClientConnection, length: int, body: bytes) -> tuple[bytes, bytes]:
    """A packet header claiming `length` and `body`, sealed with the connection's own keys and
    next sequence number: what a hostile client that holds the keys can send."""
    enc = conn._send_encryption  # type: ignore[attr-defined]
    assert enc is not None
    return enc.encrypt_packet(conn._send_seq, UInt32(length), body)  # type: ignore[attr-defined,no-any-return]


async def _hostile(server: PeerServer, forge: str) -> str:
    """Connect with chacha20, authenticate, send one forged packet; return why the server
    disconnected (as the client was told)."""
    conn = await _connect(server, "chacha20-poly1305@openssh.com")
    ignore = Byte(MSG_IGNORE) + String(b"x" * 40)
    padlen = 8 - (1 + len(ignore)) % 8 + 8
    body = Byte(padlen) + ignore + bytes(padlen)
    if forge == "tag":
        sealed, tag = _sealed(conn, len(body), body)
        wire = sealed + bytes([tag[0] ^ 1]) + tag[1:]
    elif forge == "short":  # a length shorter than the first block: asyncssh slices negatively
        sealed, tag = _sealed(conn, 2, b"\x01\x02")
        wire = sealed + tag + os.urandom(64)
    elif forge == "huge":
        sealed, tag = _sealed(conn, 0x7FFFFFF0, body)
        wire = sealed + tag
    elif forge == "zero":  # a valid tag over a packet of length 0
        sealed, tag = _sealed(conn, 0, b"")
        wire = sealed + tag + os.urandom(32)
    elif forge == "replay":  # a valid packet sealed for the previous sequence number
        enc = conn._send_encryption  # type: ignore[attr-defined]
        assert enc is not None
        sealed, tag = enc.encrypt_packet(conn._send_seq - 1, UInt32(len(body)), body)  # type: ignore[attr-defined]
        wire = sealed + tag
    else:
        raise AssertionError(forge)
    conn._send(wire)  # type: ignore[attr-defined]
    try:
        await asyncio.wait_for(conn.wait_closed(), 10)
    except TimeoutError:
        conn.abort()
        return "still open"
    return "closed"


@needs_sodium
@pytest.mark.parametrize("forge", ["tag", "short", "huge", "zero", "replay"])
async def test_forged_chacha_packets_end_the_connection_and_nothing_else(
        tmp_path: Path, packet_log: _PacketLog, forge: str) -> None:
    """Attack: a client holding the session keys sends a packet with a flipped tag bit, a length
    shorter than a block (asyncssh slices its buffer with a negative index, so the "tag" is a
    few bytes), a huge length, a validly sealed empty packet, a replayed sequence number. The
    server refuses it, disconnects that client with the reason, and serves the next one."""
    server = await _serve(tmp_path, echo, ["chacha20-poly1305@openssh.com"])
    try:
        assert await _hostile(server, forge) == "closed"
        told = "\n".join(line for line in packet_log.lines if "isconnect" in line
                         or "MAC" in line or "packet size" in line)
        # A replayed packet's length decrypts (under the wrong nonce) to noise: too long, or
        # refused by its tag.
        expected = {"huge": ("Max packet size exceeded",),
                    "replay": ("Max packet size exceeded", "MAC verification failed")
                    }.get(forge, ("MAC verification failed",))
        assert any(f"Received disconnect: {why}" in told for why in expected), told[-3000:]
        # The server process is fine: a stock client gets through right after.
        payload = os.urandom(50_000)
        result = await asyncio.to_thread(server.ssh, "chacha20-poly1305@openssh.com", "echo",
                                         payload)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout == payload
    finally:
        await server.close()


# -- 3. coalesced writes ---------------------------------------------------------------------------


class _Collect(asyncssh.SSHClientSession[bytes]):
    """What an asyncssh client's session gets, as the packets arrive, and how it ended."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.exit_status: int | None = None
        self.closed = asyncio.Event()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.data += data

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


class _Client(asyncssh.SSHClient):
    """Keeps why its connection ended."""

    def __init__(self) -> None:
        self.lost: Exception | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc


async def _collect(server: PeerServer, cipher: str) -> tuple[_Collect, _Client]:
    client = _Client()
    conn = await _connect(server, cipher, client_factory=lambda: client)
    try:
        chan, session = await conn.create_session(_Collect, "go", encoding=None)
        assert isinstance(session, _Collect)
        chan.write(b"!")
        await asyncio.wait_for(session.closed.wait(), 30)
        await asyncio.wait_for(conn.wait_closed(), 30)
        return session, client
    finally:
        conn.abort()


async def test_what_is_written_before_a_disconnect_arrives_before_it(tmp_path: Path) -> None:
    """Attack: data written in the same callback as a disconnect (whose abort asyncssh schedules
    with call_soon) could be dropped or land after it. The client's session gets all 200 KB (its
    window is 2 MiB), then the connection ends with the disconnect's reason."""
    payload = os.urandom(200_000)

    async def write_then_disconnect(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await process.stdin.read(1)
        process.stdout.write(payload)
        # Not DISC_BY_APPLICATION, which asyncssh's client reports as a clean close.
        process.channel.get_connection().disconnect(asyncssh.DISC_PROTOCOL_ERROR,
                                                    "redteam: goodbye after the data")

    server = await _serve(tmp_path, write_then_disconnect, ["aes128-ctr"])
    try:
        session, client = await _collect(server, "aes128-ctr")
    finally:
        await server.close()
    assert bytes(session.data) == payload, len(session.data)
    assert isinstance(client.lost, asyncssh.DisconnectError), client.lost
    assert "redteam: goodbye after the data" in str(client.lost)


async def test_an_exit_and_close_right_after_writes_lose_nothing(tmp_path: Path) -> None:
    """Ordering: writes from several callbacks, then the exit status and the connection's close
    in one callback: every byte in order, then the status."""
    chunks = [os.urandom(n) for n in (1, 7, 32_768, 100_000, 3, 65_536, 300_000)]

    async def burst(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await process.stdin.read(1)
        for chunk in chunks:
            process.stdout.write(chunk)
            await asyncio.sleep(0)
        process.exit(3)
        process.channel.get_connection().close()

    server = await _serve(tmp_path, burst, ["chacha20-poly1305@openssh.com"])
    try:
        session, _client = await _collect(server, "chacha20-poly1305@openssh.com")
    finally:
        await server.close()
    assert bytes(session.data) == b"".join(chunks), len(session.data)
    assert session.exit_status == 3


async def test_a_client_that_stops_reading_cannot_make_the_bastion_buffer_its_window(
        tmp_path: Path) -> None:
    """Memory: a client grants a 1 GiB window, then stops reading its socket. A writer that
    waits on drain() (as the bastion's relays do) is paused once the socket is full: what the
    server holds (asyncio's write buffer, the coalescing wrapper's pending bytes, the channel's
    send buffer) stays at a few hundred KiB, not the window (stock asyncssh buffered 336 MiB in
    3 s here, sending as far as the window allowed)."""
    window = 1 << 30
    held: list[int] = []
    written: list[int] = [0]
    done = asyncio.Event()

    async def flood(process: asyncssh.SSHServerProcess[bytes]) -> None:
        conn = process.channel.get_connection()
        block = os.urandom(65536)
        deadline = time.monotonic() + 3
        try:
            while (left := deadline - time.monotonic()) > 0:
                process.stdout.write(block)
                written[0] += len(block)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.stdout.drain(), left)
                held.append(conn._transport.get_write_buffer_size()  # type: ignore[attr-defined,union-attr]
                            + process.channel.get_write_buffer_size())
        finally:
            done.set()

    server = await _serve(tmp_path, flood, ["aes128-ctr"])
    try:
        async with await _connect(server, "aes128-ctr") as conn:
            process = await conn.create_process("flood", encoding=None, window=window)
            await asyncio.sleep(0.2)
            conn._transport.pause_reading()  # type: ignore[attr-defined,union-attr]
            await asyncio.wait_for(done.wait(), 10)
            conn._transport.resume_reading()  # type: ignore[attr-defined,union-attr]
            received = 0
            async with asyncio.timeout(20):  # once the client reads again, everything arrives
                while received < written[0]:
                    received += len(await process.stdout.read(1 << 20))
            process.close()
    finally:
        await server.close()
    assert held and max(held) < 4 * 1024 * 1024, max(held)
    assert received == written[0]


# -- 5. a config reload ends the logins whose key is no longer their user's ---------------------

FILES_ROLES = """
[[roles]]
name = "mover"
request = ["files"]
file_transfer = "both"
port_forwarding = true
forward_to = ["127.0.0.1:*"]

[[roles]]
name = "files-approver"
approve = ["files"]
"""

REPLACED = "the key of this session is no longer registered to you"


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("redteam-door"), port=free_port(),
                  users={"alice": ["mover"], "bob": ["mover"], "vera": ["files-approver", "approver"],
                         "victor": ["approver"],
                         "carol": ["auditor"]})
    world.extra = FILES_ROLES
    with running_bastion(world, lambda target: (
            f'[[targets]]\nname = "files"\nkind = "ssh"\naddress = "127.0.0.1:{target.port}"\n'
            f'login = "root"\nhost_key = "{target.host_key_line}"\napprovals_required = 1\n'
            'file_transfer = "both"\n')) as proc:
        yield proc


def _certificate(door: BastionProcess, user: str, key: Path, name: str) -> Path:
    """An approved request for `files` and its certificate for `key` (the user's key now)."""
    req = control_json(door, user, "request", "files", "--reason", f"INC-{name}: red team")
    control_json(door, "vera", "approve", str(req["id"]))
    cert = door.world.root / f"{name}-cert.pub"
    result = ssh(door, key, "access", ["cert", str(req["id"])])
    assert result.returncode == 0, result.stderr
    cert.write_text(result.stdout)
    return cert


async def test_sftp_reads_whose_replies_are_not_read_do_not_swell_the_bastion(
        door: BastionProcess, tmp_path: Path) -> None:
    """Attack: an sftp client with a 1 GiB window asks for 800 reads of 256 KiB and does not
    read its socket. asyncssh's SFTP server wrote each reply without waiting, so the bastion
    would hold every reply; now it serves the next request once the last reply is taken."""
    world = door.world
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 << 20))
    cert = await asyncio.to_thread(_certificate, door, "alice", world.key("alice"), "sftp-flood")
    key = asyncssh.read_private_key(str(world.key("alice")))
    async with asyncssh.connect(
            "127.0.0.1", world.port, username="files", window=1 << 30,
            client_keys=[(key, asyncssh.read_certificate(str(cert)))],
            known_hosts=str(door.known_hosts()), agent_path=None, config=None) as conn:
        async with conn.start_sftp_client() as sftp:
            remote = await sftp.open(str(big), "rb")
            assert len(await remote.read(65536, 0)) == 65536
            before = door.rss_mib()
            conn._transport.pause_reading()  # type: ignore[attr-defined,union-attr]
            reads = [asyncio.create_task(remote.read(1 << 18, (n % 32) << 18)) for n in range(800)]
            grown = 0.0
            for _ in range(20):  # 4 s
                await asyncio.sleep(0.2)
                grown = max(grown, door.rss_mib() - before)
            conn._transport.resume_reading()  # type: ignore[attr-defined,union-attr]
            async with asyncio.timeout(60):  # every read is answered once the client reads
                assert all(len(data) == 1 << 18 for data in await asyncio.gather(*reads))
            await remote.close()
    assert grown < 100, f"the bastion grew by {grown:.0f} MiB for sftp replies not read"


class _Sessions:
    """One user's shell, sftp and `ssh -L` (with a TCP connection through it) on `files`."""

    def __init__(self, door: BastionProcess, user: str, key: Path, cert: Path,
                 echo_port: int) -> None:
        self.door, self.user = door, user
        argv = ssh_argv(door, key, "files", cert=cert)
        self.shell = subprocess.Popen([*argv, "echo ready; sleep 60"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        assert self.shell.stdout is not None and self.shell.stdout.readline() == "ready\n"
        self.sftp = subprocess.Popen(
            ["sftp", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={door.known_hosts()}", "-o", "IdentitiesOnly=yes",
             "-o", "IdentityAgent=none", "-i", str(key), "-o", f"CertificateFile={cert}",
             "-P", str(door.world.port), "files@127.0.0.1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.sftp.stdin is not None
        self.sftp.stdin.write("ls /\n")
        self.sftp.stdin.flush()
        self.local = free_port()
        self.tunnel = subprocess.Popen(
            [*ssh_argv(door, key, "files", cert=cert,
                       options=("-N", "-o", "ExitOnForwardFailure=yes",
                                "-L", f"127.0.0.1:{self.local}:127.0.0.1:{echo_port}"))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.sock = self._through_tunnel()
        kinds = wait_for(lambda: sorted(
            s["kind"] for s in control_json(door, "carol", "sessions", "--live")
            if s["user"] == user), timeout=15)
        assert kinds == ["forward", "sftp", "ssh"], kinds

    def _through_tunnel(self) -> socket.socket:
        deadline = time.monotonic() + 15
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", self.local), timeout=5)
                sock.sendall(b"ping")
                if sock.recv(4) == b"ping":
                    return sock
                sock.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the tunnel never carried data")
            time.sleep(0.2)

    def ended(self) -> dict[str, str]:
        """Wait for all three to end; what each client printed (stderr)."""
        said = {}
        for name, proc in (("ssh", self.shell), ("sftp", self.sftp), ("forward", self.tunnel)):
            try:
                _out, err = proc.communicate(timeout=20)
            finally:
                proc.kill()
            said[name] = err
        self.sock.settimeout(10)
        try:
            rest = self.sock.recv(100)
        except OSError:
            rest = b""
        self.sock.close()
        said["tcp"] = repr(rest)  # b'' : the forwarded connection was closed
        return said

    def kill(self) -> None:
        for proc in (self.shell, self.sftp, self.tunnel):
            proc.kill()
        self.sock.close()


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1: the destination of the `ssh -L` channels."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _end_reasons(door: BastionProcess, user: str, since: set[str]) -> dict[str, str]:
    def ended() -> dict[str, str]:
        found = {s["kind"]: str(s["end_reason"])
                 for s in control_json(door, "carol", "sessions", "--limit", "500")
                 if s["user"] == user and s["id"] not in since and s["status"] != "live"}
        return found if len(found) == 3 else {}
    return dict(wait_for(ended, timeout=15) or {})


def _session_ids(door: BastionProcess) -> set[str]:
    return {s["id"] for s in control_json(door, "carol", "sessions", "--limit", "500")}


def test_keys_swapped_between_two_users_end_shell_sftp_and_forward_of_both(
        door: BastionProcess, echo_port: int) -> None:
    """Attack: an administrator swaps alice's and bob's keys (each key now registered to the
    other user). Every live session of both, whatever its kind, was opened with a certificate
    whose key is no longer its user's: the shell, the sftp session and the `ssh -L` channel
    (with its TCP connection) all end, saying why, and the old certificates are refused."""
    world = door.world
    keys = world.root / "keys"
    before = _session_ids(door)
    certs = {user: _certificate(door, user, world.key(user), f"swap-{user}")
             for user in ("alice", "bob")}
    live = {user: _Sessions(door, user, world.key(user), certs[user], echo_port)
            for user in ("alice", "bob")}
    old = {user: keys / f"{user}-before-swap" for user in ("alice", "bob")}
    try:
        for user in ("alice", "bob"):
            for suffix in ("", ".pub"):
                Path(f"{world.key(user)}{suffix}").rename(f"{old[user]}{suffix}")
        for user, other in (("alice", "bob"), ("bob", "alice")):
            for suffix in ("", ".pub"):
                Path(f"{world.key(user)}{suffix}").hardlink_to(f"{old[other]}{suffix}")
        world.write_config()
        door.sighup()
        said = {user: live[user].ended() for user in ("alice", "bob")}
    finally:
        for sessions in live.values():
            sessions.kill()
    for user in ("alice", "bob"):
        assert REPLACED in said[user]["ssh"], said[user]
        assert "session ended" in said[user]["sftp"] and REPLACED in said[user]["sftp"], said[user]
        assert REPLACED in said[user]["forward"], said[user]
        assert said[user]["tcp"] == "b''", said[user]
        reasons = _end_reasons(door, user, before)
        assert sorted(reasons) == ["forward", "sftp", "ssh"], reasons
        assert all(REPLACED in why for why in reasons.values()), reasons
        # Each old certificate, presented with the key it was made for, is refused now.
        refused = ssh(door, old[user], "files", ["echo", "after"], cert=certs[user])
        assert refused.returncode != 0 and "after" not in refused.stdout
        assert f"is no longer registered to {user}" in refused.stderr, refused.stderr


def test_a_removed_user_loses_shell_sftp_and_forward(door: BastionProcess,
                                                      echo_port: int) -> None:
    """Attack: the user is removed from the config; the key is registered to nobody now."""
    world = door.world
    world.users["dora"] = ["mover"]
    world.write_config()
    door.sighup()
    before = _session_ids(door)
    cert = _certificate(door, "dora", world.key("dora"), "removed-dora")
    live = _Sessions(door, "dora", world.key("dora"), cert, echo_port)
    try:
        world.users.pop("dora")
        world.write_config()
        door.sighup()
        said = live.ended()
    finally:
        live.kill()
    reasons = _end_reasons(door, "dora", before)
    assert sorted(reasons) == ["forward", "sftp", "ssh"], (reasons, said)
    assert said["tcp"] == "b''", said
    assert "session ended" in said["sftp"], said
    refused = ssh(door, world.key("dora"), "files", ["echo", "after"], cert=cert)
    assert refused.returncode != 0 and "after" not in refused.stdout
