"""Unauthenticated clients cannot grow the audit trail without bound or flood one connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncssh
import pytest
from harness import BastionProcess, World, control_json, free_port, ssh

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]}


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("flood"), port=free_port(), users=dict(USERS))
    world.write_config()
    proc = BastionProcess(world)
    proc.start()
    yield proc
    proc.stop()


def refused(bastion: BastionProcess) -> list[dict[str, object]]:
    return list(control_json(bastion, "carol", "audit", "--kind", "login.refused", "--limit", "10000"))


def test_a_long_user_name_is_bounded_and_escaped(bastion: BastionProcess) -> None:
    name = "x" * 900 + "\x1b[2J"
    result = ssh(bastion, bastion.world.key("alice"), name.replace("\x1b", "e"), ["true"])
    assert result.returncode == 255
    banner = next(line for line in result.stderr.splitlines() if line.startswith("bastion:"))
    assert len(banner) < 400, banner
    event = next(e for e in refused(bastion) if str(e["details"].get("username", "")).startswith("xxx"))  # type: ignore[union-attr]
    assert len(str(event["details"]["username"])) <= 65  # type: ignore[index]
    assert len(str(event["target"])) <= 65


class _ManyNames(asyncssh.SSHClient):
    """Asks for a new user name in every request (the SSH protocol allows it)."""

    def __init__(self, key: asyncssh.SSHKey, names: list[str]) -> None:
        self.key, self.names = key, list(names)
        self.conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn

    def public_key_auth_requested(self) -> object:
        if not self.names or self.conn is None:
            return None
        self.conn._username = self.names.pop(0)
        return [self.key]


async def _try(bastion: BastionProcess, names: list[str]) -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: _ManyNames(key, names), "127.0.0.1", bastion.world.port, username=names[0],
            client_keys=None, public_key_auth=True, known_hosts=None, agent_path=None,
            config=None, kbdint_auth=False, password_auth=False)
    except (asyncssh.PermissionDenied, asyncssh.DisconnectError) as exc:
        return str(exc)
    conn.close()
    return "authenticated"


async def test_a_flood_of_refused_logins_is_bounded(bastion: BastionProcess) -> None:
    started = time.monotonic()
    before = len(refused(bastion))
    # One connection, twenty user names: it is dropped after six refusals.
    outcome = await _try(bastion, [f"nosuch{i}" for i in range(20)])
    assert "too many refused login attempts" in outcome
    after_one = len(refused(bastion))
    assert after_one - before <= 6
    # Forty connections of six refusals each (240): at most 120 a minute reach the trail.
    outcomes = await asyncio.gather(*(
        _try(bastion, [f"flood{c}x{i}" for i in range(6)]) for c in range(40)))
    assert "authenticated" not in outcomes
    total = len(refused(bastion)) - before
    refill = 2 * (time.monotonic() - started) + 1  # the budget refills at 120 a minute
    assert total <= 120 + refill, total
    assert total >= 60  # the first ones are still recorded
