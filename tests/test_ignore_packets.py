"""asyncssh's SSH_MSG_IGNORE before every packet, dropped but under CBC ciphers
(bastion/ssh/ignore_packets.py): counted by the stock OpenSSH client's own packet log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from asyncssh_peer import echo, ssh_to_asyncssh

from bastion.ssh import ignore_packets


async def _session(tmp_path: Path, cipher: str, payload: bytes) -> tuple[bytes, int, int]:
    """Runs `ssh -vvv -c CIPHER` against an asyncssh server echoing stdin; returns the output and
    how many packets of type 2 (SSH_MSG_IGNORE) and of any type the client received."""
    result = await ssh_to_asyncssh(tmp_path, echo, cipher, payload, "echo")
    log = result.stderr.decode(errors="replace")
    assert result.returncode == 0, log[-2000:]
    types = [line.rsplit(" ", 1)[1] for line in log.splitlines()
             if line.strip().endswith(tuple("0123456789")) and "receive packet: type " in line]
    return result.stdout, types.count("2"), len(types)


@pytest.mark.parametrize("cipher", ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com",
                                    "aes256-ctr"])
async def test_no_ignore_packets_with_modern_ciphers(tmp_path: Path, cipher: str) -> None:
    ignore_packets.install()
    payload = os.urandom(300_000)
    output, ignored, received = await _session(tmp_path, cipher, payload)
    assert output == payload
    assert received > 10  # the session's data came in many packets
    assert ignored == 0


async def test_cbc_keeps_its_countermeasure(tmp_path: Path) -> None:
    ignore_packets.install()
    payload = os.urandom(100_000)
    output, ignored, received = await _session(tmp_path, "aes128-cbc", payload)
    assert ignored * 2 >= received - 12  # about half of what came after the key exchange
    assert output == payload
    assert ignored > 5  # one before each packet after the key exchange


def test_which_ciphers_keep_it() -> None:
    assert ignore_packets.sends_ignore_before_packets(b"aes256-cbc")
    assert ignore_packets.sends_ignore_before_packets(b"3des-cbc")
    assert not ignore_packets.sends_ignore_before_packets(b"chacha20-poly1305@openssh.com")
    assert not ignore_packets.sends_ignore_before_packets(b"aes128-gcm@openssh.com")
    assert not ignore_packets.sends_ignore_before_packets(b"aes128-ctr")
