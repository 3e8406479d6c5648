"""A connection's identity comes only from the key that signed, for the user name that signed.

Certificates are public data: a publickey *query* with someone else's certificate passes the
certificate checks, and must leave nothing behind when the client then changes the SSH user name
and signs with its own key (the SSH protocol allows a new user name in every request).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.public_key import SSHLocalKeyPair
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    running_bastion,
    ssh,
    ssh_argv,
)

USERS = {"frank": ["forwarder"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"],
         "mallory": []}


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert isinstance(self.transport, asyncio.Transport)
        self.transport.write(data)


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("identity"), port=free_port(), users=dict(USERS))
    world.extra = ('[[roles]]\nname = "forwarder"\nrequest = ["prod"]\nport_forwarding = true\n'
                   'forward_to = ["127.0.0.1:*"]\n')
    with running_bastion(world) as proc:
        yield proc


@pytest.fixture(scope="module")
def victim_cert(bastion: BastionProcess) -> Path:
    """frank's approved certificate for prod: public data, as every certificate is."""
    req = control_json(bastion, "frank", "request", "prod", "--reason", "INC-3: tunnel")
    control_json(bastion, "bob", "approve", str(req["id"]))
    cert = bastion.world.root / "frank-cert.pub"
    cert.write_text(control(bastion, "frank", "cert").stdout)
    return cert


class _SwitchingClient(asyncssh.SSHClient):
    """Offers `first` as `first_user` (a query, then a signature that fails), then its own key as
    `then_user`."""

    def __init__(self, attempts: list[tuple[str, asyncssh.SSHKeyPair]]) -> None:
        self.attempts = list(attempts)
        self.conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    def public_key_auth_requested(self) -> Any:
        if not self.attempts:
            return None
        username, keypair = self.attempts.pop(0)
        assert self.conn is not None
        # Protocol control: the next USERAUTH_REQUEST carries another user name.
        self.conn._username = username
        return [keypair]


async def _connect_switching(bastion: BastionProcess, attempts: list[tuple[str, asyncssh.SSHKeyPair]]
                             ) -> asyncssh.SSHClientConnection:
    first_user = attempts[0][0]
    conn, _ = await asyncssh.create_connection(
        lambda: _SwitchingClient(attempts), "127.0.0.1", bastion.world.port,
        username=first_user, client_keys=None, public_key_auth=True,
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
        kbdint_auth=False, password_auth=False)
    return conn


def _keypair(key: Path, cert: Path | None = None) -> asyncssh.SSHKeyPair:
    """`key`'s key pair, or `key` presenting `cert` (which need not be `key`'s: the attack)."""
    private = asyncssh.read_private_key(str(key))
    pair = SSHLocalKeyPair(private, None, None, None)
    if cert is not None:
        certificate = asyncssh.read_certificate(str(cert))
        pair.algorithm = pair.sig_algorithm = certificate.algorithm
        pair.public_data = certificate.public_data
    return pair


async def test_a_query_with_someone_elses_certificate_gives_no_identity(
        bastion: BastionProcess, victim_cert: Path) -> None:
    mallory = bastion.world.key("mallory")
    before = len(control_json(bastion, "carol", "audit", "--kind", "login.success"))
    conn = await _connect_switching(bastion, [
        ("prod", _keypair(mallory, victim_cert)),  # frank's certificate, mallory's key: fails
        ("access", _keypair(mallory)),             # mallory signs as access@ with her own key
    ])
    async with conn:
        # The connection is mallory's: her whoami, and no tunnel as frank.
        result = await conn.run("whoami --json", check=False)
        assert result.exit_status == 0, result.stderr
        assert '"mallory"' in str(result.stdout) and "frank" not in str(result.stdout)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("127.0.0.1", bastion.world.port)
        process = await conn.create_process(None)
        # A session channel as access@ is the control plane's, never frank's target.
        process.stdin.write_eof()
        await process.wait_closed()
    successes = control_json(bastion, "carol", "audit", "--kind", "login.success")
    assert len(successes) == before, "a login.success was written for the certificate's holder"


async def test_the_certificate_holder_still_signs_in(bastion: BastionProcess,
                                                     victim_cert: Path) -> None:
    """The same switching client with the right key: the identity is the signer's, for prod."""
    frank = bastion.world.key("frank")
    conn = await _connect_switching(bastion, [("prod", _keypair(frank, victim_cert))])
    async with conn:
        server = await asyncio.get_running_loop().create_server(_Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await conn.open_connection("127.0.0.1", port)
            writer.write(b"hello")
            assert await reader.readexactly(5) == b"hello"
            writer.close()
        finally:
            server.close()
    successes = control_json(bastion, "carol", "audit", "--kind", "login.success")
    assert successes[0]["actor"] == "frank" and successes[0]["target"] == "prod"


async def test_a_signed_certificate_login_cannot_switch_to_access(
        bastion: BastionProcess, victim_cert: Path) -> None:
    """mallory queries as access@ with frank's plain key (public), then signs with her own."""
    mallory = bastion.world.key("mallory")
    frank_public = asyncssh.read_public_key(f"{bastion.world.key('frank')}.pub")

    # mallory's private key, presenting frank's public key: the query passes, the signature fails.
    query_only = _keypair(mallory)
    query_only.public_data = frank_public.public_data
    query_only.key_public_data = frank_public.public_data

    conn = await _connect_switching(bastion, [
        ("access", query_only),
        ("access", _keypair(mallory)),
    ])
    async with conn:
        result = await conn.run("whoami --json", check=False)
        assert result.exit_status == 0 and '"mallory"' in str(result.stdout)
        assert "frank" not in str(result.stdout)


def test_a_key_removed_from_the_config_takes_its_certificates_with_it(
        bastion: BastionProcess) -> None:
    """An administrator replaces a user's key (it leaked): certificates issued to the old key,
    still inside their window and with the request still approved, stop working at once."""
    world = bastion.world
    world.users["gwen"] = ["forwarder"]
    world.write_config()
    bastion.sighup()
    try:
        req = control_json(bastion, "gwen", "request", "prod", "--reason", "INC-7: rotate")
        control_json(bastion, "bob", "approve", str(req["id"]))
        cert = world.root / "gwen-old-cert.pub"
        cert.write_text(control(bastion, "gwen", "cert").stdout)
        assert ssh(bastion, world.key("gwen"), "prod", ["echo", "before"], cert=cert).returncode == 0
        # A session opened with the old key before the change ends with it.
        live = subprocess.Popen(
            [*ssh_argv(bastion, world.key("gwen"), "prod", cert=cert), "echo ready; sleep 60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert live.stdout is not None and live.stdout.readline() == "ready\n"
        old = world.root / "keys" / "gwen-old"
        world.key("gwen").rename(old)
        Path(f"{world.key('gwen')}.pub").rename(f"{old}.pub")
        world.write_config()  # gwen's new key replaces the old one
        bastion.sighup()
        try:
            _out, err = live.communicate(timeout=15)
        finally:
            live.kill()
        assert live.returncode != 0
        assert "the key of this session is no longer registered to you" in err, err
        refused = ssh(bastion, old, "prod", ["echo", "after"], cert=cert)
        assert refused.returncode != 0 and "after" not in refused.stdout
        assert "is no longer registered to gwen" in refused.stderr, refused.stderr
        assert control(bastion, "gwen", "whoami").returncode == 0  # the new key is gwen's
    finally:
        world.users.pop("gwen")
        world.write_config()
        bastion.sighup()
