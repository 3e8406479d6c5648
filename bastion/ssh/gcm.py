"""aes128-gcm@openssh.com and aes256-gcm@openssh.com with one AESGCM object per direction.

asyncssh's GCM shim builds a new `AESGCM` (a fresh key schedule) for every packet it seals or
opens, joins the payload's pieces and then the tag to them before opening (two copies of a
32 KiB packet), and slices the sealed packet apart and joins the length header back on after
sealing (two more). The bastion's upstream leg always prefers AES-GCM, so every byte of a shell
session's output goes through it once, and again on the user's leg when the client chose
AES-GCM. Here the key schedule is made once per direction and each packet is copied once on the
way in and once on the way out; the bytes on the wire are the same (RFC 5647 as OpenSSH does it:
a 12-byte nonce of a fixed 4-byte field and a 64-bit invocation counter that counts packets,
the 4-byte length as associated data, the 16-byte tag appended).
"""

from __future__ import annotations

import functools
import struct

import asyncssh.encryption
from asyncssh.encryption import GCMEncryption
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["PacketGCM", "install"]

_ALGORITHMS = (b"aes128-gcm@openssh.com", b"aes256-gcm@openssh.com")
_KEY_SIZES = {"aes128-gcm": 16, "aes256-gcm": 32}
_COUNTER = struct.Struct(">Q")


class PacketGCM:
    """One direction of one SSH connection: seals or opens its packets in order."""

    __slots__ = ("_aead", "_counter", "_fixed")

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(key) not in (16, 32) or len(iv) != 12:
            raise ValueError(f"AES-GCM takes a 16- or 32-byte key and a 12-byte IV, not "
                             f"{len(key)} and {len(iv)} bytes")
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:], "big")

    def _nonce(self) -> bytes:
        nonce = self._fixed + _COUNTER.pack(self._counter)
        self._counter = (self._counter + 1) & 0xFFFF_FFFF_FFFF_FFFF
        return nonce

    def seal(self, header: bytes, packet: bytes) -> bytes:
        """The length header, the encrypted packet and its tag, as sent."""
        return header + self._aead.encrypt(self._nonce(), packet, header)

    def open(self, header: bytes, sealed: bytes) -> bytes | None:
        """The packet from its encrypted bytes followed by the tag; None if the tag does not
        match. The counter advances either way (the connection ends on a bad packet)."""
        try:
            return self._aead.decrypt(self._nonce(), sealed, header)
        except InvalidTag:
            return None


class _PacketGCMEncryption(GCMEncryption):
    """asyncssh's GCM packet shim with one AESGCM object inside."""

    @classmethod
    def new(cls, cipher_name: str, key: bytes, iv: bytes, mac_alg: bytes = b"",
            mac_key: bytes = b"", etm: bool = False) -> GCMEncryption:
        if len(key) != _KEY_SIZES.get(cipher_name, -1):
            raise ValueError(f"{cipher_name} takes a {_KEY_SIZES.get(cipher_name)}-byte key")
        return cls(PacketGCM(key, iv))  # type: ignore[arg-type]

    def encrypt_packet(self, seq: int, header: bytes, packet: bytes) -> tuple[bytes, bytes]:
        # The tag comes with the packet: asyncssh sends `packet + mac`, so an empty mac spares
        # cutting the tag off and joining it back on.
        cipher: PacketGCM = self._cipher  # type: ignore[assignment]
        return cipher.seal(header, packet), b""

    def decrypt_packet(self, seq: int, first: bytes, rest: bytes, header_len: int,
                       mac: bytes) -> bytes | None:
        cipher: PacketGCM = self._cipher  # type: ignore[assignment]
        return cipher.open(first[:header_len], b"".join((first[header_len:], rest, mac)))


@functools.cache  # once per process
def install() -> None:
    """Seal and open this process's AES-GCM SSH packets with one AESGCM object per direction."""
    params = asyncssh.encryption._enc_params  # the table get_encryption() reads
    for algorithm in _ALGORITHMS:
        if algorithm in params:
            _encryption, cipher_name = params[algorithm]
            params[algorithm] = (_PacketGCMEncryption, cipher_name)
