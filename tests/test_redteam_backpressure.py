"""Red team of the back-pressure fix (bastion/ssh/backpressure.py): a client that stops reading,
by other means than a full socket, must not make the bastion buffer what its window allows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from harness import BastionProcess, World, control, control_json, free_port, running_bastion

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]}


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("redteam-bp"), port=free_port(), users=dict(USERS))
    with running_bastion(world) as proc:
        yield proc


@pytest.fixture(scope="module")
def cert(bastion: BastionProcess) -> Path:
    req = control_json(bastion, "alice", "request", "prod", "--reason", "INC-7", "--duration", "1h")
    if req["status"] != "approved":
        control_json(bastion, "bob", "approve", str(req["id"]))
    path = bastion.world.root / f"alice-{req['id']}-cert.pub"
    result = control(bastion, "alice", "cert", str(req["id"]))
    assert result.returncode == 0, result.stderr
    path.write_text(result.stdout)
    return path


async def _connect(bastion: BastionProcess, cert: Path) -> asyncssh.SSHClientConnection:
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    return await asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="prod",
        client_keys=[(key, asyncssh.read_certificate(str(cert)))],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
    )


async def _growth(bastion: BastionProcess, before: float, seconds: float = 4.0) -> float:
    grown = 0.0
    for _ in range(int(seconds / 0.2)):
        await asyncio.sleep(0.2)
        grown = max(grown, bastion.rss_mib() - before)
    return grown


async def test_a_client_that_starts_a_rekey_and_never_finishes_it_does_not_swell_the_bastion(
        bastion: BastionProcess, cert: Path) -> None:
    """The client sends KEXINIT, then stops reading: the bastion answers with its own KEXINIT and
    must defer channel data until the key exchange ends. Nothing reaches the socket, so it never
    fills and pause_writing never comes: the relay must still wait."""
    assert bastion.proc is not None
    conn = await _connect(bastion, cert)
    async with conn:
        proc = await conn.create_process("cat /dev/zero", encoding=None, window=1 << 30)
        assert len(await proc.stdout.read(65536)) > 0
        before = bastion.rss_mib()
        conn._send_kexinit()  # type: ignore[attr-defined]
        conn._kexinit_sent = True  # type: ignore[attr-defined]
        conn._transport.pause_reading()  # type: ignore[attr-defined,union-attr]
        grown = await _growth(bastion, before)
        conn._transport.resume_reading()  # type: ignore[attr-defined,union-attr]
        async with asyncio.timeout(20):
            assert len(await proc.stdout.read(1 << 20)) > 0  # the session still flows
        proc.close()
    assert grown < 100, f"the bastion grew by {grown:.0f} MiB for a client that stalled a rekey"


def _session_id(bastion: BastionProcess, marker: str) -> str:
    events = control_json(bastion, "carol", "audit", "--kind", "session.started", "--limit", "1000")
    ids = [e["session_id"] for e in events if marker in (e["details"].get("command") or "")]
    assert ids, f"no session ran {marker!r}"
    return str(ids[0])


def _ended(bastion: BastionProcess, session_id: str) -> list[dict[str, Any]]:
    events = control_json(bastion, "carol", "audit", "--kind", "session.ended", "--limit", "1000")
    return [e for e in events if str(e.get("session_id")) == session_id]


async def test_many_channels_not_read_stay_small_and_a_kill_still_ends_one(
        bastion: BastionProcess, cert: Path) -> None:
    """Eight channels on one connection, each with a 1 GiB window, none read: the bastion holds
    a bounded amount. An auditor's kill then still ends the session (audit trail, recording)
    although the client reads nothing, and the other sessions flow once the client reads."""
    conn = await _connect(bastion, cert)
    async with conn:
        procs = []
        for n in range(8):
            proc = await conn.create_process(f"cat /dev/zero # bp-many-{n}", encoding=None,
                                             window=1 << 30)
            assert len(await proc.stdout.read(65536)) > 0
            procs.append(proc)
        before = bastion.rss_mib()
        conn._transport.pause_reading()  # type: ignore[attr-defined,union-attr]
        grown = await _growth(bastion, before)
        assert grown < 150, f"the bastion grew by {grown:.0f} MiB for 8 channels not read"
        victim = await asyncio.to_thread(_session_id, bastion, "bp-many-0")
        ended = await asyncio.to_thread(control_json, bastion, "carol", "kill", victim,
                                        "--reason", "not reading")
        assert ended["ended"] is True
        async with asyncio.timeout(15):
            while not await asyncio.to_thread(_ended, bastion, victim):
                await asyncio.sleep(0.2)
        conn._transport.resume_reading()  # type: ignore[attr-defined,union-attr]
        async with asyncio.timeout(20):  # the other sessions still flow once the client reads
            for proc in procs[1:]:
                assert len(await proc.stdout.read(1 << 20)) > 0
                proc.close()


async def test_a_rekey_while_the_socket_is_full_does_not_stall_the_session(
        bastion: BastionProcess, cert: Path) -> None:
    """The client stops reading (the socket fills, channel data is held), then starts a key
    exchange, then reads again: the exchange ends and what was held flows, nothing is stuck."""
    assert bastion.proc is not None
    conn = await _connect(bastion, cert)
    async with conn:
        proc = await conn.create_process("cat /dev/zero", encoding=None, window=1 << 30)
        assert len(await proc.stdout.read(65536)) > 0
        before = bastion.rss_mib()
        conn._transport.pause_reading()  # type: ignore[attr-defined,union-attr]
        await asyncio.sleep(1)
        conn._send_kexinit()  # type: ignore[attr-defined]
        conn._kexinit_sent = True  # type: ignore[attr-defined]
        grown = await _growth(bastion, before, 2)
        conn._transport.resume_reading()  # type: ignore[attr-defined,union-attr]
        received = 0
        async with asyncio.timeout(20):
            while received < 64 << 20:  # well past anything held: the relay is running again
                received += len(await proc.stdout.read(1 << 20))
        assert conn._kex_complete  # type: ignore[attr-defined]
        proc.close()
    assert grown < 100, f"the bastion grew by {grown:.0f} MiB"
