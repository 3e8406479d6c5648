"""The PostgreSQL relay: psql, pgbench, JDBC, psycopg and asyncpg through `ssh -L`.

The client's start-up is answered by the bastion (no TLS or GSS encryption: the SSH channel is
the encryption; the certificate is the authentication, so no password is asked for and any is
ignored); upstream, the bastion logs in as the grant's account (bastion.wire.pg_login) and hands
the client the server's own settings, with a cancel key of its own.

Then messages flow both ways, and the relay reads each one:
- from the client, every statement text (Query, Parse) passes the gate (bastion.wire.gate):
  the server gets the text the bastion checked, with lookups rewritten, and the hashes named
  first. A refused statement is replaced by one the server rejects as a syntax error, and its
  error is replaced by the bastion's reason on the way back: the server's transaction state stays
  what the client expects of any error, and the connection stays usable. FunctionCall is
  refused the same way; COPY to and from the client passes under the guardrails.
- from the server, bytes go to the client as they came, in large writes. The relay follows the
  responses to know which statement each belongs to (per message: Parse, Bind, Describe,
  Execute, Close and Sync each end in a known message, and after an error the server skips to
  Sync), so that every statement is logged with its status, its row count and its first rows;
  errors and notices are scrubbed of values as the console's are.

When the session is ended by the bastion (revoke, `kill`, window end, user removal), the
running query is cancelled and the client gets a FATAL error saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

from bastion.sql.scrub import scrub_message
from bastion.wire.gate import Checked
from bastion.wire.pg_login import LoginRefused, Upstream, log_in
from bastion.wire.pg_protocol import (
    ProtocolViolation,
    bastion_error,
    build_parse,
    build_query,
    cancel_packet,
    command_rows,
    cstring,
    data_rows,
    message,
    next_message,
    parse_bind,
    parse_execute,
    parse_parse,
    parse_row_description,
    parse_target,
    split_messages,
)
from bastion.wire.pg_results import (
    Column,
    Op,
    Prepared,
    copy_line,
    record_row,
    scrub_plan,
    scrubbed_message,
    scrubbed_row,
)
from bastion.wire.pg_startup import (
    StartupReader,
    greeting,
    startup_parameters,
    unsafe_parameter,
)
from bastion.wire.session import RECORDED_ROWS, SessionRefused, Statement

if TYPE_CHECKING:
    from bastion.wire.session import ClientReader, ClientWriter, WireContext

__all__ = ["relay_postgres"]

START_TIMEOUT = 30.0  # seconds a client has to send its start-up packet
MAX_CLIENT_MESSAGE = 64 << 20
READ_SIZE = 256 << 10
# What the server runs in place of a refused statement: a syntax error, nothing else.
REFUSED_TEXT = "bastion refused this statement"
LOOKUP_NAME = "bastion_lookups"  # the statement and portal that name lookup hashes mid-pipeline
_T, _D, _C, _E, _Z, _N = (ord(c) for c in "TDCEZN")


# Cancel keys the bastion handed out: (pid, key) → the relay whose query to cancel.
_CANCEL_KEYS: dict[tuple[int, bytes], _Relay] = {}


async def relay_postgres(ctx: WireContext, reader: ClientReader, writer: ClientWriter) -> str:
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
        self.ops: deque[Op] = deque()
        self.statements: dict[str, Prepared] = {}
        self.portals: dict[str, Prepared] = {}
        self.unsynced = False  # extended-protocol messages sent since the last Sync
        self.key = (0, b"")
        self.max_rows = ctx.target.max_rows
        self._client_buf = bytearray()

    # start-up ---------------------------------------------------------------------------

    async def run(self) -> str:
        opening = StartupReader(self.reader, self.writer)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                startup = await opening.read()
        except TimeoutError:
            return await self._violation("no start-up packet within "
                                         f"{START_TIMEOUT:.0f} seconds")
        except ProtocolViolation as exc:
            return await self._violation(str(exc))
        self._client_buf = opening.buffer
        if isinstance(startup, tuple):
            return await self._cancel_other(startup)
        try:
            await self.ctx.open()
        except SessionRefused as exc:
            return await self._fatal(f"bastion: {exc}", "28000")
        database = startup.params.get("database") or startup.params.get("user", "")
        if database != self.ctx.grant.database:
            return await self._fatal(
                f'bastion: this session may use database "{self.ctx.grant.database}" only '
                f"(connect with dbname={self.ctx.grant.database})", "3D000")
        refusal, params, unsupported = startup_parameters(startup)
        if refusal is not None:
            return await self._fatal(f"bastion: {refusal}", "08P01")
        target = self.ctx.target
        try:
            self.up = await log_in(target.host, target.port, self.ctx.grant.account,
                                   self.ctx.grant.password.reveal(), self.ctx.grant.database,
                                   params)
        except (LoginRefused, ProtocolViolation, OSError, TimeoutError) as exc:
            detail = scrub_message(str(exc) or type(exc).__name__, ())
            return await self._fatal(f"bastion: cannot open {target.name}: {detail}", "08006")
        unsafe = next((why for p in self.up.parameters if (why := unsafe_parameter(p[5:]))), None)
        if unsafe is not None:
            return await self._fatal(f"bastion: cannot open {target.name}: {unsafe}", "08006")
        key = (self.up.pid, secrets.token_bytes(4))
        self.key = key
        _CANCEL_KEYS[key] = self
        self.writer.write(greeting(startup, unsupported, self.up.parameters, key))
        await self.ctx.started(startup.params.get("application_name") or None, database)
        return await self._relay()

    async def _cancel_other(self, body: tuple[int, bytes]) -> str:
        """A CancelRequest on its own connection: cancel the query of the session it names, if
        it is one of the same user's. Never answered (as the server does)."""
        relay = _CANCEL_KEYS.get((body[0], body[1]))
        if relay is None or relay.ctx.live.record.user != self.ctx.live.record.user:
            await self.ctx.protocol_error("a CancelRequest with an unknown key")
            return "cancel request with an unknown key"
        await relay.cancel()
        return f"cancel request for session {relay.ctx.live.record.id}"

    async def cancel(self) -> None:
        """Cancel the query the server is running for this session."""
        if self.up is None:
            return
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(5):
                _, writer = await asyncio.open_connection(self.ctx.target.host,
                                                          self.ctx.target.port)
                writer.write(cancel_packet(self.up.pid, self.up.key))
                await writer.drain()
                writer.close()

    # the relay --------------------------------------------------------------------------

    async def _relay(self) -> str:
        client = asyncio.create_task(self._from_client())
        server = asyncio.create_task(self._from_server())
        stopped = asyncio.create_task(self.ctx.live.stop.wait())
        try:
            done, _ = await asyncio.wait({client, server, stopped},
                                         return_when=asyncio.FIRST_COMPLETED)
            if stopped in done:
                reason = self.ctx.live.end_reason or "ended by the bastion"
                if self.ops:
                    await self.cancel()
                self.writer.write(bastion_error(f"bastion: {reason}", code="57P01", fatal=True))
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await self.writer.drain()
                return reason
            pump = client if client in done else server
            exc = pump.exception()
            if isinstance(exc, ProtocolViolation):
                return await self._violation(str(exc))
            if exc is not None:
                raise exc
            return pump.result()
        finally:
            for task in (client, server, stopped):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(client, server, stopped, return_exceptions=True)

    async def _from_client(self) -> str:
        assert self.up is not None
        buf = self._client_buf
        while True:
            if len(buf) < 5 or len(buf) < 1 + int.from_bytes(buf[1:5], "big"):
                data = await self.reader.read(READ_SIZE)
                if not data:
                    if self.ops:
                        await self.cancel()
                    with contextlib.suppress(OSError):
                        self.up.writer.write(message(b"X"))
                    return "the client closed the connection"
                self.ctx.live.touch()
                buf += data
            out: list[bytes] = []
            used = 0
            for tag, start, end in split_messages(buf, limit=MAX_CLIENT_MESSAGE):
                used = end
                await self._client_message(tag, bytes(buf[start:end]), buf, start - 5, end, out)
                if tag == ord("X"):
                    self.up.writer.write(b"".join(out))
                    return "the client ended the session"
            del buf[:used]
            if out:
                self.up.writer.write(b"".join(out))
                await self.up.writer.drain()

    async def _client_message(self, tag: int, payload: bytes, buf: bytearray, begin: int,
                              end: int, out: list[bytes]) -> None:
        raw = bytes(buf[begin:end])
        kind = chr(tag)
        if kind == "Q":
            await self._query(payload, out)
        elif kind == "P":
            await self._parse(payload, out)
        elif kind == "B":
            portal, name, formats = parse_bind(payload)
            statement = self.statements.get(name, Prepared(None))
            restore = (self.portals, portal, self.portals.get(portal))
            self.portals[portal] = Prepared(statement.checked, statement.columns, formats)
            self._send(Op("B", names=frozenset((portal.lower(), name.lower())), restore=restore),
                       raw, out)
        elif kind == "D":
            target = parse_target(payload)
            self._send(Op("D", target=target, names=frozenset((target[1].lower(),))), raw, out)
        elif kind == "E":
            portal, _ = parse_execute(payload)
            self._send(Op("E", portal=self.portals.get(portal, Prepared(None)),
                           names=frozenset((portal.lower(),))), raw, out)
        elif kind == "C":
            what, name = parse_target(payload)
            (self.statements if what == "S" else self.portals).pop(name, None)
            self._send(Op("C", names=frozenset((name.lower(),))), raw, out)
        elif kind == "S":
            self._send(Op("S"), raw, out)
            self.unsynced = False
        elif kind == "H":
            out.append(raw)
        elif kind in "dcf":  # COPY data from the client (COPY … FROM STDIN passed the gate)
            out.append(raw)
        elif kind == "X":
            out.append(raw)
        elif kind == "F":
            refused = Checked("(function call)", "call", "", "the fast-path function call "
                              "(FunctionCall) is not available through the bastion; use SELECT")
            await self._refuse(refused, out, extended=False)
        else:
            raise ProtocolViolation(f"unknown message {kind!r} from the client")

    def _send(self, op: Op, raw: bytes, out: list[bytes]) -> None:
        if op.kind in "PBDEC":
            self.unsynced = True
        op.started = time.perf_counter()
        self.ops.append(op)
        out.append(raw)

    async def _query(self, payload: bytes, out: list[bytes]) -> None:
        text, _ = cstring(payload, 0)
        checked = [await self.ctx.gate.check(s) for s in self.ctx.gate.split(text)]
        refused = next((c for c in checked if c.refused), None)
        if refused is not None:
            await self._refuse(refused, out, extended=False)
            return
        if any(c.hashes for c in checked):
            self._name_lookups(out)
        op = Op("Q", statements=checked)
        self._send(op, build_query(";\n".join(c.text for c in checked)), out)

    async def _parse(self, payload: bytes, out: list[bytes]) -> None:
        name, text, types = parse_parse(payload)
        statements = self.ctx.gate.split(text)
        if len(statements) > 1:
            checked = Checked(text[:60], "other", "", "a prepared statement must be one "
                              "statement")
        else:
            checked = await self.ctx.gate.check(statements[0] if statements else "")
        if checked.refused:
            # The server keeps a named statement whose new Parse fails; an unnamed one is gone.
            if not name:
                self.statements.pop(name, None)
            await self._refuse(checked, out, extended=True, name=name)
            return
        if checked.hashes:
            self._name_lookups(out)
        restore = (self.statements, name, self.statements.get(name))
        self.statements[name] = Prepared(checked)
        self._send(Op("P", restore=restore), build_parse(name, checked.text, types), out)

    async def _refuse(self, checked: Checked, out: list[bytes], *, extended: bool,
                      name: str = "") -> None:
        """Send the server a statement it rejects, and put the bastion's reason in place of its
        error; log the refusal."""
        reason = f"bastion: refused: {checked.refused}"
        error = bastion_error(reason)
        await self.ctx.log(Statement(checked.redacted, checked.kind, refused=checked.refused))
        if extended:
            self._send(Op("P", refusal=error), build_parse(name, REFUSED_TEXT), out)
        else:
            self._send(Op("Q", refusal=error), build_query(REFUSED_TEXT), out)

    def _name_lookups(self, out: list[bytes]) -> None:
        """Tell the server every lookup hash named so far, before the statement that uses them."""
        naming = self.ctx.gate.naming()
        if not self.unsynced:
            self._send(Op("Q", swallow=True), build_query(naming), out)
            return
        # Inside a pipeline: the bastion's own statement and portal, answered to no one.
        for op, raw in (
            (Op("C", swallow=True), message(b"C", b"S" + LOOKUP_NAME.encode() + b"\x00")),
            (Op("P", swallow=True), build_parse(LOOKUP_NAME, naming)),
            (Op("B", swallow=True), message(b"B", (LOOKUP_NAME.encode() + b"\x00") * 2
                                             + b"\x00\x00\x00\x00\x00\x00")),
            (Op("E", swallow=True), message(b"E", LOOKUP_NAME.encode() + b"\x00\x00\x00\x00\x00")),
            (Op("C", swallow=True), message(b"C", b"P" + LOOKUP_NAME.encode() + b"\x00")),
        ):
            self._send(op, raw, out)

    # from the server --------------------------------------------------------------------

    async def _from_server(self) -> str:
        assert self.up is not None
        buf = bytearray()
        while True:
            data = await self.up.reader.read(READ_SIZE)
            if not data:
                return "the database closed the connection"
            buf += data
            pieces: list[bytes] = []
            keep = 0  # start of the bytes passed on as they are
            pos = 0
            while (found := next_message(buf, pos)) is not None:
                tag, start, end = found
                if tag == _D and (most := self._bulk_rows()):
                    # A result past its recorded rows, with nothing to scrub: its rows are
                    # counted and passed on as they are, without a look at each.
                    count, after = data_rows(buf, pos, most)
                    self._counter(self.ops[0]).sent += count
                    pos = after
                    continue
                pos = end
                if tag == _D:
                    op = self.ops[0] if self.ops else None
                    if op is not None and op.swallow:
                        pieces.append(bytes(buf[keep:start - 5]))
                        keep = end
                    elif op is not None and op.kind in "QE":
                        if op.current is None:
                            self._begin(op)
                        counter = self._counter(op)
                        counter.sent += 1
                        if self.max_rows is not None and counter.sent > self.max_rows:
                            op.statement().truncated = True  # max_rows: the rest is not sent
                            pieces.append(bytes(buf[keep:start - 5]))
                            keep = end
                            continue
                        if op.scrub:
                            row = scrubbed_row(op, memoryview(buf)[start:end])
                            if row is not None:
                                pieces.append(bytes(buf[keep:start - 5]))
                                pieces.append(row)
                                keep = end
                        if len(op.statement().recorded) < RECORDED_ROWS:
                            record_row(op, memoryview(buf)[start:end])
                    continue
                replacement = await self._server_message(tag, buf, start, end)
                if replacement is not None:
                    pieces.append(bytes(buf[keep:start - 5]))
                    pieces.append(replacement)
                    keep = end
            used = pos
            pieces.append(bytes(buf[keep:used]))
            del buf[:used]
            data_out = b"".join(pieces)
            if data_out:
                self.writer.write(data_out)
                await self.writer.drain()

    def _bulk_rows(self) -> int:
        """How many DataRows may pass without a look at each (0: every row is looked at)."""
        op = self.ops[0] if self.ops else None
        if (op is None or op.swallow or op.kind not in "QE" or op.scrub or op.current is None
                or len(op.current.recorded) < RECORDED_ROWS):
            return 0
        if self.max_rows is None:
            return 1 << 62
        return max(0, self.max_rows - self._counter(op).sent)

    async def _server_message(self, tag: int, buf: bytearray, start: int, end: int
                              ) -> bytes | None:
        """Follow one server message; return what the client gets instead (b"" for nothing),
        or None to pass it on as it is."""
        kind = chr(tag)
        if kind in "NSA":  # notices, parameter changes, notifications: any time
            if kind == "N":
                return scrubbed_message(memoryview(buf)[start:end], b"N", None)
            if kind == "S" and (why := unsafe_parameter(bytes(buf[start:end]))):
                raise ProtocolViolation(why)
            return None
        if not self.ops:
            if kind == "E":  # e.g. FATAL: the server ends an idle session (the grant was ended)
                return scrubbed_message(memoryview(buf)[start:end], b"E", None)
            raise ProtocolViolation(f"the server sent {kind!r} when nothing was asked")
        op = self.ops[0]
        if kind == "E":
            return await self._error(op, buf, start, end)
        if kind == "d" and op.kind in "QE" and not op.swallow:  # COPY … TO STDOUT: rows too
            counter = self._counter(op)
            counter.sent += 1
            if self.max_rows is not None and counter.sent > self.max_rows:
                op.statement().truncated = True
                return b""
        cut = self._cut(op, buf, start, end) if kind in "CIs" else None
        if op.kind == "Q":
            replacement = await self._query_response(op, kind, buf, start, end)
            return cut if cut is not None and replacement is None else replacement
        done = self._extended_done(op, kind, buf, start, end)
        if done:
            self.ops.popleft()
            if op.kind == "E":
                await self._finish_statement(op)
        return b"" if op.swallow else cut

    def _counter(self, op: Op) -> Op | Prepared:
        """Where a result's rows are counted: the portal for Execute (a client that pages with
        row limits gets max_rows over all its pages), the Query's current result otherwise."""
        return op.portal if op.kind == "E" and op.portal is not None else op

    def _cut(self, op: Op, buf: bytearray, start: int, end: int) -> bytes | None:
        """At a result's end (or page): when max_rows cut it, a notice saying so (once) and the
        tag of what was sent (None: the result was whole so far)."""
        counter = self._counter(op)
        sent, noticed = counter.sent, counter.noticed
        suspended = buf[start - 5] == ord("s")
        if not suspended:
            counter.sent, counter.noticed = 0, False
        if self.max_rows is None or sent <= self.max_rows or op.swallow:
            return None
        notice = b""
        if not noticed:
            counter.noticed = suspended
            notice = bastion_error(f"bastion: the result was cut at {self.max_rows} rows "
                                   f"(max_rows of {self.ctx.target.name}); {sent} rows were "
                                   "found so far" if suspended else
                                   f"bastion: the result was cut at {self.max_rows} rows "
                                   f"(max_rows of {self.ctx.target.name}); {sent} rows were found",
                                   code="01000", severity="NOTICE")
        if buf[start - 5] != ord("C"):
            return notice + bytes(buf[start - 5:end])
        tag = self._tag(buf, start, end)
        verb = tag.rpartition(" ")[0] if command_rows(tag) is not None else tag
        return notice + message(b"C", f"{verb} {self.max_rows}".encode() + b"\x00")

    async def _query_response(self, op: Op, kind: str, buf: bytearray, start: int, end: int
                              ) -> bytes | None:
        if kind == "Z":
            self.ops.popleft()
            return b"" if op.swallow else None
        if op.swallow:
            return b""
        if kind == "T":
            columns = parse_row_description(memoryview(buf)[start:end])
            op.statement().columns = [c[0] for c in columns]
            op.formats = [c[3] for c in columns]
            op.scrub = scrub_plan(op, columns, self.ctx.grant.lookups is not None)
        elif kind in "CI":
            op.statement()
            await self._finish_statement(op, self._tag(buf, start, end) if kind == "C" else "")
            op.index += 1
        elif kind == "d":
            copy_line(op, memoryview(buf)[start:end])
        return None

    def _extended_done(self, op: Op, kind: str, buf: bytearray, start: int, end: int) -> bool:
        """Whether this message ends the response to `op`."""
        if op.kind == "P":
            return kind == "1"
        if op.kind == "B":
            return kind == "2"
        if op.kind == "C":
            return kind == "3"
        if op.kind == "S":
            return kind == "Z"
        if op.kind == "D":
            if kind == "T" and op.target is not None:
                self._describe(op.target, parse_row_description(memoryview(buf)[start:end]))
            elif kind == "n" and op.target is not None:
                self._describe(op.target, [])
            return kind in "Tn"
        # Execute: rows, then CommandComplete, EmptyQuery or PortalSuspended; COPY in between.
        current = op.current or self._begin(op)
        if kind == "C":
            current.status = self._tag(buf, start, end)
            current.rows = command_rows(current.status)
        elif kind == "d":
            copy_line(op, memoryview(buf)[start:end])
        return kind in "CIs"

    def _begin(self, op: Op) -> Statement:
        """Start the statement an Execute runs, with what Describe said of its columns."""
        current = op.statement()
        if op.kind == "E" and op.portal is not None and op.portal.columns:
            op.scrub = scrub_plan(op, op.portal.columns, self.ctx.grant.lookups is not None)
        return current

    def _describe(self, target: tuple[str, str], columns: list[Column]) -> None:
        what, name = target
        found = (self.statements if what == "S" else self.portals).get(name)
        if found is not None:
            found.columns = columns

    async def _error(self, op: Op, buf: bytearray, start: int, end: int) -> bytes | None:
        if op.kind == "Q":
            if op.refusal is not None:
                return op.refusal
            if op.swallow:
                return b""
            op.statement()
            replacement = scrubbed_message(memoryview(buf)[start:end], b"E", op)
            await self._finish_statement(op, error=True)
            return replacement
        # Extended: this message failed; the server skips every message until Sync. What the
        # skipped Parse and Bind messages (and this one) would have named is put back.
        self.ops.popleft()
        replacement = op.refusal if op.refusal is not None else \
            scrubbed_message(memoryview(buf)[start:end], b"E", op)
        if op.kind == "E" and not op.swallow:
            op.statement()
            await self._finish_statement(op, error=True)
        skipped = []
        while self.ops and self.ops[0].kind != "S":
            skipped.append(self.ops.popleft())
        for undone in reversed([op, *skipped]):
            if undone.restore is not None:
                table, name, before = undone.restore
                if before is None or (undone is op and op.kind == "P" and not name):
                    table.pop(name, None)  # a failed unnamed Parse drops the unnamed statement
                else:
                    table[name] = before
        return replacement

    @staticmethod
    def _tag(buf: bytearray, start: int, end: int) -> str:
        return bytes(buf[start:end - 1]).decode("utf-8", "replace")

    async def _finish_statement(self, op: Op, status: str | None = None, *,
                                error: bool = False) -> None:
        current = op.current
        op.current = None
        if current is None or op.swallow:
            return
        if status is not None:
            current.status = status
            current.rows = command_rows(status)
        current.duration_ms = (time.perf_counter() - op.started) * 1000
        if error and current.error is None:
            current.error = "error"
        await self.ctx.log(current)

    # endings ----------------------------------------------------------------------------

    async def _violation(self, reason: str) -> str:
        await self.ctx.protocol_error(reason)
        return await self._fatal(f"bastion: protocol violation: {reason}", "08P01")

    async def _fatal(self, text: str, code: str) -> str:
        with contextlib.suppress(Exception):
            self.writer.write(bastion_error(text, code=code, fatal=True))
            async with asyncio.timeout(2):
                await self.writer.drain()
        return text.removeprefix("bastion: ")

    def close(self) -> None:
        _CANCEL_KEYS.pop(self.key, None)
        if self.up is not None:
            self.up.writer.close()
