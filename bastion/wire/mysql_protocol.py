"""The MySQL client/server protocol as the relay reads and writes it, without I/O.

Packets (a 3-byte length, a sequence id, a payload; payloads of 2^24-1 bytes and more span
packets), length-encoded integers and strings, the server's Handshake v10 and the client's
HandshakeResponse41, OK, ERR and EOF packets, column definitions, text and binary result rows,
and the password scrambles of `mysql_native_password` and `caching_sha2_password`.

Every decoder raises ProtocolViolation, and only that, on bytes it cannot accept: what a client
sends is untrusted, and the relay turns the violation into an error packet and an audit event.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "Column", "ErrPacket", "Framer", "Handshake", "HandshakeResponse", "OkPacket", "Packet",
    "ProtocolViolation", "binary_row", "build_err", "build_handshake", "build_ok",
    "build_response", "column_definition", "err_packet", "lenenc_int", "lenenc_str",
    "native_scramble", "ok_packet", "packets", "parse_handshake", "parse_response",
    "read_lenenc_int", "read_lenenc_str", "sha2_scramble", "text_row",
]

MAX_PACKET = 0xFFFFFF  # a payload this long continues in the next packet

# Capability flags (CLIENT_*).
LONG_PASSWORD = 1  # MariaDB: CLIENT_MYSQL (unset by a server that has extended capabilities)
CONNECT_WITH_DB = 1 << 3
COMPRESS = 1 << 5
LOCAL_FILES = 1 << 7
PROTOCOL_41 = 1 << 9
SSL = 1 << 11
SECURE_CONNECTION = 1 << 15
MULTI_STATEMENTS = 1 << 16
MULTI_RESULTS = 1 << 17
PS_MULTI_RESULTS = 1 << 18
PLUGIN_AUTH = 1 << 19
CONNECT_ATTRS = 1 << 20
PLUGIN_AUTH_LENENC_DATA = 1 << 21
DEPRECATE_EOF = 1 << 24
# Never offered: TLS and compression (the SSH channel is both), LOAD DATA LOCAL, and the
# flags that change packet layouts the relay reads (query attributes, optional metadata,
# zstd, multi-factor authentication, the capability extension and the rest of the high bits).
STRIPPED = SSL | COMPRESS | LOCAL_FILES | 0xFE000000

# Server status flags.
STATUS_CURSOR_EXISTS = 0x0040
STATUS_MORE_RESULTS = 0x0008

NATIVE = "mysql_native_password"
CACHING_SHA2 = "caching_sha2_password"


class ProtocolViolation(Exception):
    """Bytes that are not the MySQL protocol (or not what may come at this point)."""


class Packet(NamedTuple):
    """One logical packet: its first sequence id, its payload (continuations joined), its
    last sequence id, and the bytes it came as."""

    seq: int
    payload: bytes
    last: int
    raw: bytes


def packets(payload: bytes, seq: int) -> bytes:
    """`payload` framed as packets from sequence id `seq` (split at 2^24-1 bytes)."""
    out = bytearray()
    pos = 0
    while True:
        chunk = payload[pos:pos + MAX_PACKET]
        out += len(chunk).to_bytes(3, "little") + bytes((seq & 0xFF,)) + chunk
        pos += MAX_PACKET
        seq += 1
        if len(chunk) < MAX_PACKET:
            return bytes(out)


def packet_count(payload_length: int) -> int:
    """How many packets `packets` makes of a payload this long."""
    return payload_length // MAX_PACKET + 1


def reseq(raw: bytes, delta: int) -> bytes:
    """Packets with every sequence id moved by `delta` (mod 256)."""
    out = bytearray(raw)
    pos = 0
    while pos + 4 <= len(out):
        out[pos + 3] = (out[pos + 3] + delta) & 0xFF
        pos += 4 + int.from_bytes(out[pos:pos + 3], "little")
    return bytes(out)


@dataclass
class Framer:
    """Splits a byte stream into logical packets, joining continuations; refuses payloads
    over `limit` bytes and continuations out of sequence."""

    limit: int
    buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> None:
        """Add bytes read from the stream."""
        self.buf += data

    def next(self) -> Packet | None:
        """The next complete logical packet, or None until more bytes arrive."""
        buf = self.buf
        pos = 0
        parts: list[bytes] = []
        size = 0
        first = last = -1
        while True:
            if len(buf) < pos + 4:
                return None
            length = int.from_bytes(buf[pos:pos + 3], "little")
            seq = buf[pos + 3]
            size += length
            if size > self.limit:
                raise ProtocolViolation(f"a packet of more than {self.limit} bytes")
            if first < 0:
                first = seq
            elif seq != (last + 1) & 0xFF:
                raise ProtocolViolation(f"packet out of order (sequence id {seq} after {last})")
            last = seq
            if len(buf) < pos + 4 + length:
                return None
            parts.append(bytes(buf[pos + 4:pos + 4 + length]))
            pos += 4 + length
            if length < MAX_PACKET:
                break
        raw = bytes(buf[:pos])
        del buf[:pos]
        payload = parts[0] if len(parts) == 1 else b"".join(parts)
        return Packet(first, payload, last, raw)


# length-encoded integers and strings -----------------------------------------------------

def lenenc_int(n: int) -> bytes:
    """A length-encoded integer."""
    if n < 0xFB:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def lenenc_str(data: bytes) -> bytes:
    """A length-encoded string."""
    return lenenc_int(len(data)) + data


def read_lenenc_int(data: bytes, pos: int) -> tuple[int | None, int]:
    """The length-encoded integer at `pos` (None for 0xFB, NULL in a row) and where it ends."""
    if pos >= len(data):
        raise ProtocolViolation("truncated length-encoded integer")
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if width is None or pos + 1 + width > len(data):
        raise ProtocolViolation("malformed length-encoded integer")
    return int.from_bytes(data[pos + 1:pos + 1 + width], "little"), pos + 1 + width


def read_lenenc_str(data: bytes, pos: int) -> tuple[bytes | None, int]:
    """The length-encoded string at `pos` (None for NULL) and where it ends."""
    length, pos = read_lenenc_int(data, pos)
    if length is None:
        return None, pos
    if pos + length > len(data):
        raise ProtocolViolation("truncated length-encoded string")
    return data[pos:pos + length], pos + length


def _cstring(data: bytes, pos: int, *, to_end: bool = False) -> tuple[bytes, int]:
    """A NUL-terminated string (or, with `to_end`, the rest when there is no NUL)."""
    end = data.find(b"\x00", pos)
    if end < 0:
        if to_end:
            return data[pos:], len(data)
        raise ProtocolViolation("unterminated string")
    return data[pos:end], end + 1


def _fixed(data: bytes, pos: int, n: int) -> tuple[bytes, int]:
    if pos + n > len(data):
        raise ProtocolViolation("truncated packet")
    return data[pos:pos + n], pos + n


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


# handshake --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Handshake:
    """The server's Handshake v10 (the fields the relay uses)."""

    version: str
    connection_id: int
    salt: bytes
    capabilities: int
    charset: int
    status: int
    plugin: str


def parse_handshake(data: bytes) -> Handshake:
    """Decode a Handshake v10 packet."""
    if not data or data[0] != 10:
        raise ProtocolViolation("not a protocol 10 handshake")
    version, pos = _cstring(data, 1)
    head, pos = _fixed(data, pos, 4 + 8 + 1 + 2)
    connection_id = int.from_bytes(head[:4], "little")
    salt = head[4:12]
    caps = int.from_bytes(head[13:15], "little")
    charset = status = 0
    plugin = b""
    if pos < len(data):
        rest, pos = _fixed(data, pos, 1 + 2 + 2 + 1 + 10)
        charset = rest[0]
        status = int.from_bytes(rest[1:3], "little")
        caps |= int.from_bytes(rest[3:5], "little") << 16
        salt_length = rest[5]
        if caps & SECURE_CONNECTION:
            part, pos = _fixed(data, pos, max(13, salt_length - 8))
            salt += part.rstrip(b"\x00")
        if caps & PLUGIN_AUTH:
            plugin, pos = _cstring(data, pos, to_end=True)
    return Handshake(_text(version), connection_id, salt, caps, charset, status, _text(plugin))


def build_handshake(hs: Handshake) -> bytes:
    """Encode a Handshake v10 payload (20-byte salt; no MariaDB extended capabilities)."""
    if len(hs.salt) != 20:
        raise ValueError("the salt is 20 bytes")
    caps = hs.capabilities
    return (b"\x0a" + hs.version.encode() + b"\x00" + hs.connection_id.to_bytes(4, "little")
            + hs.salt[:8] + b"\x00" + (caps & 0xFFFF).to_bytes(2, "little")
            + bytes((hs.charset,)) + hs.status.to_bytes(2, "little")
            + (caps >> 16 & 0xFFFF).to_bytes(2, "little") + bytes((21,)) + bytes(10)
            + hs.salt[8:] + b"\x00" + hs.plugin.encode() + b"\x00")


@dataclass
class HandshakeResponse:
    """The client's HandshakeResponse41 (or, with `ssl_only`, a bare SSLRequest)."""

    capabilities: int
    max_packet: int
    charset: int
    user: str = ""
    auth: bytes = b""
    database: str | None = None
    plugin: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    ssl_only: bool = False


def parse_response(data: bytes) -> HandshakeResponse:
    """Decode the client's HandshakeResponse41 (or SSLRequest)."""
    head, pos = _fixed(data, 0, 32)
    caps = int.from_bytes(head[:4], "little")
    if not caps & PROTOCOL_41:
        raise ProtocolViolation("a pre-4.1 client handshake (protocol 41 is required)")
    response = HandshakeResponse(caps, int.from_bytes(head[4:8], "little"), head[8])
    if pos == len(data):
        if not caps & SSL:
            raise ProtocolViolation("truncated handshake response")
        response.ssl_only = True
        return response
    user, pos = _cstring(data, pos)
    response.user = _text(user)
    if caps & PLUGIN_AUTH_LENENC_DATA:
        auth, pos = read_lenenc_str(data, pos)
        response.auth = auth or b""
    elif caps & SECURE_CONNECTION:
        length, pos = _fixed(data, pos, 1)
        response.auth, pos = _fixed(data, pos, length[0])
    else:
        response.auth, pos = _cstring(data, pos, to_end=True)
    if caps & CONNECT_WITH_DB and pos < len(data):
        database, pos = _cstring(data, pos, to_end=True)
        response.database = _text(database) or None
    if caps & PLUGIN_AUTH and pos < len(data):
        plugin, pos = _cstring(data, pos, to_end=True)
        response.plugin = _text(plugin)
    if caps & CONNECT_ATTRS and pos < len(data):
        total, pos = read_lenenc_int(data, pos)
        end = pos + (total or 0)
        if end > len(data):
            raise ProtocolViolation("truncated connection attributes")
        while pos < end:
            key, pos = read_lenenc_str(data, pos)
            value, pos = read_lenenc_str(data, pos)
            if pos > end:
                raise ProtocolViolation("malformed connection attributes")
            response.attributes[_text(key or b"")] = _text(value or b"")
    return response


def build_response(caps: int, max_packet: int, charset: int, user: str, auth: bytes,
                   database: str, plugin: str, attributes: bytes = b"") -> bytes:
    """Encode a HandshakeResponse41 payload; `attributes` is the encoded attribute block."""
    out = (caps.to_bytes(4, "little") + max_packet.to_bytes(4, "little") + bytes((charset,))
           + bytes(23) + user.encode() + b"\x00")
    if caps & PLUGIN_AUTH_LENENC_DATA:
        out += lenenc_str(auth)
    else:
        out += bytes((len(auth),)) + auth
    out += database.encode() + b"\x00" + plugin.encode() + b"\x00"
    if caps & CONNECT_ATTRS:
        out += lenenc_str(attributes)
    return out


def encode_attributes(attributes: dict[str, str]) -> bytes:
    """The connection attribute block (without its length)."""
    return b"".join(lenenc_str(k.encode()) + lenenc_str(v.encode())
                    for k, v in attributes.items())


# authentication ---------------------------------------------------------------------------

def native_scramble(password: bytes, salt: bytes) -> bytes:
    """mysql_native_password: SHA1(password) XOR SHA1(salt + SHA1(SHA1(password)))."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()  # noqa: S324 (the protocol's)
    stage2 = hashlib.sha1(stage1).digest()  # noqa: S324
    mix = hashlib.sha1(salt[:20] + stage2).digest()  # noqa: S324
    return bytes(a ^ b for a, b in zip(stage1, mix, strict=True))


def sha2_scramble(password: bytes, salt: bytes) -> bytes:
    """caching_sha2_password fast authentication:
    SHA256(password) XOR SHA256(SHA256(SHA256(password)) + salt)."""
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    p3 = hashlib.sha256(p2 + salt[:20]).digest()
    return bytes(a ^ b for a, b in zip(p1, p3, strict=True))


def xor_password(password: bytes, salt: bytes) -> bytes:
    """The password (NUL-terminated) XOR the salt, as RSA full authentication encrypts it."""
    text = password + b"\x00"
    salt = salt[:20] or b"\x00"
    return bytes(c ^ salt[i % len(salt)] for i, c in enumerate(text))


def auth_switch(payload: bytes) -> tuple[str, bytes]:
    """An AuthSwitchRequest (0xFE): the plugin and its salt."""
    plugin, pos = _cstring(payload, 1, to_end=True)
    salt = payload[pos:]
    return _text(plugin), salt[:-1] if salt.endswith(b"\x00") else salt


# OK, ERR, EOF -----------------------------------------------------------------------------

@dataclass(frozen=True)
class OkPacket:
    """An OK packet (or an EOF packet: then affected rows are 0)."""

    affected: int
    status: int
    warnings: int


@dataclass(frozen=True)
class ErrPacket:
    """An ERR packet."""

    code: int
    state: str
    message: str


def ok_packet(data: bytes) -> OkPacket:
    """Decode an OK packet (0x00, or 0xFE ending a result set) or a short EOF packet."""
    if not data or data[0] not in (0x00, 0xFE):
        raise ProtocolViolation("not an OK packet")
    if data[0] == 0xFE and len(data) < 9:  # EOF: warnings, status
        if len(data) < 5:
            return OkPacket(0, 0, 0)
        return OkPacket(0, int.from_bytes(data[3:5], "little"), int.from_bytes(data[1:3], "little"))
    affected, pos = read_lenenc_int(data, 1)
    _, pos = read_lenenc_int(data, pos)
    head, _ = _fixed(data, pos, 4)
    return OkPacket(affected or 0, int.from_bytes(head[:2], "little"),
                    int.from_bytes(head[2:], "little"))


def err_packet(data: bytes) -> ErrPacket:
    """Decode an ERR packet."""
    if len(data) < 3 or data[0] != 0xFF:
        raise ProtocolViolation("not an ERR packet")
    code = int.from_bytes(data[1:3], "little")
    if len(data) >= 9 and data[3:4] == b"#":
        return ErrPacket(code, _text(data[4:9]), _text(data[9:]))
    return ErrPacket(code, "HY000", _text(data[3:]))


def build_ok(status: int = 0x0002, affected: int = 0) -> bytes:
    """An OK payload (autocommit status by default)."""
    return b"\x00" + lenenc_int(affected) + b"\x00" + status.to_bytes(2, "little") + b"\x00\x00"


def build_err(code: int, state: str, message: str) -> bytes:
    """An ERR payload."""
    return (b"\xff" + code.to_bytes(2, "little") + b"#" + state.encode()[:5].ljust(5, b"0")
            + message.encode())


# result sets ------------------------------------------------------------------------------

class Column(NamedTuple):
    """A column definition: its name, type and flags."""

    name: str
    type: int
    flags: int
    org_table: str = ""  # the table or view it was read from ("" for a computed value)


@functools.lru_cache(maxsize=4096)
def column_definition(data: bytes) -> Column:
    """Decode a ColumnDefinition41. Cached: a driver's statements come back with the same
    definitions again and again, and a Column is immutable."""
    pos = 0
    name = org_table = b""
    for i in range(6):  # catalog, schema, table, org_table, name, org_name
        value, pos = read_lenenc_str(data, pos)
        if i == 4:
            name = value or b""
        elif i == 3:
            org_table = value or b""
    _, pos = read_lenenc_int(data, pos)
    fixed, _ = _fixed(data, pos, 10)
    return Column(_text(name), fixed[6], int.from_bytes(fixed[7:9], "little"), _text(org_table))


def build_text_row(values: list[bytes | None]) -> bytes:
    """A text-protocol row payload (None for NULL)."""
    return b"".join(b"\xfb" if v is None else lenenc_str(v) for v in values)


def text_row(data: bytes, count: int) -> list[str]:
    """A text-protocol row as text ("NULL" for NULL)."""
    row: list[str] = []
    pos = 0
    for _ in range(count):
        value, pos = read_lenenc_str(data, pos)
        row.append("NULL" if value is None else _text(value))
    if pos != len(data):
        raise ProtocolViolation("malformed text row")
    return row


_FIXED_WIDTHS = {1: 1, 2: 2, 13: 2, 3: 4, 9: 4, 4: 4, 8: 8, 5: 8}
_INTS = {1: 1, 2: 2, 13: 2, 3: 4, 9: 4, 8: 8}
UNSIGNED = 0x20


def binary_row(data: bytes, columns: list[Column]) -> list[str]:
    """A binary-protocol row (COM_STMT_EXECUTE) as text ("NULL" for NULL)."""
    if not data or data[0] != 0x00:
        raise ProtocolViolation("malformed binary row")
    bitmap, pos = _fixed(data, 1, (len(columns) + 7 + 2) // 8)
    row: list[str] = []
    for i, column in enumerate(columns):
        if bitmap[(i + 2) // 8] >> ((i + 2) % 8) & 1:
            row.append("NULL")
            continue
        kind = column.type
        if kind == 6:
            row.append("NULL")
        elif kind in _INTS:
            raw, pos = _fixed(data, pos, _INTS[kind])
            signed = not column.flags & UNSIGNED
            row.append(str(int.from_bytes(raw, "little", signed=signed)))
        elif kind in (4, 5):
            raw, pos = _fixed(data, pos, _FIXED_WIDTHS[kind])
            row.append(repr(struct.unpack("<f" if kind == 4 else "<d", raw)[0]))
        elif kind in (7, 10, 12):
            raw, pos = _counted(data, pos)
            row.append(_datetime(raw))
        elif kind == 11:
            raw, pos = _counted(data, pos)
            row.append(_time(raw))
        else:
            value, pos = read_lenenc_str(data, pos)
            row.append("NULL" if value is None else _text(value))
    return row


def _counted(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = _fixed(data, pos, 1)
    return _fixed(data, pos, length[0])


def _datetime(raw: bytes) -> str:
    if not raw:
        return "0000-00-00 00:00:00"
    if len(raw) not in (4, 7, 11):
        raise ProtocolViolation("malformed date in a binary row")
    text = f"{int.from_bytes(raw[:2], 'little'):04d}-{raw[2]:02d}-{raw[3]:02d}"
    if len(raw) >= 7:
        text += f" {raw[4]:02d}:{raw[5]:02d}:{raw[6]:02d}"
    if len(raw) == 11:
        text += f".{int.from_bytes(raw[7:], 'little'):06d}"
    return text


def _time(raw: bytes) -> str:
    if not raw:
        return "00:00:00"
    if len(raw) not in (8, 12):
        raise ProtocolViolation("malformed time in a binary row")
    hours = int.from_bytes(raw[1:5], "little") * 24 + raw[5]
    text = f"{'-' if raw[0] else ''}{hours:02d}:{raw[6]:02d}:{raw[7]:02d}"
    if len(raw) == 12:
        text += f".{int.from_bytes(raw[8:], 'little'):06d}"
    return text


# character sets ---------------------------------------------------------------------------

# Client character sets in which no multi-byte character holds a quote or backslash byte, so
# the bastion reads a statement as the server does (GBK, SJIS, BIG5 and the like are not).
SAFE_CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8", "latin1", "ascii", "binary"})
SAFE_COLLATIONS = frozenset({5, 8, 11, 15, 31, 33, 45, 46, 47, 48, 49, 63, 65, 83, 94, 223, 255,
                             *range(192, 216), *range(224, 248)})
