"""The MySQL/MariaDB relay: the mysql and mariadb clients, PyMySQL and mysql-connector through
`ssh -L`.

The bastion greets the client with the server's own version and settings, minus what it does
not relay (TLS and compression: the SSH channel is both; LOAD DATA LOCAL; the protocol
extensions that change packet layouts). The certificate is the authentication: the client's
user name and password are ignored. Upstream, the bastion logs in as the grant's account
(bastion.wire.mysql_login) with the capabilities the client asked for, so that the server's
packets reach the client as they came.

Then the relay reads each command: statement texts (COM_QUERY, COM_STMT_PREPARE) pass the gate
(bastion.wire.gate) and the server runs the text the bastion checked, lookup hashes named
first; a refused statement never reaches the server and the client gets the bastion's reason
as an error, on a connection that stays usable. Only the grant's database may be used, the
account cannot be changed, and administrative commands are refused. The relay follows each
response to its end, to log every statement with its status, its row count and its first rows.

When the session is ended by the bastion (revoke, `kill`, window end), the client gets an
error saying why and the running statement is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion.sql.scrub import scrub_message
from bastion.wire.gate import Checked
from bastion.wire.mysql_login import LoginRefused, Upstream, connect, kill_query, log_in
from bastion.wire.mysql_protocol import (
    CONNECT_ATTRS,
    DEPRECATE_EOF,
    LONG_PASSWORD,
    MAX_PACKET,
    NATIVE,
    PLUGIN_AUTH,
    SAFE_COLLATIONS,
    STRIPPED,
    Column,
    Framer,
    Handshake,
    Packet,
    ProtocolViolation,
    build_err,
    build_handshake,
    build_ok,
    encode_attributes,
    packet_count,
    packets,
    parse_response,
    reseq,
)
from bastion.wire.mysql_results import Answer, Prepared
from bastion.wire.scrubbing import Scrubber, computed_scrubber
from bastion.wire.session import SessionRefused, Statement
from recorder import RecordingError

if TYPE_CHECKING:
    from bastion.wire.session import ClientReader, ClientWriter, WireContext

__all__ = ["relay_mysql"]

START_TIMEOUT = 30.0  # seconds a client has to answer the greeting
MAX_CLIENT_PAYLOAD = 64 << 20  # a command's payload, continuations joined
READ_SIZE = 256 << 10
KILL_TIMEOUT = 1.5

COM_QUIT, COM_INIT_DB, COM_QUERY, COM_FIELD_LIST = 0x01, 0x02, 0x03, 0x04
COM_STATISTICS, COM_PING, COM_CHANGE_USER = 0x09, 0x0E, 0x11
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA = 0x16, 0x17, 0x18
COM_STMT_CLOSE, COM_STMT_RESET, COM_SET_OPTION, COM_STMT_FETCH = 0x19, 0x1A, 0x1B, 0x1C
COM_RESET_CONNECTION = 0x1F
# Commands whose answer is one packet (OK, ERR, or COM_STATISTICS's text).
ONE_PACKET = frozenset({COM_PING, COM_STATISTICS, COM_SET_OPTION, COM_STMT_RESET,
                        COM_RESET_CONNECTION, COM_INIT_DB})
NO_REPLY = frozenset({COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA})

ER_DBACCESS_DENIED, ER_ACCESS_DENIED, ER_TABLEACCESS_DENIED = 1044, 1045, 1142
ER_HANDSHAKE, ER_UNKNOWN_COM, ER_EMPTY_QUERY, ER_CONNECTION_KILLED = 1043, 1047, 1065, 1927
ER_MALFORMED_PACKET = 1835


class _UpstreamLost(Exception):
    """The server went away or answered with something that is not the protocol."""


class _Flag:
    """An asyncio.Event for a single waiter, bound to the loop it was made on: asyncio.Event
    asks for the running loop on every wait, and on Python 3.11 that is a getpid() system call,
    here once per client packet."""

    __slots__ = ("_is_set", "_loop", "_waiter")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._is_set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._is_set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> None:
        if self._is_set:
            return
        if self._waiter is not None:
            raise RuntimeError("a _Flag has one waiter at a time")
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None



async def relay_mysql(ctx: WireContext, reader: ClientReader, writer: ClientWriter) -> str:
    """Relay one client connection; return why it ended."""
    relay = _Relay(ctx, reader, writer)
    try:
        return await relay.run()
    finally:
        relay.close()


class _Relay:
    def __init__(self, ctx: WireContext, reader: ClientReader, writer: ClientWriter) -> None:
        self.ctx = ctx
        self.reader = reader
        self.writer = writer
        self.up: Upstream | None = None
        self.client = Framer(MAX_CLIENT_PAYLOAD)
        self.client_eof = False
        self.arrived = _Flag()  # the pump fed the framer (or saw the end); serve waits on it
        self.room = _Flag()  # serve took a packet; the pump waits on it when the framer is full
        self.caps = 0
        self.statements: dict[int, Prepared] = {}
        self.busy = False
        self.reply_seq = 0  # the sequence id of the bastion's next packet to the client
        self.delta = 0  # added to the server's sequence ids (a command re-framed in fewer packets)
        self._pump: asyncio.Task[None] | None = None

    def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self.up is not None:
            self.up.close()

    # start-up -----------------------------------------------------------------------------

    async def run(self) -> str:
        try:
            await self.ctx.open()
        except SessionRefused as exc:
            return await self._fail(ER_ACCESS_DENIED, "28000", f"bastion: {exc}", str(exc))
        target = self.ctx.target
        try:
            self.up = await connect(target.host, target.port)
        except (LoginRefused, ProtocolViolation, OSError, TimeoutError) as exc:
            detail = scrub_message(str(exc) or type(exc).__name__, ())
            return await self._fail(ER_ACCESS_DENIED, "08S01",
                                    f"bastion: cannot open {target.name}: {detail}",
                                    f"cannot open {target.name}")
        self._pump = asyncio.create_task(self._read_client())
        try:
            async with asyncio.timeout(START_TIMEOUT):
                outcome = await self._startup(self.up.handshake)
        except TimeoutError:
            return await self._violation(f"no handshake response within {START_TIMEOUT:.0f} s")
        except ProtocolViolation as exc:
            return await self._violation(str(exc))
        if outcome is not None:
            return outcome
        return await self._relay()

    async def _startup(self, server: Handshake) -> str | None:
        """Greet the client, read its answer, log in upstream; None when the relay may start."""
        assert self.up is not None
        salt = bytes(33 + secrets.randbelow(94) for _ in range(20))
        offered = (server.capabilities & ~STRIPPED) | LONG_PASSWORD | PLUGIN_AUTH
        self.writer.write(packets(build_handshake(Handshake(
            server.version, server.connection_id, salt, offered, server.charset, server.status,
            NATIVE)), 0))
        pkt = await self._client_packet()
        if pkt is None:
            return "the client closed the connection during the handshake"
        if pkt.seq != 1:
            raise ProtocolViolation(f"handshake response with sequence id {pkt.seq}")
        self.reply_seq = pkt.last + 1
        hello = parse_response(pkt.payload)
        if hello.ssl_only:
            return await self._fail(ER_HANDSHAKE, "08S01", "bastion: the SSH channel is the "
                                    "encryption; connect without TLS (--ssl-mode=DISABLED / "
                                    "--skip-ssl)", "the client asked for TLS")
        if hello.plugin not in ("", NATIVE) and hello.capabilities & PLUGIN_AUTH:
            # caching_sha2_password and the rest: switch to mysql_native_password, whose
            # answer is ignored like the first (the certificate is the authentication).
            self._reply(b"\xfe" + NATIVE.encode() + b"\x00" + salt + b"\x00")
            answer = await self._client_packet()
            if answer is None:
                return "the client closed the connection during the handshake"
            if answer.seq != self.reply_seq:
                raise ProtocolViolation(f"auth switch response with sequence id {answer.seq}")
            self.reply_seq = answer.last + 1
        program = hello.attributes.get("program_name") or hello.attributes.get("_client_name")
        allowed = self._databases()
        if hello.database is not None and hello.database not in allowed:
            await self.ctx.started(program, hello.database)
            return await self._fail(ER_DBACCESS_DENIED, "42000", self._only_database(),
                                    f"the client asked for database {hello.database}")
        self.caps = hello.capabilities & offered & ~LONG_PASSWORD
        grant = self.ctx.grant
        attributes = b""
        if self.caps & CONNECT_ATTRS:
            attributes = encode_attributes({**hello.attributes,
                                            "bastion_session": self.ctx.live.record.id})
        try:
            await log_in(self.up, grant.account, grant.password.reveal(), grant.database,
                         caps=self.caps, max_packet=hello.max_packet or 1 << 24,
                         charset=self._charset(hello.charset, server.charset),
                         attributes=attributes)
        except (LoginRefused, ProtocolViolation, OSError, TimeoutError) as exc:
            target = self.ctx.target.name
            detail = scrub_message(str(exc) or type(exc).__name__, ())
            return await self._fail(ER_ACCESS_DENIED, "28000",
                                    f"bastion: cannot open {target}: {detail}",
                                    f"cannot open {target}")
        self._reply(build_ok(server.status or 0x0002))
        await self.writer.drain()
        await self.ctx.started(program, hello.database or grant.database)
        return None

    @staticmethod
    def _charset(asked: int, server: int) -> int:
        """The client's character set if the bastion reads statements in it; else utf8mb4."""
        if asked in SAFE_COLLATIONS:
            return asked
        return server if server in SAFE_COLLATIONS else 45

    def _databases(self) -> set[str]:
        return {name for name in (self.ctx.grant.database, self.ctx.target.database) if name}

    def _only_database(self) -> str:
        name = self.ctx.target.database or self.ctx.grant.database
        return f"bastion: this session may use database {name} only"

    # the client's bytes -----------------------------------------------------------------------

    async def _read_client(self) -> None:
        """Read the client's bytes into the framer (bounded), until end of input."""
        try:
            while True:
                while len(self.client.buf) > MAX_CLIENT_PAYLOAD + MAX_PACKET:
                    self.room.clear()
                    await self.room.wait()
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                self.ctx.live.touch()
                self.client.feed(data)
                self.arrived.set()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: S110 - a broken channel is the same as its end
            pass
        self.client_eof = True
        self.arrived.set()

    async def _client_packet(self) -> Packet | None:
        """The client's next packet; None at end of input."""
        while True:
            pkt = self.client.next()
            if pkt is not None:
                self.room.set()
                return pkt
            if self.client_eof:
                if self.client.buf:
                    raise ProtocolViolation("the client closed the connection mid-packet")
                return None
            self.arrived.clear()
            await self.arrived.wait()

    def _reply(self, payload: bytes) -> None:
        """Send the client a packet of the bastion's own, next in sequence."""
        self.writer.write(packets(payload, self.reply_seq))
        self.reply_seq += packet_count(len(payload))

    async def _fail(self, code: int, state: str, message: str, reason: str) -> str:
        """Tell the client why the connection ends; return the reason."""
        self._reply(build_err(code, state, message))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.writer.drain()
        return reason

    async def _violation(self, reason: str) -> str:
        with contextlib.suppress(Exception):
            self._reply(build_err(ER_MALFORMED_PACKET, "08S01", f"bastion: protocol error: {reason}"))
            async with asyncio.timeout(2):
                await self.writer.drain()
        await self.ctx.protocol_error(reason)
        return f"protocol error: {reason}"

    # the relay --------------------------------------------------------------------------------

    async def _relay(self) -> str:
        assert self._pump is not None
        serve = asyncio.create_task(self._serve())
        stopped = asyncio.create_task(self.ctx.live.stop.wait())
        waiting: set[asyncio.Task[Any]] = {serve, stopped, self._pump}
        try:
            while True:
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if stopped in done:
                    return await self._ended()
                if serve in done:
                    break
                waiting.discard(self._pump)
                if self.busy:  # the client left while the server works for it
                    await self._kill()
                    return "the client closed the connection"
            exc = serve.exception()
            if isinstance(exc, ProtocolViolation):
                return await self._violation(str(exc))
            if isinstance(exc, (_UpstreamLost, OSError)):
                detail = str(exc) or type(exc).__name__
                return await self._fail(2013, "HY000", f"bastion: lost the connection to "
                                        f"{self.ctx.target.name}: {detail}", f"upstream: {detail}")
            if isinstance(exc, RecordingError):  # no recording, no session
                if self.busy:
                    await self._kill()
                return await self._fail(ER_CONNECTION_KILLED, "70100", "bastion: the session's "
                                        "recording failed, so the session ends",
                                        f"recording failed: {exc}")
            if exc is not None:
                raise exc
            return serve.result()
        finally:
            for task in (serve, stopped):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(serve, stopped, return_exceptions=True)

    async def _ended(self) -> str:
        """The bastion ended the session: tell the client, kill what runs, hang up."""
        reason = self.ctx.live.end_reason or "ended by the bastion"
        with contextlib.suppress(Exception):
            self.writer.write(packets(build_err(ER_CONNECTION_KILLED, "70100",
                                                f"bastion: {reason}"),
                                      self.reply_seq if self.busy else 1))
            async with asyncio.timeout(0.5):
                await self.writer.drain()
        if self.busy:
            await self._kill()
        elif self.up is not None:
            with contextlib.suppress(Exception):
                self.up.writer.write(packets(bytes((COM_QUIT,)), 0))
        return reason

    async def _kill(self) -> None:
        """Kill the statement the server is running for this session (best effort)."""
        if self.up is None:
            return
        grant, target = self.ctx.grant, self.ctx.target
        with contextlib.suppress(Exception):  # the account may be disabled already (revoke)
            async with asyncio.timeout(KILL_TIMEOUT):
                await kill_query(target.host, target.port, grant.account,
                                 grant.password.reveal(), grant.database,
                                 self.up.handshake.connection_id)
        self.up.close()

    async def _serve(self) -> str:
        assert self.up is not None
        while True:
            pkt = await self._client_packet()
            if pkt is None:
                with contextlib.suppress(Exception):
                    self.up.writer.write(packets(bytes((COM_QUIT,)), 0))
                return "the client closed the connection"
            if pkt.seq != 0:
                raise ProtocolViolation(f"a command with sequence id {pkt.seq}")
            if not pkt.payload:
                raise ProtocolViolation("an empty command")
            self.reply_seq = pkt.last + 1
            if await self._command(pkt):
                return "the client ended the session"

    async def _command(self, pkt: Packet) -> bool:
        """Handle one command; True for COM_QUIT."""
        assert self.up is not None
        command, body = pkt.payload[0], pkt.payload[1:]
        if command == COM_QUIT:
            self.up.writer.write(pkt.raw)
            await self.up.writer.drain()
            return True
        if command == COM_QUERY:
            await self._query(pkt, body)
        elif command == COM_STMT_PREPARE:
            await self._prepare(pkt, body)
        elif command == COM_INIT_DB:
            name = body.decode("utf-8", "replace")
            if name not in self._databases():
                await self._refuse(ER_DBACCESS_DENIED, self._only_database())
            else:
                await self._forward(pkt, self._answer("single"), bytes((COM_INIT_DB,))
                                    + self.ctx.grant.database.encode())
        elif command in (COM_STMT_EXECUTE, COM_STMT_FETCH):
            stmt_id = int.from_bytes(body[:4], "little") if len(body) >= 4 else -1
            prepared = self.statements.get(stmt_id)
            if prepared is None:
                prepared = Prepared(Checked("(unknown prepared statement)", "other", ""))
            await self._forward(pkt, self._answer(
                "execute" if command == COM_STMT_EXECUTE else "fetch", prepared=prepared))
        elif command in NO_REPLY:
            if command == COM_STMT_CLOSE and len(body) >= 4:
                self.statements.pop(int.from_bytes(body[:4], "little"), None)
            self.up.writer.write(pkt.raw)
            await self.up.writer.drain()
        elif command == COM_FIELD_LIST:
            await self._forward(pkt, self._answer("fields"))
        elif command in ONE_PACKET:
            if command == COM_RESET_CONNECTION:
                self.statements.clear()
            await self._forward(pkt, self._answer("single"))
        elif command == COM_CHANGE_USER:
            await self._refuse(ER_ACCESS_DENIED, "bastion: COM_CHANGE_USER is not allowed; the "
                               "session's account is fixed", "28000")
        else:
            await self._refuse(ER_UNKNOWN_COM, f"bastion: command 0x{command:02x} is not "
                               "available through the bastion", "08S01")
        return False

    def _answer(self, kind: str, *, statements: list[Checked] | None = None,
                prepared: Prepared | None = None) -> Answer:
        return Answer(kind, bool(self.caps & DEPRECATE_EOF), statements or [], prepared,
                      plan=self._scrub_plan, max_rows=self.ctx.target.max_rows)

    def _scrub_plan(self, kind: str, names: Callable[[], frozenset[str]], columns: list[Column]
                    ) -> list[tuple[int, Scrubber]]:
        """Computed columns of server text and of masked grants are scrubbed (bastion.wire.
        scrubbing); what was read from a table or a masked view passes as it is."""
        scrub = computed_scrubber(kind, names, self.ctx.grant.lookups is not None)
        if scrub is None:
            return []
        return [(i, scrub) for i, column in enumerate(columns) if not column.org_table]

    async def _refuse(self, code: int, message: str, state: str = "42000") -> None:
        self._reply(build_err(code, state, message))
        await self.writer.drain()

    def _text(self, body: bytes) -> str:
        return body.decode("utf-8", "surrogateescape")

    def _encode(self, text: str) -> bytes | None:
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return None

    async def _query(self, pkt: Packet, body: bytes) -> None:
        gate = self.ctx.gate
        checked = [await gate.check(s) for s in gate.split(self._text(body))]
        if not checked:
            await self._refuse(ER_EMPTY_QUERY, "Query was empty")
            return
        if await self._refused(checked):
            return
        text = self._encode(";\n".join(c.text for c in checked))
        if text is None:
            await self._refused([Checked(checked[0].redacted, checked[0].kind, "",
                                         "the statement's bytes are not valid text")])
            return
        if any(c.hashes for c in checked) and not await self._name_lookups():
            return
        await self._forward(pkt, self._answer("query", statements=checked), bytes((COM_QUERY,)) + text)

    async def _prepare(self, pkt: Packet, body: bytes) -> None:
        gate = self.ctx.gate
        parts = gate.split(self._text(body))
        if len(parts) != 1:
            checked = Checked(self._text(body)[:60], "other", "",
                              "a prepared statement must be exactly one statement")
        else:
            checked = await gate.check(parts[0])
        if await self._refused([checked]):
            return
        text = self._encode(checked.text)
        if text is None:
            await self._refused([Checked(checked.redacted, checked.kind, "",
                                         "the statement's bytes are not valid text")])
            return
        if checked.hashes and not await self._name_lookups():
            return
        await self._forward(pkt, self._answer("prepare", prepared=Prepared(checked)),
                            bytes((COM_STMT_PREPARE,)) + text)

    async def _refused(self, checked: list[Checked]) -> bool:
        """If the gate refused any of the statements: log it, answer the client, True."""
        refused = next((c for c in checked if c.refused), None)
        if refused is None:
            return False
        await self.ctx.log(Statement(refused.redacted, refused.kind, refused=refused.refused))
        await self._refuse(ER_TABLEACCESS_DENIED, f"bastion: refused: {refused.refused}")
        return True

    async def _name_lookups(self) -> bool:
        """Tell the server the lookup hashes before a statement that uses them."""
        assert self.up is not None
        op = self._answer("own")
        self.up.writer.write(packets(b"\x03" + self.ctx.gate.naming().encode(), 0))
        await self._follow(op, forward=False)
        if op.error is not None:
            await self._refuse(ER_ACCESS_DENIED, f"bastion: cannot use masked-column lookups: "
                               f"{op.error}", "HY000")
            return False
        return True

    async def _forward(self, pkt: Packet, op: Answer, payload: bytes | None = None) -> None:
        """Send the command (as the client framed it, or re-framed) and relay its answer."""
        assert self.up is not None
        if payload is None:
            self.up.writer.write(pkt.raw)
            self.delta = 0
        else:
            self.up.writer.write(packets(payload, 0))
            self.delta = pkt.last - (packet_count(len(payload)) - 1)
        await self.up.writer.drain()
        await self._follow(op, forward=True)

    # the server's answer ------------------------------------------------------------------------

    async def _follow(self, op: Answer, *, forward: bool) -> None:
        """Read the server's answer to the end, passing it to the client in large writes."""
        assert self.up is not None
        up = self.up
        self.busy = True
        dropped = 0  # rows held back by max_rows in this answer
        try:
            done = False
            while not done:
                out: list[bytes] = []
                while not done and (pkt := up.framer.next()) is not None:
                    done = op.follow(pkt.payload)
                    for statement in op.take():
                        await self.ctx.log(statement)
                    if op.dropped:  # max_rows: this row is not sent; later packets move up
                        op.dropped = False
                        dropped += 1
                        continue
                    if op.replacement is not None and len(pkt.payload) < MAX_PACKET:
                        out.append(packets(op.replacement, pkt.seq - dropped))
                    elif dropped and len(pkt.payload) < MAX_PACKET:
                        out.append(packets(pkt.payload, pkt.seq - dropped))
                    else:
                        out.append(pkt.raw)
                    op.replacement = None
                    if forward:
                        self.reply_seq = pkt.last - dropped + self.delta + 1
                if out and forward:
                    data = b"".join(out)
                    self.writer.write(reseq(data, self.delta) if self.delta else data)
                    await self.writer.drain()
                if done:
                    break
                data = await up.reader.read(READ_SIZE)
                if not data:
                    raise _UpstreamLost("the server closed the connection")
                up.framer.feed(data)
        except ProtocolViolation as exc:
            raise _UpstreamLost(f"the server sent {exc}") from None
        finally:
            self.busy = False
        if op.kind == "prepare" and op.statement_id is not None and op.prepared is not None:
            self.statements[op.statement_id] = op.prepared
