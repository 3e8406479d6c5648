"""chacha20-poly1305@openssh.com through libsodium (bastion/ssh/chacha.py): the same bytes as
asyncssh's own cipher, forged packets refused, and a stock OpenSSH client talking to it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import asyncssh
import pytest
from asyncssh.crypto.chacha import ChachaCipher
from asyncssh_peer import hash_and_echo, ssh_to_asyncssh
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ssh import chacha

SODIUM = chacha.load_sodium()
pytestmark = pytest.mark.skipif(SODIUM is None, reason="libsodium is not installed")


def _pair(key: bytes) -> tuple[chacha.SodiumChacha, ChachaCipher]:
    assert SODIUM is not None
    return chacha.SodiumChacha(SODIUM, key), ChachaCipher(key)


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=64, max_size=64), header=st.binary(min_size=4, max_size=4),
       data=st.binary(max_size=3000), seq=st.integers(min_value=0, max_value=2**32 - 1))
def test_packets_are_sealed_and_opened_as_asyncssh_does(key: bytes, header: bytes, data: bytes,
                                                         seq: int) -> None:
    ours, theirs = _pair(key)
    nonce = seq.to_bytes(8, "big")
    sealed, tag = theirs.encrypt_and_sign(header, data, nonce)
    assert ours.encrypt_and_sign(header, data, nonce) == (sealed, tag)
    assert ours.decrypt_header(sealed[:4], nonce) == header
    assert ours.open(sealed, 4, nonce, tag) == data


def test_large_packets_match_too() -> None:
    ours, theirs = _pair(os.urandom(64))
    for size in (16, 32_768, 262_144):
        data, nonce = os.urandom(size), (7).to_bytes(8, "big")
        sealed, tag = ours.encrypt_and_sign(b"\0\0\0\x10", data, nonce)
        assert theirs.verify_and_decrypt(sealed[:4], sealed[4:], nonce, tag) == data


def test_a_changed_byte_anywhere_fails_authentication() -> None:
    ours, _ = _pair(os.urandom(64))
    nonce = (42).to_bytes(8, "big")
    sealed, tag = ours.encrypt_and_sign(b"\0\0\0\x20", b"secret payload of a packet", nonce)
    for i in range(len(sealed)):
        forged = bytearray(sealed)
        forged[i] ^= 0x01
        assert ours.open(bytes(forged), 4, nonce, tag) is None
    for i in range(16):
        bad_tag = bytearray(tag)
        bad_tag[i] ^= 0x80
        assert ours.open(sealed, 4, nonce, bytes(bad_tag)) is None
    # Another sequence number (a replayed or reordered packet), a short tag: refused.
    assert ours.open(sealed, 4, (43).to_bytes(8, "big"), tag) is None
    assert ours.open(sealed, 4, nonce, tag[:8]) is None


def test_a_key_of_the_wrong_size_is_refused() -> None:
    assert SODIUM is not None
    with pytest.raises(ValueError, match="64-byte key, not 32 bytes"):
        chacha.SodiumChacha(SODIUM, bytes(32))


async def test_stock_openssh_client_talks_to_it_both_ways(tmp_path: Path) -> None:
    assert chacha.install()
    payload = os.urandom(3 * 1024 * 1024 + 12345)  # many full packets and a short last one
    result = await ssh_to_asyncssh(tmp_path, hash_and_echo,
                                   "chacha20-poly1305@openssh.com", payload, "hash")
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    assert result.stdout == payload
    log = result.stderr.decode(errors="replace")
    assert "kex: server->client cipher: chacha20-poly1305@openssh.com" in log
    assert hashlib.sha256(payload).hexdigest() in log
    encryption, _name = asyncssh.encryption._enc_params[b"chacha20-poly1305@openssh.com"]
    assert encryption.__name__ == "_SodiumChachaEncryption"


def test_without_libsodium_asyncssh_keeps_its_own(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(chacha, "_LIBRARIES", ("libsodium-that-is-not-there.so.0",))
    with caplog.at_level("INFO", logger="bastion.ssh.chacha"):
        assert chacha.load_sodium() is None
    assert "libsodium is not installed (Debian: libsodium23)" in caplog.text
