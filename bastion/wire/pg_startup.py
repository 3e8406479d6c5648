"""A PostgreSQL client's start-up through the bastion: what it may ask for, and what it is told.

SSLRequest and GSSENCRequest are answered `N` (the SSH channel is the encryption), each at most
once; a CancelRequest ends the start-up (it names another session); a StartupMessage's parameters
are checked: a short list is passed to the server, `client_encoding` must be UTF-8 (the bastion
reads statements as UTF-8), `options` and `replication` are refused with a message, and `_pq_.*`
protocol options are reported unsupported in a NegotiateProtocolVersion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.wire.pg_protocol import (
    CANCEL_REQUEST,
    GSSENC_REQUEST,
    MAX_STARTUP,
    SSL_REQUEST,
    ProtocolViolation,
    Startup,
    authentication_ok,
    backend_key,
    negotiate_version,
    parse_startup,
    ready_for_query,
)

if TYPE_CHECKING:
    from bastion.wire.session import ClientReader, ClientWriter

__all__ = ["StartupReader", "greeting", "startup_parameters", "unsafe_parameter"]

# Start-up parameters passed to the server; any other is refused with a message.
PASSED_PARAMETERS = frozenset({
    "application_name", "datestyle", "timezone", "extra_float_digits", "intervalstyle",
    "search_path", "bytea_output", "lc_monetary", "lc_numeric", "lc_time", "geqo",
})
CLIENT_ENCODINGS = frozenset({"utf8", "unicode", "sqlascii"})


class StartupReader:
    """Reads a client's start-up packets; `buffer` keeps what came after them."""

    def __init__(self, reader: ClientReader, writer: ClientWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()

    async def read(self) -> Startup | tuple[int, bytes]:
        """The StartupMessage, or a CancelRequest's (pid, key)."""
        asked: set[int] = set()
        while True:
            length = int.from_bytes(await self._exactly(4), "big")
            if not 8 <= length <= MAX_STARTUP:
                raise ProtocolViolation(f"start-up packet of impossible length {length}")
            code, body = parse_startup(await self._exactly(length - 4))
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                if code in asked:
                    raise ProtocolViolation("SSLRequest or GSSENCRequest sent twice")
                asked.add(code)
                self.writer.write(b"N")  # the SSH channel is the encryption
                continue
            if code == CANCEL_REQUEST:
                assert isinstance(body, tuple)
                return body
            assert isinstance(body, Startup)
            return body

    async def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = await self.reader.read(65536)
            if not data:
                raise ProtocolViolation("the client closed the connection during start-up")
            self.buffer += data
        head = bytes(self.buffer[:n])
        del self.buffer[:n]
        return head


def startup_parameters(startup: Startup) -> tuple[str | None, dict[str, str], list[str]]:
    """(why the start-up is refused, the parameters to pass on, the `_pq_` options not known)."""
    passed: dict[str, str] = {}
    unsupported: list[str] = []
    for name, value in startup.params.items():
        low = name.lower()
        if low in ("user", "database"):
            continue
        if low.startswith("_pq_."):
            unsupported.append(name)
        elif low == "replication":
            if value.lower() not in ("false", "off", "no", "0"):
                return "replication connections are not available through the bastion", {}, []
        elif low == "client_encoding":
            normal = value.strip("'\" ").lower().replace("_", "").replace("-", "")
            if normal not in CLIENT_ENCODINGS:
                return (f"client_encoding {value} is not supported: the bastion reads "
                        "statements as UTF-8 (set client_encoding=UTF8)"), {}, []
            passed[name] = value
        elif low == "options":
            if value.strip():
                return ("start-up options (PGOPTIONS, options=) are not passed through the "
                        "bastion; use SET after connecting"), {}, []
        elif low in PASSED_PARAMETERS:
            passed[name] = value
        else:
            return f"the start-up parameter {name} is not passed through the bastion", {}, []
    return None, passed, unsupported


def unsafe_parameter(payload: bytes) -> str | None:
    """Why a ParameterStatus (its body) means the bastion no longer reads statements as the
    server does: standard_conforming_strings off, or a client encoding other than UTF-8. The
    gate refuses every way it knows to change them; this is the net under it."""
    name, _, rest = payload.partition(b"\x00")
    value = rest.split(b"\x00", 1)[0].decode("utf-8", "replace")
    if name == b"standard_conforming_strings" and value.lower() != "on":
        return ("the server's standard_conforming_strings is off: the bastion reads statements "
                "with it on, so the session ends")
    if name == b"client_encoding" and \
            value.lower().replace("_", "").replace("-", "") not in CLIENT_ENCODINGS:
        return (f"the server's client_encoding is {value}: the bastion reads statements as "
                "UTF-8, so the session ends")
    return None


def greeting(startup: Startup, unsupported: list[str], parameters: list[bytes],
             key: tuple[int, bytes]) -> bytes:
    """What the client gets once the server accepted the grant's account: the protocol version
    (when it asked for more), AuthenticationOk, the server's own settings, the bastion's cancel
    key and ReadyForQuery."""
    out = bytearray()
    if startup.minor > 0 or unsupported:
        out += negotiate_version(0, unsupported)
    out += authentication_ok()
    for parameter in parameters:
        out += parameter
    return bytes(out + backend_key(*key) + ready_for_query(b"I"))
