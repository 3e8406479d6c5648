"""Logging the grant's account in to PostgreSQL for a relayed client.

The client authenticated with its SSH certificate; upstream, the bastion logs in as the grant's
own account (bastion.db) with its password, by whichever method the server asks for: trust,
SCRAM-SHA-256 (RFC 5802/7677, without channel binding), md5 or a clear-text password. What the
server says once logged in — its ParameterStatus messages and its BackendKeyData — is kept for
the client, which sees the server's own settings and a cancel key of the bastion's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from bastion.wire.pg_protocol import (
    ProtocolViolation,
    error_fields,
    message,
    split_messages,
    startup_packet,
)

__all__ = ["LoginRefused", "ScramClient", "Upstream", "log_in"]

LOGIN_TIMEOUT = 15.0


class LoginRefused(Exception):
    """The server refused the grant's account; the message is the server's (or the bastion's)."""


@dataclass
class Upstream:
    """A logged-in server connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int = 0
    key: bytes = b""
    parameters: list[bytes] = field(default_factory=list)  # ParameterStatus messages, whole
    notices: list[bytes] = field(default_factory=list)  # NoticeResponse messages at login


class ScramClient:
    """The client side of SCRAM-SHA-256 without channel binding."""

    def __init__(self, password: str, nonce: str | None = None) -> None:
        self.password = password
        self.nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self._signature = b""

    def first(self) -> bytes:
        """client-first-message."""
        return ("n,," + self.first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        """client-final-message, given server-first-message."""
        attrs = dict(part.split("=", 1) for part in server_first.decode().split(",") if "=" in part)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self.nonce) or not salt or not iterations.isdigit():
            raise LoginRefused("the server's SCRAM challenge is malformed")
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), base64.b64decode(salt),
                                     int(iterations))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(stored, auth, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self._signature = hmac.new(server_key, auth, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        """Check the server's signature (it proves the server knew the password too)."""
        attrs = dict(part.split("=", 1) for part in server_final.decode().split(",") if "=" in part)
        if not hmac.compare_digest(base64.b64decode(attrs.get("v", "")), self._signature):
            raise LoginRefused("the server's SCRAM signature does not match")


def _md5(password: str, user: str, salt: bytes) -> bytes:
    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()  # noqa: S324 (the protocol's)
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()  # noqa: S324


async def log_in(host: str, port: int, user: str, password: str, database: str,
                 params: dict[str, str]) -> Upstream:
    """Connect and log in; raise LoginRefused (or OSError) saying why not."""
    reader, writer = await asyncio.open_connection(host, port)
    upstream = Upstream(reader, writer)
    try:
        async with asyncio.timeout(LOGIN_TIMEOUT):
            await _log_in(upstream, user, password, {**params, "user": user, "database": database})
    except BaseException:
        writer.close()
        raise
    return upstream


async def _log_in(up: Upstream, user: str, password: str, params: dict[str, str]) -> None:
    up.writer.write(startup_packet(params))
    scram: ScramClient | None = None
    buf = bytearray()
    while True:
        data = await up.reader.read(65536)
        if not data:
            raise LoginRefused("the server closed the connection during login")
        buf += data
        used = 0
        for tag, start, end in split_messages(buf, limit=1 << 20):
            used = end
            payload = bytes(buf[start:end])
            if tag == ord("E"):
                fields = dict(error_fields(payload))
                raise LoginRefused(fields.get("M", "login failed"))
            if tag == ord("R"):
                scram = _authenticate(up, payload, user, password, scram)
            elif tag == ord("S"):
                up.parameters.append(bytes(buf[start - 5:end]))
            elif tag == ord("N"):
                up.notices.append(bytes(buf[start - 5:end]))
            elif tag == ord("K"):
                if len(payload) < 8:
                    raise ProtocolViolation("malformed BackendKeyData from the server")
                up.pid = int.from_bytes(payload[:4], "big")
                up.key = payload[4:]
            elif tag == ord("Z"):
                return
            elif tag != ord("v"):  # NegotiateProtocolVersion: the bastion asked for 3.0 only
                raise LoginRefused(f"unexpected message {chr(tag)!r} from the server at login")
        del buf[:used]
        await up.writer.drain()


def _authenticate(up: Upstream, payload: bytes, user: str, password: str,
                  scram: ScramClient | None) -> ScramClient | None:
    if len(payload) < 4:
        raise ProtocolViolation("malformed authentication request from the server")
    method = int.from_bytes(payload[:4], "big")
    if method == 0:  # AuthenticationOk
        return scram
    if method == 3:  # clear text
        up.writer.write(message(b"p", password.encode() + b"\x00"))
    elif method == 5:  # md5
        up.writer.write(message(b"p", _md5(password, user, payload[4:8]) + b"\x00"))
    elif method == 10:  # SASL: the server lists its mechanisms
        mechanisms = payload[4:].split(b"\x00")
        if b"SCRAM-SHA-256" not in mechanisms:
            raise LoginRefused("the server offers no SASL mechanism the bastion speaks "
                               "(SCRAM-SHA-256)")
        scram = ScramClient(password)
        first = scram.first()
        up.writer.write(message(b"p", b"SCRAM-SHA-256\x00" + len(first).to_bytes(4, "big")
                                + first))
    elif method == 11 and scram is not None:  # SASLContinue
        up.writer.write(message(b"p", scram.final(payload[4:])))
    elif method == 12 and scram is not None:  # SASLFinal
        scram.verify(payload[4:])
    else:
        raise LoginRefused(f"the server asks for an authentication method the bastion does not "
                           f"speak ({method})")
    return scram
