"""AES-GCM SSH packets with one key schedule per direction (bastion/ssh/gcm.py): the same bytes
as asyncssh's own shim, forged or replayed packets refused, and a stock OpenSSH client talking
to it with both key sizes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import asyncssh
import pytest
from asyncssh.crypto.cipher import GCMCipher
from asyncssh_peer import hash_and_echo, ssh_to_asyncssh
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ssh import gcm


@settings(max_examples=200, deadline=None)
@given(size=st.sampled_from([16, 32]), key=st.binary(min_size=32, max_size=32),
       iv=st.binary(min_size=12, max_size=12), header=st.binary(min_size=4, max_size=4),
       packets=st.lists(st.binary(max_size=2000), min_size=1, max_size=5))
def test_packets_are_sealed_and_opened_as_asyncssh_does(size: int, key: bytes, iv: bytes,
                                                         header: bytes, packets: list[bytes]) -> None:
    # The IV's counter may start anywhere, wrapping past 2**64 - 1 included.
    name = f"aes{size * 8}-gcm"
    theirs, ours = GCMCipher(name, key[:size], iv), gcm.PacketGCM(key[:size], iv)
    opener = gcm.PacketGCM(key[:size], iv)
    for data in packets:
        sealed, tag = theirs.encrypt_and_sign(header, data)
        assert ours.seal(header, data) == sealed + tag
        assert opener.open(header, sealed[4:] + tag) == data


def test_the_counter_wraps_as_asyncssh_s_does() -> None:
    key, iv = os.urandom(16), os.urandom(4) + b"\xff" * 8
    theirs, ours = GCMCipher("aes128-gcm", key, iv), gcm.PacketGCM(key, iv)
    for data in (b"before the wrap", b"after the wrap", b"and one more"):
        sealed, tag = theirs.encrypt_and_sign(b"\0\0\0\x10", data)
        assert ours.seal(b"\0\0\0\x10", data) == sealed + tag


def test_a_changed_byte_a_replay_or_another_header_fails() -> None:
    key, iv = os.urandom(32), os.urandom(12)
    sealer = gcm.PacketGCM(key, iv)
    sealed = sealer.seal(b"\0\0\0\x20", b"secret payload of a packet")
    body = sealed[4:]
    for i in range(len(body)):
        forged = bytearray(body)
        forged[i] ^= 0x01
        assert gcm.PacketGCM(key, iv).open(b"\0\0\0\x20", bytes(forged)) is None
    assert gcm.PacketGCM(key, iv).open(b"\0\0\0\x21", body) is None  # the length is authenticated
    opener = gcm.PacketGCM(key, iv)
    assert opener.open(b"\0\0\0\x20", body) == b"secret payload of a packet"
    assert opener.open(b"\0\0\0\x20", body) is None  # the same packet again: the next nonce
    assert gcm.PacketGCM(key, iv).open(b"\0\0\0\x20", body[:-8]) is None  # a short tag


def test_keys_and_ivs_of_the_wrong_size_are_refused() -> None:
    with pytest.raises(ValueError, match="16- or 32-byte key"):
        gcm.PacketGCM(bytes(24), bytes(12))
    with pytest.raises(ValueError, match="12-byte IV"):
        gcm.PacketGCM(bytes(16), bytes(16))
    gcm.install()
    with pytest.raises(ValueError, match="aes256-gcm takes a 32-byte key"):
        asyncssh.encryption.get_encryption(b"aes256-gcm@openssh.com", bytes(16), bytes(12))


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"])
async def test_stock_openssh_client_talks_to_it_both_ways(tmp_path: Path, cipher: str) -> None:
    gcm.install()
    payload = os.urandom(3 * 1024 * 1024 + 12345)  # many full packets and a short last one
    result = await ssh_to_asyncssh(tmp_path, hash_and_echo, cipher, payload, "hash")
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    assert result.stdout == payload
    log = result.stderr.decode(errors="replace")
    assert f"kex: server->client cipher: {cipher}" in log
    assert hashlib.sha256(payload).hexdigest() in log
    encryption, _name = asyncssh.encryption._enc_params[cipher.encode()]
    assert encryption.__name__ == "_PacketGCMEncryption"
