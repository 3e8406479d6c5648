"""Second red-team round on the access plane and the recorder, after the security round's fixes.

Each test is one attempt, asserting the safe behaviour it found.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    running_bastion,
    ssh_argv,
)

from bastion.config import Role, Target
from bastion.policy import forward_refusal

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"],
         "frank": ["forwarder"]}
MIB = 1024 * 1024


# Destination spellings that reach 127.0.0.1 without being "127.0.0.1" -------------------------

class _Config:
    """The least of a config that forward_refusal reads."""

    def __init__(self, port: int) -> None:
        self.role = Role(name="forwarder", request=("prod",), port_forwarding=True,
                         forward_to=(f"127.0.0.1:{port}", "10.0.*:5432"))

    def user(self, name: str) -> object:
        return object() if name == "frank" else None

    def roles_of(self, _user: object) -> tuple[Role, ...]:
        return (self.role,)


@pytest.mark.parametrize("host, port", [
    ("127.1", 8080), ("0x7f.1", 8080), ("0x7f000001", 8080), ("2130706433", 8080),
    ("0177.0.0.1", 8080), ("127.0.0.1.", 8080), ("::ffff:127.0.0.1", 8080), ("[127.0.0.1]", 8080),
    ("127.0.0.1", 0), ("127.0.0.1", 80), ("127.0.0.1 ", 8080), ("127.0.0.1\x00", 8080),
    ("10.0.0.1.attacker.example", 5432), ("10.0.evil", 5432),
])
def test_destination_spellings_are_not_the_allowed_one(host: str, port: int) -> None:
    target = Target(name="prod", kind="ssh", address="127.0.0.1:22", login="root",
                    approvals_required=1)
    reason = forward_refusal(_Config(8080), "frank", target, host, port)  # type: ignore[arg-type]
    assert reason is not None
    assert forward_refusal(_Config(8080), "frank", target, "127.0.0.1", 8080) is None  # type: ignore[arg-type]
    assert forward_refusal(_Config(8080), "frank", target, "10.0.3.4", 5432) is None  # type: ignore[arg-type]


# Through the front door -------------------------------------------------------------------------

class _Sink(threading.Thread):
    """A destination on the target host that sends `send` bytes and never reads, or reads nothing
    and holds the connection (send=0)."""

    def __init__(self, send: int) -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.send = send
        self.sent = 0

    def run(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            block = b"z" * 65536
            try:
                while self.sent < self.send:
                    conn.sendall(block)
                    self.sent += len(block)
                time.sleep(30)
            except OSError:
                return


@pytest.fixture(scope="module")
def sinks() -> Iterator[tuple[_Sink, _Sink]]:
    talker, silent = _Sink(200 * MIB), _Sink(0)
    talker.start()
    silent.start()
    yield talker, silent
    for sink in (talker, silent):
        sink.server.close()


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory,
            sinks: tuple[_Sink, _Sink]) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("redteam2"), port=free_port(), users=dict(USERS))
    world.extra = ('[[roles]]\nname = "forwarder"\nrequest = ["prod"]\nport_forwarding = true\n'
                   f'forward_to = ["127.0.0.1:{sinks[0].port}", "127.0.0.1:{sinks[1].port}"]\n')
    with running_bastion(world) as proc:
        yield proc


@pytest.fixture(scope="module")
def cert(bastion: BastionProcess) -> Path:
    req = control_json(bastion, "frank", "request", "prod", "--reason", "INC-2: red team")
    control_json(bastion, "bob", "approve", str(req["id"]))
    path = bastion.world.root / "frank-cert.pub"
    path.write_text(control(bastion, "frank", "cert").stdout)
    return path


def _connect(bastion: BastionProcess, cert: Path) -> asyncssh.connection._ConnectionContext:  # type: ignore[name-defined]
    key = asyncssh.read_private_key(str(bastion.world.key("frank")))
    return asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="prod",
        client_keys=[(key, asyncssh.read_certificate(str(cert)))],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None)


async def test_a_client_that_never_reads_cannot_grow_the_bastion(
        bastion: BastionProcess, cert: Path, sinks: tuple[_Sink, _Sink]) -> None:
    talker, _ = sinks
    before = bastion.rss_mib()
    async with _connect(bastion, cert) as conn:
        reader, writer = await conn.open_connection("127.0.0.1", talker.port)
        await reader.read(1)  # the destination is sending
        await asyncio.sleep(3)  # …and the client reads nothing more
        grown = bastion.rss_mib() - before
        assert talker.sent < 100 * MIB, "the bastion kept reading from the destination"
        assert grown < 64, f"the bastion grew by {grown:.0f} MiB"
        writer.close()


async def test_a_destination_that_never_reads_cannot_grow_the_bastion(
        bastion: BastionProcess, cert: Path, sinks: tuple[_Sink, _Sink]) -> None:
    _, silent = sinks
    before = bastion.rss_mib()
    async with _connect(bastion, cert) as conn:
        _, writer = await conn.open_connection("127.0.0.1", silent.port)
        block = b"u" * 65536
        for _ in range(1600):  # 100 MiB offered; flow control must stop the client
            writer.write(block)
            try:
                await asyncio.wait_for(writer.drain(), 0.05)
            except TimeoutError:
                break
        await asyncio.sleep(1)
        grown = bastion.rss_mib() - before
        assert grown < 64, f"the bastion grew by {grown:.0f} MiB"
        writer.close()


def test_remote_and_socket_forwarding_are_refused(bastion: BastionProcess, cert: Path,
                                                  tmp_path: Path) -> None:
    remote = subprocess.run(
        ssh_argv(bastion, bastion.world.key("frank"), "prod", cert=cert,
                 options=["-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22"]),
        capture_output=True, text=True, timeout=30)
    assert remote.returncode != 0 and "forwarding failed" in remote.stderr
    sock = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    server.listen()
    local = free_port()
    tunnel = subprocess.Popen(
        ssh_argv(bastion, bastion.world.key("frank"), "prod", cert=cert,
                 options=["-N", "-L", f"127.0.0.1:{local}:{sock}"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", local), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with client:
            client.settimeout(5)
            assert client.recv(10) == b""  # closed: no streamlocal channel
        server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
        tunnel.terminate()
        tunnel.communicate(timeout=10)


async def test_a_resize_storm_neither_ends_nor_stalls_the_session(bastion: BastionProcess,
                                                                  cert: Path) -> None:
    async with _connect(bastion, cert) as conn:
        proc = await conn.create_process("read line; echo after-storm-$line", term_type="xterm",
                                         term_size=(80, 24))
        for i in range(3000):
            proc.change_terminal_size(1 + (i * 7919) % 65535, 1 + (i * 104729) % 65535)
        proc.stdin.write("ok\n")
        out = ""
        while "after-storm-ok" not in out:
            out += await asyncio.wait_for(proc.stdout.read(4096), 20)
        await proc.wait_closed()
    started = time.monotonic()
    assert control(bastion, "carol", "whoami").returncode == 0
    assert time.monotonic() - started < 10


def test_only_auditors_kill_and_list_forwarded_sessions(bastion: BastionProcess, cert: Path,
                                                        sinks: tuple[_Sink, _Sink]) -> None:
    _, silent = sinks
    local = free_port()
    tunnel = subprocess.Popen(
        ssh_argv(bastion, bastion.world.key("frank"), "prod", cert=cert,
                 options=["-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{silent.port}"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", local), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with client:
            live: list[dict[str, object]] = []
            while not live and time.monotonic() < deadline:
                live = [s for s in control_json(bastion, "carol", "sessions", "--live")
                        if s["kind"] == "forward"]
            assert live
            refused = control(bastion, "alice", "kill", str(live[0]["id"]))
            assert refused.returncode != 0 and "no session" in refused.stderr
            mine = control(bastion, "frank", "kill", str(live[0]["id"]))
            assert mine.returncode != 0 and "auditors" in mine.stderr
    finally:
        tunnel.terminate()
        tunnel.communicate(timeout=10)
