"""The bastion's own login to a MySQL or MariaDB server, as the grant's account.

The relay connects first (it mirrors the server's greeting to the client), then logs in with
the capabilities the client asked for: `mysql_native_password`, or `caching_sha2_password`
with its fast path and, over plain TCP, full authentication with the server's RSA key.
The same login runs the `KILL QUERY` of a session the bastion ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bastion.wire.mysql_protocol import (
    CACHING_SHA2,
    CONNECT_WITH_DB,
    LONG_PASSWORD,
    NATIVE,
    PLUGIN_AUTH,
    PLUGIN_AUTH_LENENC_DATA,
    PROTOCOL_41,
    SECURE_CONNECTION,
    Framer,
    Handshake,
    Packet,
    ProtocolViolation,
    auth_switch,
    build_response,
    err_packet,
    native_scramble,
    packets,
    parse_handshake,
    sha2_scramble,
    xor_password,
)

__all__ = ["LoginRefused", "Upstream", "connect", "kill_query", "log_in"]

LOGIN_TIMEOUT = 15.0
SERVER_PACKET = 1 << 30  # the server is trusted, but not with all of the bastion's memory
READ_SIZE = 256 << 10


class LoginRefused(Exception):
    """The server refused the grant's account (its message), or could not be reached."""


@dataclass
class Upstream:
    """A connection to the server, and what its greeting said."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    handshake: Handshake
    framer: Framer = field(default_factory=lambda: Framer(SERVER_PACKET))

    async def packet(self) -> Packet:
        """The server's next packet."""
        while (pkt := self.framer.next()) is None:
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            self.framer.feed(data)
        return pkt

    def close(self) -> None:
        """Close the connection (without COM_QUIT)."""
        with contextlib.suppress(Exception):
            self.writer.close()


async def connect(host: str, port: int) -> Upstream:
    """Connect and read the server's greeting."""
    async with asyncio.timeout(LOGIN_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
        up = Upstream(reader, writer, Handshake("", 0, b"", 0, 0, 0, ""))
        try:
            first = await up.packet()
            if first.payload[:1] == b"\xff":
                raise LoginRefused(err_packet(first.payload).message)
            up.handshake = parse_handshake(first.payload)
        except BaseException:
            up.close()
            raise
    if not up.handshake.capabilities & PROTOCOL_41:
        up.close()
        raise LoginRefused("the server does not speak protocol 4.1")
    return up


async def log_in(up: Upstream, user: str, password: str, database: str, *, caps: int,
                 max_packet: int = 1 << 24, charset: int = 45, attributes: bytes = b"") -> None:
    """Log in as `user` with these capabilities (the login's own are added)."""
    hs = up.handshake
    caps |= PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | CONNECT_WITH_DB | LONG_PASSWORD
    caps = (caps & (hs.capabilities | LONG_PASSWORD)) | (hs.capabilities & PLUGIN_AUTH_LENENC_DATA)
    secret = password.encode()
    plugin = hs.plugin if hs.plugin in (NATIVE, CACHING_SHA2) else NATIVE
    salt = hs.salt
    async with asyncio.timeout(LOGIN_TIMEOUT):
        seq = 1
        up.writer.write(packets(build_response(caps, max_packet, charset, user,
                                               _scramble(plugin, secret, salt), database,
                                               plugin, attributes), seq))
        while True:
            pkt = await up.packet()
            seq = pkt.last + 1
            data = pkt.payload
            if not data:
                raise ProtocolViolation("an empty packet during login")
            if data[0] == 0x00:
                return
            if data[0] == 0xFF:
                raise LoginRefused(err_packet(data).message)
            if data[0] == 0xFE:
                plugin, salt = auth_switch(data)
                if plugin not in (NATIVE, CACHING_SHA2):
                    raise LoginRefused(f"the server asks for the {plugin} authentication, "
                                       "which the bastion does not speak")
                up.writer.write(packets(_scramble(plugin, secret, salt), seq))
            elif data[:2] == b"\x01\x03" and plugin == CACHING_SHA2:
                continue  # fast authentication succeeded: the OK follows
            elif data[:2] == b"\x01\x04" and plugin == CACHING_SHA2:
                up.writer.write(packets(b"\x02", seq))  # full authentication: ask for the key
            elif data[:1] == b"\x01" and plugin == CACHING_SHA2:
                up.writer.write(packets(_encrypt(data[1:], secret, salt), seq))
            else:
                raise ProtocolViolation("an unexpected packet during login")


def _scramble(plugin: str, secret: bytes, salt: bytes) -> bytes:
    return sha2_scramble(secret, salt) if plugin == CACHING_SHA2 else native_scramble(secret, salt)


def _encrypt(pem: bytes, secret: bytes, salt: bytes) -> bytes:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ProtocolViolation("the server's RSA public key is malformed") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ProtocolViolation("the server's public key is not an RSA key")
    sha1 = hashes.SHA1()  # noqa: S303 (the protocol's: OAEP with SHA-1, as the server decrypts)
    return key.encrypt(xor_password(secret, salt),
                       padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None))


async def kill_query(host: str, port: int, user: str, password: str, database: str,
                     connection_id: int) -> None:
    """`KILL QUERY` the statement another connection of the same account is running."""
    up = await connect(host, port)
    try:
        await log_in(up, user, password, database, caps=0)
        async with asyncio.timeout(LOGIN_TIMEOUT):
            up.writer.write(packets(b"\x03" + f"KILL QUERY {int(connection_id)}".encode(), 0))
            await up.packet()
            up.writer.write(packets(b"\x01", 0))
            await up.writer.drain()
    finally:
        up.close()
