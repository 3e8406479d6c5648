"""Forwarded channels (`ssh -L`, `-W`) are sessions: checked, limited to allowed destinations,
audited, and ended by revoke, kill, window end, user removal and the idle timeout."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    running_bastion,
    ssh_argv,
    start_target,
    wait_for,
)

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"],
         "frank": ["forwarder"], "gina": ["forwarder"], "hank": ["forwarder"]}


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture(scope="module")
def echo() -> Iterator[int]:
    """A TCP echo service on the target host (loopback)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _world(root: Path, echo: int, server_extra: str = "") -> World:
    world = World(root=root, port=free_port(), users=dict(USERS), server_extra=server_extra)
    world.extra = ('[[roles]]\nname = "forwarder"\nrequest = ["prod"]\nport_forwarding = true\n'
                   f'forward_to = ["127.0.0.1:{echo}", "localhost:{echo}"]\n')
    return world


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory, echo: int) -> Iterator[BastionProcess]:
    world = _world(tmp_path_factory.mktemp("fwd"), echo)
    with running_bastion(world) as proc:
        yield proc


def grant(bastion: BastionProcess, user: str, duration: str = "1h") -> tuple[Path, int]:
    req = control_json(bastion, user, "request", "prod", "--reason", "INC-7: tunnel",
                       "--duration", duration)
    control_json(bastion, "bob", "approve", str(req["id"]))
    cert = bastion.world.root / f"{user}-{req['id']}-cert.pub"
    result = control(bastion, user, "cert", str(req["id"]))
    assert result.returncode == 0, result.stderr
    cert.write_text(result.stdout)
    return cert, int(req["id"])


class Tunnel:
    """`ssh -N -L LOCAL:HOST:PORT prod@bastion` with the stock client."""

    def __init__(self, bastion: BastionProcess, user: str, cert: Path, host: str, port: int) -> None:
        self.local = free_port()
        self.proc = subprocess.Popen(
            ssh_argv(bastion, bastion.world.key(user), "prod", cert=cert,
                     options=["-N", "-o", "ExitOnForwardFailure=yes",
                              "-L", f"127.0.0.1:{self.local}:{host}:{port}"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def connect(self) -> socket.socket:
        """A TCP connection through the tunnel, retried while ssh sets the forward up."""
        deadline = time.monotonic() + 15
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.local), timeout=10)
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def wait(self, timeout: float = 15) -> str:
        """Wait for ssh to exit; its stderr."""
        _, err = self.proc.communicate(timeout=timeout)
        return err

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.wait()


def echoed(sock: socket.socket, payload: bytes = b"ping\n") -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the connection is closed by the far side within `seconds`."""
    sock.settimeout(seconds)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


def forward_sessions(bastion: BastionProcess, user: str, *, live: bool = True) -> list[dict[str, Any]]:
    args = ["sessions", "--live"] if live else ["sessions"]
    return [s for s in control_json(bastion, "carol", *args)
            if s["kind"] == "forward" and s["user"] == user]


def test_forwarded_channel_is_a_session_and_audited(bastion: BastionProcess, echo: int) -> None:
    cert, _ = grant(bastion, "frank")
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True)
    assert "permit-port-forwarding" in listing.stdout
    tunnel = Tunnel(bastion, "frank", cert, "127.0.0.1", echo)
    try:
        with tunnel.connect() as sock:
            assert echoed(sock, b"x" * 300_000) == b"x" * 300_000
            live = wait_for(lambda: forward_sessions(bastion, "frank"))
            assert len(live) == 1 and live[0]["target"] == "prod"
        assert wait_for(lambda: not forward_sessions(bastion, "frank"))
    finally:
        tunnel.close()
    opened = control_json(bastion, "carol", "audit", "--kind", "forward.opened")
    assert opened[0]["actor"] == "frank"
    assert opened[0]["details"]["destination"] == f"127.0.0.1:{echo}"
    closed = wait_for(lambda: control_json(bastion, "carol", "audit", "--kind", "forward.closed"))
    assert closed[0]["session_id"] == opened[0]["session_id"]
    assert closed[0]["details"]["bytes_in"] == 300_000 == closed[0]["details"]["bytes_out"]


@pytest.mark.parametrize("destination", ["bastion", "other-port", "name-like-ip"])
def test_destinations_outside_forward_to_are_refused(bastion: BastionProcess, echo: int,
                                                      destination: str) -> None:
    cert, _ = grant(bastion, "frank")
    host, port = {
        "bastion": ("127.0.0.1", bastion.world.port),  # the bastion's own SSH port
        "other-port": ("127.0.0.1", 22),
        "name-like-ip": ("127.1", echo),  # resolves to 127.0.0.1, but is not what is allowed
    }[destination]
    result = subprocess.run(
        ssh_argv(bastion, bastion.world.key("frank"), "prod", cert=cert,
                 options=["-W", f"{host}:{port}"]),
        input="", capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "administratively prohibited" in result.stderr
    assert f"bastion: forwarding to {host}:{port} is not allowed through prod" in result.stderr
    refused = control_json(bastion, "carol", "audit", "--kind", "forward.refused")
    assert refused[0]["details"]["destination"] == f"{host}:{port}"


def test_a_role_without_port_forwarding_gets_none(bastion: BastionProcess, echo: int) -> None:
    cert, _ = grant(bastion, "alice")
    result = subprocess.run(
        ssh_argv(bastion, bastion.world.key("alice"), "prod", cert=cert,
                 options=["-W", f"127.0.0.1:{echo}"]),
        input="", capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "prohibited" in result.stderr
    assert not forward_sessions(bastion, "alice", live=False)


def test_revoke_ends_an_open_tunnel_and_says_why(bastion: BastionProcess, echo: int) -> None:
    cert, request_id = grant(bastion, "frank")
    tunnel = Tunnel(bastion, "frank", cert, "127.0.0.1", echo)
    try:
        with tunnel.connect() as sock:
            assert echoed(sock) == b"ping\n"
            result = control(bastion, "bob", "revoke", str(request_id))
            assert result.returncode == 0, result.stderr
            assert closed_within(sock, 10)
            err = tunnel.wait()
            assert f"bastion: request {request_id} was revoked" in err
    finally:
        tunnel.close()
    closed = control_json(bastion, "carol", "audit", "--kind", "forward.closed")
    assert closed[0]["details"]["reason"] == f"request {request_id} was revoked"


def test_new_channels_are_checked_again_on_an_open_connection(bastion: BastionProcess,
                                                              echo: int) -> None:
    """A connection authenticated before the revoke opens no new channel after it."""
    cert, request_id = grant(bastion, "gina")
    tunnel = Tunnel(bastion, "gina", cert, "127.0.0.1", echo)
    try:
        with tunnel.connect() as sock:
            assert echoed(sock) == b"ping\n"
        assert wait_for(lambda: not forward_sessions(bastion, "gina"))
        assert control(bastion, "gina", "revoke", str(request_id)).returncode == 0
        # The ssh process (and its authenticated connection) is still there; a new channel is not.
        assert tunnel.proc.poll() is None
        with tunnel.connect() as sock:
            assert closed_within(sock, 10)
        refused = control_json(bastion, "carol", "audit", "--kind", "forward.refused")
        assert refused[0]["actor"] == "gina" and "revoked" in refused[0]["details"]["reason"]
    finally:
        tunnel.close()


def test_an_auditor_kills_a_tunnel(bastion: BastionProcess, echo: int) -> None:
    cert, _ = grant(bastion, "frank")
    tunnel = Tunnel(bastion, "frank", cert, "127.0.0.1", echo)
    try:
        with tunnel.connect() as sock:
            assert echoed(sock) == b"ping\n"
            live = wait_for(lambda: forward_sessions(bastion, "frank"))
            result = control(bastion, "carol", "kill", live[0]["id"], "--reason", "INC-9 containment")
            assert result.returncode == 0, result.stderr
            assert closed_within(sock, 10)
            assert "INC-9 containment" in tunnel.wait()
    finally:
        tunnel.close()


def test_the_window_end_ends_a_tunnel(bastion: BastionProcess, echo: int) -> None:
    # The window must outlast the certificate's fetch and the tunnel's start (two SSH logins):
    # seconds on a loaded machine.
    cert, _ = grant(bastion, "frank", duration="10s")
    tunnel = Tunnel(bastion, "frank", cert, "127.0.0.1", echo)
    try:
        with tunnel.connect() as sock:
            assert echoed(sock) == b"ping\n"
            assert closed_within(sock, 20)
            assert "your access window has ended" in tunnel.wait()
    finally:
        tunnel.close()


def test_user_removal_ends_a_tunnel(bastion: BastionProcess, echo: int) -> None:
    cert, _ = grant(bastion, "hank")
    tunnel = Tunnel(bastion, "hank", cert, "127.0.0.1", echo)
    try:
        with tunnel.connect() as sock:
            assert echoed(sock) == b"ping\n"
            del bastion.world.users["hank"]
            bastion.world.write_config()
            bastion.sighup()
            assert closed_within(sock, 10)
            assert "your access was removed from the bastion" in tunnel.wait()
    finally:
        tunnel.close()


def test_the_idle_timeout_ends_a_tunnel(tmp_path: Path, echo: int) -> None:
    world = _world(tmp_path / "idle", echo, server_extra='idle_timeout = "3s"')
    target = start_target(world)
    world.write_config()
    bastion = BastionProcess(world)
    bastion.start()
    try:
        cert, _ = grant(bastion, "frank")
        tunnel = Tunnel(bastion, "frank", cert, "127.0.0.1", echo)
        try:
            with tunnel.connect() as sock:
                assert echoed(sock) == b"ping\n"
                assert closed_within(sock, 15)  # nothing sent for 3 s
                assert "idle for 3s" in tunnel.wait()
        finally:
            tunnel.close()
    finally:
        bastion.stop()
        target.stop()


async def test_channels_per_connection_are_bounded(bastion: BastionProcess, echo: int) -> None:
    import asyncssh

    cert, _ = grant(bastion, "frank")
    key = asyncssh.read_private_key(str(bastion.world.key("frank")))
    async with asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="prod",
        client_keys=[(key, asyncssh.read_certificate(str(cert)))],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
    ) as conn:
        streams = [await conn.open_connection("127.0.0.1", echo) for _ in range(10)]
        with pytest.raises(asyncssh.ChannelOpenError, match="at most 10 sessions and forwarded"):
            await conn.open_connection("127.0.0.1", echo)
        # The ten still work, and closing one makes room for another.
        reader, writer = streams[9]
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
        for _, writer in streams:
            writer.close()
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            try:
                reader, writer = await conn.open_connection("127.0.0.1", echo)
                break
            except asyncssh.ChannelOpenError:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
        writer.close()


async def test_channels_opened_at_once_cannot_race_past_the_limit(bastion: BastionProcess,
                                                                  echo: int) -> None:
    import asyncssh

    cert, _ = grant(bastion, "frank")
    key = asyncssh.read_private_key(str(bastion.world.key("frank")))
    async with asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="prod",
        client_keys=[(key, asyncssh.read_certificate(str(cert)))],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
    ) as conn:
        results = await asyncio.gather(
            *(conn.open_connection("127.0.0.1", echo) for _ in range(25)), return_exceptions=True)
        opened = [r for r in results if not isinstance(r, BaseException)]
        assert len(opened) == 10, results
        for _, writer in opened:  # type: ignore[misc]
            writer.close()


async def test_a_control_connection_opens_no_forwarded_channel(bastion: BastionProcess,
                                                               echo: int) -> None:
    import asyncssh

    key = asyncssh.read_private_key(str(bastion.world.key("frank")))
    async with asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="access", client_keys=[key],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
    ) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("127.0.0.1", echo)
