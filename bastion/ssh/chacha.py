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
through cffi (already installed with `cryptography`). The Poly1305 key and the payload come from
one call: the keystream of counter 0 XORed over 64 zero bytes and then the payload gives the key
in its first 32 bytes and the payload from byte 64 on. The tag is checked in constant time by
libsodium before the plaintext leaves this module.

`install()` puts this implementation in asyncssh's table of ciphers for the whole process when
libsodium loads, and leaves asyncssh's own otherwise (slower, the same bytes on the wire).
"""

from __future__ import annotations

import logging
from typing import Any

import asyncssh.encryption
from asyncssh.encryption import ChachaEncryption

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
_ZEROS = bytes(64)


class _Sodium:
    """The three libsodium functions, loaded once."""

    def __init__(self, ffi: Any, lib: Any) -> None:
        self.new = ffi.new
        self.buffer = ffi.buffer
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
    """The cipher of one direction of one SSH connection, as asyncssh's ChachaCipher."""

    __slots__ = ("_adkey", "_key", "_s")

    def __init__(self, sodium: _Sodium, key: bytes) -> None:
        if len(key) != 64:
            raise ValueError(f"chacha20-poly1305 takes a 64-byte key, not {len(key)} bytes")
        self._s = sodium
        self._key = key[:32]
        self._adkey = key[32:]

    def _stream(self, data: bytes, nonce: bytes) -> Any:
        """ChaCha20 from counter 0 over 64 zero bytes and `data`: the Poly1305 key is in [0:32]
        of the result, `data` XORed with the counter-1 keystream in [64:]."""
        s = self._s
        out = s.new("unsigned char[]", 64 + len(data))
        s.xor_ic(out, _ZEROS + data, 64 + len(data), nonce, 0, self._key)
        return s.buffer(out)

    def encrypt_and_sign(self, header: bytes, data: bytes, nonce: bytes) -> tuple[bytes, bytes]:
        s = self._s
        sealed_header = self.decrypt_header(header, nonce)  # the same XOR seals and opens
        stream = self._stream(data, nonce)
        sealed = sealed_header + stream[64:]
        tag = s.new("unsigned char[16]")
        s.poly1305(tag, sealed, len(sealed), stream[0:32])
        return sealed, s.buffer(tag)[:]

    def decrypt_header(self, header: bytes, nonce: bytes) -> bytes:
        s = self._s
        out = s.new("unsigned char[]", len(header))
        s.xor_ic(out, header, len(header), nonce, 0, self._adkey)
        return bytes(s.buffer(out)[:])  # bytes already: no copy

    def verify_and_decrypt(self, header: bytes, data: bytes, nonce: bytes,
                           tag: bytes) -> bytes | None:
        if len(tag) != 16:
            return None
        stream = self._stream(data, nonce)
        sealed = header + data
        if self._s.poly1305_verify(tag, sealed, len(sealed), stream[0:32]) != 0:
            return None
        return bytes(stream[64:])  # bytes already: no copy


class _SodiumChachaEncryption(ChachaEncryption):
    """asyncssh's chacha20-poly1305 packet shim with the libsodium cipher inside."""

    sodium: _Sodium

    @classmethod
    def new(cls, cipher_name: str, key: bytes, iv: bytes, mac_alg: bytes = b"",
            mac_key: bytes = b"", etm: bool = False) -> ChachaEncryption:
        return cls(SodiumChacha(cls.sodium, key))  # type: ignore[arg-type]


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
