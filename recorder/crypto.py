"""Envelope encryption: a random file key wrapped for each auditor, and the chunk cipher.

Age-style X25519 recipients: for each auditor an ephemeral X25519 key agrees a shared secret,
HKDF-SHA256 turns it into a wrap key, and ChaCha20-Poly1305 wraps the 32-byte file key. Chunks
are sealed with the recording's AEAD (ChaCha20-Poly1305, or from format version 2 AES-256-GCM on
CPUs with AES instructions) under a key derived from the file key; the nonce is the chunk index
(88 bits) and a final-chunk flag byte, so reordering, dropping and truncation fail to
authenticate. The exact constants are in FORMAT.md.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from recorder.errors import CorruptRecording, NotARecipient

__all__ = [
    "CIPHERS",
    "V1_CIPHER",
    "ChunkCipher",
    "Stanza",
    "derive_key",
    "key_fingerprint",
    "new_file_key",
    "preferred_cipher",
    "raw_public",
    "unwrap_file_key",
    "wrap_file_key",
]

FILE_KEY_SIZE: Final = 32
WRAP_INFO: Final = b"bastion-recording v1 X25519 wrap"
PAYLOAD_INFO: Final = b"bastion-recording v1 payload"
METADATA_INFO: Final = b"bastion-recording v1 metadata"
ZERO_NONCE: Final = bytes(12)
CHUNK_NONCE_COUNTER_MAX: Final = (1 << 88) - 1
# The AEADs a recording's chunks and metadata may be sealed with (the header names it): both take
# a 32-byte key and a 12-byte nonce and add a 16-byte tag. Format version 1 has ChaCha20-Poly1305
# only.
CIPHERS: Final[dict[str, type[ChaCha20Poly1305] | type[AESGCM]]] = {
    "chacha20-poly1305": ChaCha20Poly1305,
    "aes-256-gcm": AESGCM,
}
V1_CIPHER: Final = "chacha20-poly1305"


def raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    """Return the 32 raw bytes of a public key."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_fingerprint(key: X25519PublicKey | Ed25519PublicKey | bytes) -> str:
    """Return an OpenSSH-style fingerprint, `SHA256:<unpadded base64>` of the raw key."""
    raw = key if isinstance(key, bytes) else raw_public(key)
    digest = hashlib.sha256(raw).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def derive_key(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """Return 32 bytes of HKDF-SHA256 output."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def new_file_key() -> bytes:
    """Return a fresh random file key."""
    return os.urandom(FILE_KEY_SIZE)


@dataclass(frozen=True)
class Stanza:
    """The file key wrapped for one auditor."""

    fingerprint: str
    ephemeral: bytes
    wrapped: bytes


def wrap_file_key(file_key: bytes, recipient: X25519PublicKey, file_id: bytes) -> Stanza:
    """Wrap the file key for one auditor public key."""
    ephemeral = X25519PrivateKey.generate()
    epk = raw_public(ephemeral.public_key())
    rpk = raw_public(recipient)
    shared = ephemeral.exchange(recipient)
    wrap_key = derive_key(shared, epk + rpk, WRAP_INFO)
    wrapped = ChaCha20Poly1305(wrap_key).encrypt(ZERO_NONCE, file_key, file_id)
    return Stanza(key_fingerprint(rpk), epk, wrapped)


def unwrap_file_key(stanzas: list[Stanza], identity: X25519PrivateKey, file_id: bytes) -> bytes:
    """Return the file key using the auditor's private key, or raise NotARecipient."""
    rpk = raw_public(identity.public_key())
    mine = key_fingerprint(rpk)
    # Every stanza is tried, not only the one with our fingerprint: the fingerprint is a hint.
    for stanza in sorted(stanzas, key=lambda s: s.fingerprint != mine):
        try:
            peer = X25519PublicKey.from_public_bytes(stanza.ephemeral)
            shared = identity.exchange(peer)
        except ValueError:
            continue
        wrap_key = derive_key(shared, stanza.ephemeral + rpk, WRAP_INFO)
        try:
            key = ChaCha20Poly1305(wrap_key).decrypt(ZERO_NONCE, stanza.wrapped, file_id)
        except InvalidTag:
            if stanza.fingerprint == mine:
                raise CorruptRecording(f"the file key wrapped for {mine} does not authenticate") from None
            continue
        if len(key) != FILE_KEY_SIZE:
            raise CorruptRecording("the unwrapped file key has the wrong size")
        return key
    recipients = tuple(s.fingerprint for s in stanzas)
    raise NotARecipient(
        f"key {mine} is not a recipient of this recording (recipients: {', '.join(recipients)})",
        recipients,
    )


_NONCE_TAIL = struct.Struct(">QB")


def _has_aes_instructions(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU advertises AES instructions (x86 `aes` flag, ARMv8 `aes` feature)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return "aes" in value.split()
    except OSError:
        pass
    return False


@functools.cache
def preferred_cipher() -> str:
    """AES-256-GCM where the CPU has AES instructions (0.05 CPU s per GiB sealed on the
    benchmark machine, against 0.20 for ChaCha20-Poly1305), ChaCha20-Poly1305 elsewhere (where
    AES in software is slow and not constant-time)."""
    return "aes-256-gcm" if _has_aes_instructions() else "chacha20-poly1305"


class ChunkCipher:
    """Seals and opens chunks and the header metadata of one recording."""

    def __init__(self, file_key: bytes, file_id: bytes, cipher: str = V1_CIPHER) -> None:
        aead = CIPHERS.get(cipher)
        if aead is None:
            raise ValueError(f"unknown recording cipher {cipher!r} (known: {', '.join(CIPHERS)})")
        self._payload = aead(derive_key(file_key, file_id, PAYLOAD_INFO))
        self._metadata = aead(derive_key(file_key, file_id, METADATA_INFO))

    @staticmethod
    def nonce(index: int, final: bool) -> bytes:
        """Return the 12-byte nonce: 88-bit big-endian chunk index, then the final flag."""
        if not 0 <= index <= CHUNK_NONCE_COUNTER_MAX:
            raise ValueError("chunk index out of range")
        # The index fits in 64 bits in practice; the three high bytes of the counter stay zero.
        return b"\x00\x00\x00" + _NONCE_TAIL.pack(index, 1 if final else 0)

    def seal_chunk(self, index: int, final: bool, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt one chunk."""
        return self._payload.encrypt(self.nonce(index, final), plaintext, aad)

    def open_chunk(self, index: int, final: bool, ciphertext: bytes, aad: bytes) -> bytes:
        """Decrypt one chunk or raise CorruptRecording."""
        try:
            return self._payload.decrypt(self.nonce(index, final), ciphertext, aad)
        except InvalidTag:
            raise CorruptRecording(
                f"chunk {index} does not authenticate (damaged, moved or tampered with)", index
            ) from None

    def seal_metadata(self, plaintext: bytes) -> bytes:
        """Encrypt the header metadata (its own key, so the zero nonce is used once)."""
        return self._metadata.encrypt(ZERO_NONCE, plaintext, None)

    def open_metadata(self, ciphertext: bytes) -> bytes:
        """Decrypt the header metadata or raise CorruptRecording."""
        try:
            return self._metadata.decrypt(ZERO_NONCE, ciphertext, None)
        except InvalidTag:
            raise CorruptRecording("the header metadata does not authenticate") from None
