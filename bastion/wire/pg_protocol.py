"""The PostgreSQL frontend/backend protocol (v3), as the relay needs it: framing, the messages
it reads, and the ones it writes. No I/O here, so every decoder can be fuzzed on its own.

A message is a one-byte tag and an int32 length that counts itself; the start-up packets
(StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) have no tag. Anything malformed
raises ProtocolViolation with a message fit for the client and the audit trail.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "CANCEL_REQUEST",
    "GSSENC_REQUEST",
    "PROTOCOL_3_0",
    "SSL_REQUEST",
    "ProtocolViolation",
    "Startup",
    "authentication_ok",
    "backend_key",
    "bastion_error",
    "build_data_row",
    "build_error",
    "build_parse",
    "build_query",
    "cancel_packet",
    "command_rows",
    "cstring",
    "error_fields",
    "message",
    "negotiate_version",
    "next_message",
    "parse_bind",
    "parse_data_row",
    "parse_execute",
    "parse_parse",
    "parse_row_description",
    "parse_startup",
    "parse_target",
    "ready_for_query",
    "split_messages",
    "startup_packet",
]

PROTOCOL_3_0 = 3 << 16
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP = 10_000  # the server's own limit for a start-up packet
MAX_MESSAGE = 1 << 30  # the protocol's: a field is at most 1 GiB
_INT32 = struct.Struct("!i")
_LENGTH = struct.Struct(">I")
_HEADER = struct.Struct("!ci")


class ProtocolViolation(Exception):
    """The peer broke the protocol; the message says how."""


@dataclass(frozen=True)
class Startup:
    """A StartupMessage: the protocol version asked for and the parameters."""

    major: int
    minor: int
    params: dict[str, str] = field(default_factory=dict)


def parse_startup(payload: bytes) -> tuple[int, Startup | tuple[int, bytes]]:
    """Decode a start-up packet's body (after its length): (code, Startup) for a StartupMessage,
    (code, (pid, key)) for a CancelRequest, (code, ()) for SSL and GSSENC requests."""
    if len(payload) < 4:
        raise ProtocolViolation("start-up packet too short")
    (code,) = _INT32.unpack_from(payload)
    if code == CANCEL_REQUEST:
        if len(payload) < 12 or len(payload) > 4 + 4 + 256:
            raise ProtocolViolation("malformed CancelRequest")
        return code, ((_INT32.unpack_from(payload, 4)[0]), bytes(payload[8:]))
    if code in (SSL_REQUEST, GSSENC_REQUEST):
        if len(payload) != 4:
            raise ProtocolViolation("malformed SSLRequest or GSSENCRequest")
        return code, (0, b"")
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        raise ProtocolViolation(f"unsupported frontend protocol {major}.{minor}: the bastion "
                                "speaks 3.0")
    parts = bytes(payload[4:]).split(b"\x00")
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"":
        raise ProtocolViolation("malformed StartupMessage: parameters must end with an empty name")
    params: dict[str, str] = {}
    words = parts[:-2]
    if len(words) % 2:
        raise ProtocolViolation("malformed StartupMessage: a parameter has no value")
    for i in range(0, len(words), 2):
        try:
            name, value = words[i].decode(), words[i + 1].decode()
        except UnicodeDecodeError:
            raise ProtocolViolation("start-up parameters must be UTF-8") from None
        if not name or name in params:
            raise ProtocolViolation(f"malformed StartupMessage: parameter {name!r} repeated or "
                                    "empty")
        params[name] = value
    return code, Startup(major, minor, params)


def startup_packet(params: dict[str, str]) -> bytes:
    """A protocol 3.0 StartupMessage with these parameters."""
    body = _INT32.pack(PROTOCOL_3_0) + b"".join(
        k.encode() + b"\x00" + v.encode() + b"\x00" for k, v in params.items()) + b"\x00"
    return _INT32.pack(len(body) + 4) + body


def cancel_packet(pid: int, key: bytes) -> bytes:
    """A CancelRequest for the backend `pid` with its secret key."""
    return _INT32.pack(12 + len(key)) + _INT32.pack(CANCEL_REQUEST) + _INT32.pack(pid) + key


def message(tag: bytes, payload: bytes = b"") -> bytes:
    """One tagged message."""
    return tag + _INT32.pack(len(payload) + 4) + payload


def next_message(buf: bytearray | bytes, pos: int = 0, limit: int = MAX_MESSAGE
                 ) -> tuple[int, int, int] | None:
    """(tag, payload start, end) of the whole message at `pos`, or None when it is not complete
    yet. A length below 4 or above `limit` is a violation."""
    if len(buf) - pos < 5:
        return None
    (length,) = _LENGTH.unpack_from(buf, pos + 1)  # no slice: this runs for every message
    if length < 4 or length > limit:
        raise ProtocolViolation(f"message {chr(buf[pos])!r} has an impossible length {length}")
    end = pos + 1 + length
    return None if end > len(buf) else (buf[pos], pos + 5, end)


def split_messages(buf: bytearray | bytes, start: int = 0, limit: int = MAX_MESSAGE
                   ) -> Iterator[tuple[int, int, int]]:
    """Each whole message in `buf` from `start` (see next_message)."""
    while (found := next_message(buf, start, limit)) is not None:
        yield found
        start = found[2]


def data_rows(buf: bytearray, pos: int, most: int) -> tuple[int, int]:
    """How many whole DataRow messages follow one another from `pos` (at most `most`), and
    where they end: a bulk result is passed on in one piece, its rows only counted."""
    size = len(buf)
    count = 0
    unpack = _LENGTH.unpack_from
    while count < most and size - pos >= 5 and buf[pos] == 0x44:  # "D"
        (length,) = unpack(buf, pos + 1)
        if length < 4 or length > MAX_MESSAGE:
            break  # split_messages names the violation
        end = pos + 1 + length
        if end > size:
            break
        pos = end
        count += 1
    return count, pos


def cstring(payload: bytes | memoryview, offset: int) -> tuple[str, int]:
    """A NUL-terminated UTF-8 string at `offset` and the offset after it."""
    data = bytes(payload)
    end = data.find(b"\x00", offset)
    if end < 0:
        raise ProtocolViolation("a string is not terminated")
    try:
        return data[offset:end].decode(), end + 1
    except UnicodeDecodeError:
        raise ProtocolViolation("the text is not valid UTF-8 (the bastion needs "
                                "client_encoding UTF8)") from None


def parse_parse(payload: bytes) -> tuple[str, str, list[int]]:
    """Parse: (statement name, query text, parameter type OIDs)."""
    name, pos = cstring(payload, 0)
    query, pos = cstring(payload, pos)
    if len(payload) < pos + 2:
        raise ProtocolViolation("malformed Parse")
    count = int.from_bytes(payload[pos:pos + 2], "big")
    if len(payload) != pos + 2 + 4 * count:
        raise ProtocolViolation("malformed Parse: parameter types")
    types = list(struct.unpack_from(f"!{count}I", payload, pos + 2))
    return name, query, types


def build_parse(name: str, query: str, types: list[int] | None = None) -> bytes:
    """A Parse message."""
    types = types or []
    body = (name.encode() + b"\x00" + query.encode() + b"\x00" + struct.pack("!H", len(types))
            + struct.pack(f"!{len(types)}I", *types))
    return message(b"P", body)


def build_query(text: str) -> bytes:
    """A simple Query message."""
    return message(b"Q", text.encode() + b"\x00")


def parse_bind(payload: bytes) -> tuple[str, str, list[int]]:
    """Bind: (portal, statement, result format codes); the parameters pass through unread."""
    portal, pos = cstring(payload, 0)
    statement, pos = cstring(payload, pos)
    try:
        count = int.from_bytes(payload[pos:pos + 2], "big")
        pos += 2 + 2 * count
        params = int.from_bytes(payload[pos:pos + 2], "big")
        pos += 2
        for _ in range(params):
            (length,) = _INT32.unpack_from(payload, pos)
            pos += 4 + max(length, 0)
        count = int.from_bytes(payload[pos:pos + 2], "big")
        formats = list(struct.unpack_from(f"!{count}h", payload, pos + 2))
    except struct.error:
        raise ProtocolViolation("malformed Bind") from None
    if pos + 2 + 2 * count != len(payload):
        raise ProtocolViolation("malformed Bind")
    return portal, statement, formats


def parse_target(payload: bytes) -> tuple[str, str]:
    """Describe and Close: ("S" for a statement or "P" for a portal, name)."""
    kind = payload[:1]
    if kind not in (b"S", b"P"):
        raise ProtocolViolation("Describe and Close name a statement (S) or a portal (P)")
    name, end = cstring(payload, 1)
    if end != len(payload):
        raise ProtocolViolation("malformed Describe or Close")
    return kind.decode(), name


def parse_execute(payload: bytes) -> tuple[str, int]:
    """Execute: (portal, maximum rows; 0 for all)."""
    portal, pos = cstring(payload, 0)
    if len(payload) != pos + 4:
        raise ProtocolViolation("malformed Execute")
    return portal, _INT32.unpack_from(payload, pos)[0]


def parse_row_description(payload: bytes | memoryview) -> list[tuple[str, int, int, int]]:
    """RowDescription: each column's (name, table OID (0: computed), type OID, format code)."""
    return list(_row_description(bytes(payload)))


@functools.lru_cache(maxsize=4096)
def _row_description(data: bytes) -> tuple[tuple[str, int, int, int], ...]:
    """Cached: a client's statements come back with the same descriptions again and again."""
    if len(data) < 2:
        raise ProtocolViolation("malformed RowDescription")
    count = int.from_bytes(data[:2], "big")
    pos = 2
    columns = []
    for _ in range(count):
        name, pos = cstring(data, pos)
        if len(data) < pos + 18:
            raise ProtocolViolation("malformed RowDescription")
        columns.append((name, int.from_bytes(data[pos:pos + 4], "big"),
                        int.from_bytes(data[pos + 6:pos + 10], "big"),
                        int.from_bytes(data[pos + 16:pos + 18], "big")))
        pos += 18
    return tuple(columns)


def parse_data_row(payload: bytes | memoryview) -> list[bytes | None]:
    """DataRow: each value's bytes (None for NULL)."""
    data = bytes(payload)
    if len(data) < 2:
        raise ProtocolViolation("malformed DataRow")
    count = int.from_bytes(data[:2], "big")
    pos = 2
    values: list[bytes | None] = []
    for _ in range(count):
        if len(data) < pos + 4:
            raise ProtocolViolation("malformed DataRow")
        (length,) = _INT32.unpack_from(data, pos)
        pos += 4
        if length == -1:
            values.append(None)
            continue
        if length < 0 or len(data) < pos + length:
            raise ProtocolViolation("malformed DataRow")
        values.append(data[pos:pos + length])
        pos += length
    return values


def build_data_row(values: list[bytes | None]) -> bytes:
    """A DataRow with these values (None for NULL)."""
    body = bytearray(len(values).to_bytes(2, "big"))
    for value in values:
        if value is None:
            body += b"\xff\xff\xff\xff"
        else:
            body += len(value).to_bytes(4, "big") + value
    return message(b"D", bytes(body))


def command_rows(tag: str) -> int | None:
    """The row count a CommandComplete tag reports (`SELECT 3`, `INSERT 0 5`, `COPY 7`)."""
    last = tag.rpartition(" ")[2]
    return int(last) if last.isdigit() else None


def error_fields(payload: bytes | memoryview) -> list[tuple[str, str]]:
    """ErrorResponse and NoticeResponse: their (field code, value) pairs, in order."""
    data = bytes(payload)
    fields = []
    pos = 0
    while pos < len(data) and data[pos] != 0:
        code = chr(data[pos])
        end = data.find(b"\x00", pos + 1)
        if end < 0:
            raise ProtocolViolation("malformed ErrorResponse")
        fields.append((code, data[pos + 1:end].decode("utf-8", "replace")))
        pos = end + 1
    return fields


def build_error(fields: list[tuple[str, str]], tag: bytes = b"E") -> bytes:
    """An ErrorResponse (or, with tag N, a NoticeResponse) with these fields."""
    body = b"".join(code.encode() + value.replace("\x00", "").encode() + b"\x00"
                    for code, value in fields) + b"\x00"
    return message(tag, body)


def bastion_error(text: str, *, code: str = "42501", fatal: bool = False,
                  severity: str = "ERROR") -> bytes:
    """An ErrorResponse from the bastion itself (a NoticeResponse with severity NOTICE)."""
    severity = "FATAL" if fatal else severity
    return build_error([("S", severity), ("V", severity), ("C", code), ("M", text)],
                       b"N" if severity == "NOTICE" else b"E")


def authentication_ok() -> bytes:
    """AuthenticationOk."""
    return message(b"R", _INT32.pack(0))


def backend_key(pid: int, key: bytes) -> bytes:
    """BackendKeyData."""
    return message(b"K", _INT32.pack(pid) + key)


def ready_for_query(status: bytes) -> bytes:
    """ReadyForQuery with the transaction status (I, T or E)."""
    return message(b"Z", status)


def negotiate_version(minor: int, unsupported: list[str]) -> bytes:
    """NegotiateProtocolVersion: the newest minor version the bastion speaks, and the options
    (`_pq_.*`) it does not know."""
    body = _INT32.pack(minor) + _INT32.pack(len(unsupported)) + b"".join(
        name.encode() + b"\x00" for name in unsupported)
    return message(b"v", body)
