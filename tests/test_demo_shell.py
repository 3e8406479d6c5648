"""The demo's target ends a command when the channel closes, as sshd does (finding 16)."""

from __future__ import annotations

import asyncio
import os

import asyncssh
import pytest

from bastion.demo_shell import DemoShell


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting to be reaped by the demo server counts as ended.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("pty", [False, True])
async def test_closing_the_channel_ends_the_command(pty: bool) -> None:
    ca = asyncssh.generate_private_key("ssh-ed25519")
    shell = DemoShell(asyncssh.generate_private_key("ssh-ed25519"), ca, "demo")
    await shell.start()
    try:
        key = asyncssh.generate_private_key("ssh-ed25519")
        cert = ca.generate_user_certificate(key, "test", principals=["demo"])
        async with asyncssh.connect(
            "127.0.0.1", shell.port, username="demo", client_keys=[(key, cert)], known_hosts=None,
            agent_path=None, config=None,
        ) as conn:
            proc = await conn.create_process(
                "trap '' INT; sleep 300 & echo child=$!; wait",
                term_type="xterm" if pty else None)
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            child = int(line.strip().split("=")[1])
            assert _alive(child)
            proc.close()  # the bastion ends the session: the channel closes
            for _ in range(100):
                if not _alive(child):
                    break
                await asyncio.sleep(0.1)
            assert not _alive(child), "the command kept running after the channel closed"
            await proc.wait_closed()
        await asyncio.sleep(0.5)  # let the server side finish its own clean-up
    finally:
        await shell.stop()
