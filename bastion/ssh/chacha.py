"""chacha20-poly1305@openssh.com computed by libsodium: a few microseconds a packet, not forty.

asyncssh builds three `cryptography` cipher objects for every SSH packet it seals or opens with
chacha20-poly1305 (the header's, the Poly1305 key's and the payload's), about 5 µs each before a
byte is processed: ~38 µs a packet on the benchmark machine, half the bastion's CPU in a pgbench
transaction through `ssh -L`. OpenSSH's construction (PROTOCOL.chacha20poly1305) is DJB's
ChaCha20 with a 64-bit nonce (the packet's sequence number) and a 64-bit block counter:

- the length header: ChaCha20 under the second half of the key, counter 0;
- the Poly1305 key: the first 32 bytes of ChaCha20 under the first half, counter 0;
- the payload: ChaCha20 under the first half, counter 1;
- the tag: Poly1305 over the encrypted header and payload.

libsodium has exactly that ChaCha20 (`crypto_stream_chacha20_xor_ic`) and Poly1305, called here
through cffi (already installed with `cryptography`). Packets are sealed straight into one
unzeroed buffer and opened from the received bytes in place (a 32 KiB packet is copied once, not
four times). The tag is checked in constant time by libsodium before anything is decrypted.

`install()` puts this implementation in asyncssh's table of ciphers for the whole process when
libsodium loads, and leaves asyncssh's own otherwise (slower, the same bytes on the wire).
"""

from __future__ import annotations

import logging
from typing import Any

import asyncssh.encryption
from asyncssh.encryption import ChachaEncryption
from asyncssh.packet import UInt64

__all__ = ["SodiumChacha", "install", "load_sodium"]

log = logging.getLogger(__name__)

_ALGORITHM = b"chacha20-poly1305@openssh.com"
_CDEF = """
int sodium_init(void);
int crypto_stream_chacha20_xor_ic(unsigned char *c, const unsigned char *m,
                                  unsigned long long mlen, const unsigned char *n,
                                  uint64_t ic, const unsigned char *k);
int crypto_onetimeauth_poly1305(unsigned char *out, const unsigned char *in,
                                unsigned long long inlen, const unsigned char *k);
int crypto_onetimeauth_poly1305_verify(const unsigned char *h, const unsigned char *in,
                                       unsigned long long inlen, const unsigned char *k);
"""
_LIBRARIES = ("sodium", "libsodium.so.23", "libsodium.so.26")
_ZEROS = bytes(32)


class _Sodium:
    """The three libsodium functions, loaded once."""

    def __init__(self, ffi: Any, lib: Any) -> None:
        # Buffers that are written whole before they are read need no zeroing.
        self.alloc = ffi.new_allocator(should_clear_after_alloc=False)
        self.buffer = ffi.buffer
        self.from_buffer = ffi.from_buffer
        self.xor_ic = lib.crypto_stream_chacha20_xor_ic
        self.poly1305 = lib.crypto_onetimeauth_poly1305
        self.poly1305_verify = lib.crypto_onetimeauth_poly1305_verify


def load_sodium() -> _Sodium | None:
    """libsodium through cffi, or None (with the reason logged) where it cannot be loaded."""
    try:
        import cffi  # type: ignore[import-untyped]
    except ImportError:
        log.info("cffi is not installed: SSH chacha20-poly1305 stays with asyncssh's own")
        return None
    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    for name in _LIBRARIES:
        try:
            lib = ffi.dlopen(name)
        except OSError:
            continue
        if lib.sodium_init() < 0:
            log.warning("libsodium (%s) failed to initialise: SSH chacha20-poly1305 stays with "
                        "asyncssh's own", name)
            return None
        return _Sodium(ffi, lib)
    log.info("libsodium is not installed (Debian: libsodium23): SSH chacha20-poly1305 stays "
             "with asyncssh's own, which costs more CPU per packet")
    return None


class SodiumChacha:
    """The cipher of one direction of one SSH connection: asyncssh's ChachaCipher's sealing and
    header calls; packets are opened whole (`open`, from `decrypt_packet` below)."""

    __slots__ = ("_adkey", "_key", "_s")

    def __init__(self, sodium: _Sodium, key: bytes) -> None:
        if len(key) != 64:
            raise ValueError(f"chacha20-poly1305 takes a 64-byte key, not {len(key)} bytes")
        self._s = sodium
        self._key = key[:32]
        self._adkey = key[32:]

    def encrypt_and_sign(self, header: bytes, data: bytes, nonce: bytes) -> tuple[bytes, bytes]:
        s = self._s
        length = len(header) + len(data)
        sealed = s.alloc("unsigned char[]", length)
        s.xor_ic(sealed, header, len(header), nonce, 0, self._adkey)
        s.xor_ic(sealed + len(header), data, len(data), nonce, 1, self._key)
        tag_and_key = s.alloc("unsigned char[]", 48)  # the tag, then the Poly1305 key
        s.xor_ic(tag_and_key + 16, _ZEROS, 32, nonce, 0, self._key)
        s.poly1305(tag_and_key, sealed, length, tag_and_key + 16)
        return s.buffer(sealed)[:], s.buffer(tag_and_key, 16)[:]

    def decrypt_header(self, header: bytes, nonce: bytes) -> bytes:
        s = self._s
        out = s.alloc("unsigned char[]", len(header))
        s.xor_ic(out, header, len(header), nonce, 0, self._adkey)
        return bytes(s.buffer(out)[:])  # bytes already: no copy

    def open(self, sealed: bytes, header_len: int, nonce: bytes, tag: bytes) -> bytes | None:
        """The payload of a sealed packet (its encrypted header and payload, as the tag covers
        them), or None if the tag does not match."""
        if len(tag) != 16:
            return None
        s = self._s
        key = s.alloc("unsigned char[]", 32)
        s.xor_ic(key, _ZEROS, 32, nonce, 0, self._key)
        if s.poly1305_verify(tag, sealed, len(sealed), key) != 0:
            return None
        length = len(sealed) - header_len
        payload = s.alloc("unsigned char[]", max(length, 1))
        s.xor_ic(payload, s.from_buffer(sealed) + header_len, length, nonce, 1, self._key)
        return bytes(s.buffer(payload, length)[:])  # bytes already: no copy


class _SodiumChachaEncryption(ChachaEncryption):
    """asyncssh's chacha20-poly1305 packet shim with the libsodium cipher inside."""

    sodium: _Sodium

    @classmethod
    def new(cls, cipher_name: str, key: bytes, iv: bytes, mac_alg: bytes = b"",
            mac_key: bytes = b"", etm: bool = False) -> ChachaEncryption:
        return cls(SodiumChacha(cls.sodium, key))  # type: ignore[arg-type]

    def decrypt_packet(self, seq: int, first: bytes, rest: bytes, header_len: int,
                       mac: bytes) -> bytes | None:
        # asyncssh's own joins the payload's two pieces, then the header to them: one join here.
        cipher: SodiumChacha = self._cipher  # type: ignore[assignment]
        return cipher.open(first + rest, header_len, UInt64(seq), mac)


_installed = False


def install() -> bool:
    """Seal and open this process's chacha20-poly1305 SSH packets with libsodium; False (and
    asyncssh's own cipher kept) where libsodium cannot be loaded."""
    global _installed
    if _installed:
        return True
    params = asyncssh.encryption._enc_params  # the table get_encryption() reads
    if _ALGORITHM not in params:
        return False
    sodium = load_sodium()
    if sodium is None:
        return False
    _SodiumChachaEncryption.sodium = sodium
    _encryption, cipher_name = params[_ALGORITHM]
    params[_ALGORITHM] = (_SodiumChachaEncryption, cipher_name)
    _installed = True
    return True
