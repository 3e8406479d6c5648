"""SQL sessions: `ssh DB@bastion` opens a console, `ssh DB@bastion 'SQL'` runs statements.

The bastion runs every statement itself through `bastion.sql` (which masks, refuses and scrubs),
prints results as the user asked, and records what the user saw. The user's own keystrokes are
never recorded raw: SQL text carries literals (`WHERE ssn = '…'`), so the recording and the query
log hold each statement with its literals redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncssh

from bastion.console.lineedit import EOF, INTERRUPT, LineEditor
from bastion.console.render import FORMATS, ResultWriter, cell, safe_text
from bastion.db.grants import StoreLookupBudget
from bastion.models import QueryRecord, SessionStatus, utcnow
from bastion.secrets import SecretRef
from bastion.sql import (
    SqlConnection,
    SqlError,
    SqlPolicy,
    StatementResult,
    open_sql_connection,
)
from bastion.ssh.shell import CLIENT_GONE
from recorder import RecordingError, RecordingWriter

if TYPE_CHECKING:
    from bastion.config import Target
    from bastion.server import Bastion
    from bastion.sessions import LiveSession

__all__ = ["SqlConsole", "parse_exec_options", "statement_complete"]

RECORDED_ROWS = 200  # rows of each result kept as structured data in the recording
HELP = """\
Statements end with ';' and may span lines. The database's own transactions apply
(BEGIN / COMMIT / ROLLBACK). Ctrl-C cancels a running statement; Ctrl-D or \\q quits.
  \\dt            list tables              \\d NAME     describe a table
  \\x             expanded display on/off  \\format F  table, expanded, csv, tsv or json
  \\?             this help                \\q          quit
Sensitive columns are masked by the bastion; every statement is logged with its literals
redacted.
"""


def parse_exec_options(command: str) -> tuple[str, str]:
    """Split `--format csv SELECT …` (or --csv, --tsv, --json, --expanded) into (format, SQL)."""
    fmt = "table"
    rest = command.strip()
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        if word == "--format":
            value, _, after = after.strip().partition(" ")
            if value not in FORMATS:
                raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {value!r}")
            fmt = value
        elif word.removeprefix("--") in FORMATS:
            fmt = word.removeprefix("--")
        elif word.startswith("--format="):
            return parse_exec_options("--format " + word.removeprefix("--format=") + " " + after)
        else:
            break  # a SQL comment, e.g. "-- note"
        rest = after.strip()
    return fmt, rest


def statement_complete(text: str) -> bool:
    """Whether console input ends a statement: a ';' outside quotes and comments at the end."""
    quote: str | None = None
    last = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if not ch.isspace():
            last = ch if quote is None else ""
        i += 1
    return quote is None and last == ";"


def _shown(text: str) -> str:
    """Server and bastion messages line by line, control characters escaped."""
    return "\n".join(safe_text(line) for line in text.split("\n"))


_STOPPED = object()  # the session was ended from outside (window over, revoked, killed)


@dataclass
class _Outcome:
    errors: int = 0


class SqlConsole:
    """One SQL session: a console on a PTY, or statements from the command line or stdin."""

    def __init__(self, bastion: Bastion, process: asyncssh.SSHServerProcess[bytes],
                 live: LiveSession, target: Target, recording: RecordingWriter) -> None:
        self.bastion = bastion
        self.process = process
        self.live = live
        self.target = target
        self.recording = recording
        self.pty = bool(process.term_type)
        self.newline = "\r\n" if self.pty else "\n"
        self.width = process.term_size[0] or 80
        self.fmt = "table"
        self.conn: SqlConnection | None = None
        self.outcome = _Outcome()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._exiting = False

    async def show(self, text: str, *, stderr: bool = False) -> None:
        """Write to the user and to the recording (exactly what they see)."""
        if not text:
            return
        if self.pty:
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        data = text.encode()
        await self.recording.output(data)
        if stderr and not self.pty:
            self._stderr(data)
        else:
            self._buffer(data)

    def echo(self, text: str) -> None:
        """Write keystroke echo to the user only (it may contain literals)."""
        if text:
            self._buffer(text.encode())

    def _buffer(self, data: bytes) -> None:
        # Output is gathered and sent in one SSH write per prompt or per 64 KiB: a statement's
        # rows, row count and the next prompt travel together.
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= 65536:
            self.flush()

    def _stderr(self, data: bytes) -> None:
        """Write to stderr after what stdout gathered, so the two keep their order."""
        self.flush()
        with contextlib.suppress(BrokenPipeError, ConnectionError):  # the user has gone
            self.process.stderr.write(data)

    def flush(self) -> None:
        """Send what `show` and `echo` gathered."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            with contextlib.suppress(BrokenPipeError, ConnectionError):  # the user has gone
                self.process.stdout.write(data)

    def _exit(self, status: int) -> None:
        self._exiting = True
        if self.live.end_reason and self.live.end_reason != CLIENT_GONE:
            # Window over, revoked, user removed, killed: say why, as shell sessions do.
            message = f"{self.newline}bastion: session ended: {self.live.end_reason}{self.newline}"
            if self.pty:
                self._buffer(message.encode())
            else:
                self._stderr(message.encode())
        self.flush()
        self.process.exit(status)

    async def run(self) -> tuple[SessionStatus, str]:
        """Connect to the database and run the session in the mode the client asked for."""
        try:
            self.conn = await self._connect()
        except Exception as exc:  # the grants and the drivers raise BastionError, clean messages
            await self.show(f"bastion: cannot open {self.target.name}: {exc}{self.newline}",
                            stderr=True)
            self._exit(1)
            return SessionStatus.ENDED, f"database connection failed: {exc}"
        stopper = asyncio.create_task(self._cancel_on_stop())
        gone = asyncio.create_task(self._end_on_disconnect())
        try:
            if self.process.command is not None:
                return await self._exec(self.process.command)
            if self.pty:
                return await self._console()
            return await self._script()
        finally:
            stopper.cancel()
            gone.cancel()
            with contextlib.suppress(Exception):
                await self.conn.close()

    async def _connect(self) -> SqlConnection:
        """Log in with the grant's own database account (checked first); the database masks."""
        request_id = self.live.record.request_id
        request = await self.bastion.store.get_request(request_id)
        if request is None:
            raise SqlError(f"request {request_id} is gone")
        login = await self.bastion.db_grants.login(self.target, request)
        target = dataclasses.replace(self.target, login=login.account, database=login.database,
                                     password=SecretRef(value=login.password))
        policy = SqlPolicy.for_target(self.target)
        budget = StoreLookupBudget(self.bastion.store, request_id)
        return await open_sql_connection(target, policy, budget, login.lookups)

    async def _end_on_disconnect(self) -> None:
        """A client that goes away ends the session and cancels its running statement."""
        await self.process.channel.wait_closed()
        if not self._exiting:
            self.live.end(CLIENT_GONE)

    async def _cancel_on_stop(self) -> None:
        """When the session is ended (window over, revoked, killed), stop the running query."""
        await self.live.stop.wait()
        if self.conn is not None:
            await self.conn.cancel()

    async def _exec(self, command: str) -> tuple[SessionStatus, str]:
        try:
            self.fmt, sql = parse_exec_options(command)
        except ValueError as exc:
            await self.show(f"bastion: {exc}\n", stderr=True)
            self._exit(2)
            return SessionStatus.ENDED, "bad options"
        await self._run_sql(sql)
        status = 1 if self.outcome.errors else 0
        self._exit(status)
        return SessionStatus.ENDED, f"exit status {status}"

    async def _script(self) -> tuple[SessionStatus, str]:
        chunks = []
        while True:
            data = await self.process.stdin.read(65536)
            if not data:
                break
            chunks.append(data)
        await self._run_sql(b"".join(chunks).decode("utf-8", "replace"))
        status = 1 if self.outcome.errors else 0
        self._exit(status)
        return SessionStatus.ENDED, f"exit status {status}"

    async def _run_sql(self, sql: str, interrupt: asyncio.Event | None = None) -> None:
        assert self.conn is not None
        if not sql.strip():
            return
        async with contextlib.aclosing(self.conn.execute(sql)) as results:
            async for result in results:
                await self._present(result, interrupt)
                if self.live.stop.is_set():
                    return

    async def _present(self, result: StatementResult, interrupt: asyncio.Event | None) -> None:
        started = utcnow()
        recorded_rows: list[list[str]] = []
        if result.blocked:
            self.outcome.errors += 1
            await self.show(f"bastion: refused: {_shown(result.blocked)}\n", stderr=True)
        else:
            writer = ResultWriter(self.fmt, [c.name for c in result.columns], width=self.width)
            if result.columns:
                await self.show(writer.header())
                async for batch in result.rows():
                    if len(recorded_rows) < RECORDED_ROWS:
                        recorded_rows.extend([cell(v) for v in row]
                                             for row in batch[: RECORDED_ROWS - len(recorded_rows)])
                    await self.show(writer.batch(batch))
            if result.error:
                self.outcome.errors += 1
                await self.show(f"ERROR: {_shown(result.error)}\n", stderr=True)
            else:
                await self.show(writer.footer(result.status, result.rowcount, result.truncated,
                                              self.target.max_rows))
            for notice in result.notices:
                await self.show(f"NOTICE: {_shown(notice)}\n", stderr=True)
        await self._log(result, started, recorded_rows)

    async def _log(self, result: StatementResult, started: Any, rows: list[list[str]]) -> None:
        record = self.live.record
        payload = {
            "statement": result.redacted, "kind": result.kind, "blocked": result.blocked,
            "error": result.error, "rows": result.rowcount, "status": result.status,
            "duration_ms": round(result.duration_ms, 3),
        }
        await self.recording.sql_statement(payload)
        if result.columns:
            await self.recording.sql_result({
                "columns": [c.name for c in result.columns],
                "masked": {c.name: c.masked for c in result.columns if c.masked},
                "rows": rows, "rowcount": result.rowcount, "truncated": result.truncated,
            })
        await self.bastion.store.record_query(QueryRecord(
            session_id=record.id, user=record.user, target=record.target,
            statement=result.redacted, kind=result.kind, started_at=started,
            duration_ms=result.duration_ms, rows=result.rowcount, blocked=result.blocked,
            error=result.error,
        ))
        if result.blocked:
            await self.bastion.audit.record(
                "sql.blocked", actor=record.user, target=record.target, session_id=record.id,
                statement=result.redacted, reason=result.blocked,
            )

    # the interactive console ----------------------------------------------------------------

    def _prompt(self, continued: bool) -> str:
        in_tx = self.conn is not None and self.conn.in_transaction
        return f"{self.target.name}{'*' if in_tx else ''}{'-' if continued else '='}> "

    async def _console(self) -> tuple[SessionStatus, str]:
        editor = LineEditor()
        events: asyncio.Queue[object] = asyncio.Queue()
        interrupt = asyncio.Event()
        reader = asyncio.create_task(self._read_keys(editor, events, interrupt))
        await self.show(f"Connected to {self.target.name} ({self.target.kind}) through the bastion. "
                        "Type \\? for help.\n")
        buffer: list[str] = []
        self.echo(editor.start(self._prompt(False)))
        self.flush()
        await self.recording.output(self._prompt(False).encode())
        stopper = asyncio.create_task(self._stop_events(events))
        try:
            while not self.live.stop.is_set():
                event = await events.get()
                if event is _STOPPED:
                    break
                if event is EOF:
                    await self.show("\n")
                    break
                if event is INTERRUPT:
                    buffer.clear()
                elif isinstance(event, str):
                    if not buffer and event.strip().startswith("\\"):
                        if await self._meta(event.strip()) == "quit":
                            break
                    elif event.strip() or buffer:
                        buffer.append(event)
                        text = "\n".join(buffer)
                        if statement_complete(text):
                            buffer.clear()
                            interrupt.clear()
                            await self._run_sql(text, interrupt)
                prompt = self._prompt(bool(buffer))
                self.echo(editor.start(prompt))
                self.flush()
                await self.recording.output(prompt.encode())
        finally:
            reader.cancel()
            stopper.cancel()
        self._exit(1 if self.live.end_reason else 0)
        return SessionStatus.ENDED, "console closed"

    async def _stop_events(self, events: asyncio.Queue[object]) -> None:
        await self.live.stop.wait()
        await events.put(_STOPPED)

    async def _read_keys(self, editor: LineEditor, events: asyncio.Queue[object],
                         interrupt: asyncio.Event) -> None:
        while True:
            try:
                data = await self.process.stdin.read(4096)
            except asyncssh.TerminalSizeChanged as change:
                self.width = change.width or self.width
                await self.recording.resize(change.width, change.height)
                continue
            except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue
            if not data:
                await events.put(EOF)
                return
            self.live.touch()
            echo, produced = editor.feed(data)
            self.echo(echo)
            self.flush()
            for event in produced:
                if event is INTERRUPT and self.conn is not None:
                    interrupt.set()
                    await self.conn.cancel()
                await events.put(event)

    async def _meta(self, command: str) -> str | None:
        assert self.conn is not None
        word, _, arg = command.partition(" ")
        if word in ("\\q", "\\quit"):
            return "quit"
        if word == "\\?":
            await self.show(HELP)
        elif word == "\\x":
            self.fmt = "table" if self.fmt == "expanded" else "expanded"
            await self.show(f"Expanded display is {'on' if self.fmt == 'expanded' else 'off'}.\n")
        elif word == "\\format":
            if arg.strip() in FORMATS:
                self.fmt = arg.strip()
                await self.show(f"Output format is {self.fmt}.\n")
            else:
                await self.show(f"\\format takes one of {', '.join(FORMATS)}\n")
        elif word in ("\\dt", "\\d"):
            result = await self.conn.describe(arg.strip() or None)
            await self._present(result, None)
        else:
            await self.show(f"unknown command {word}; \\? lists them\n")
        return None


async def run_sql_session(bastion: Bastion, process: asyncssh.SSHServerProcess[bytes],
                          live: LiveSession, target: Target,
                          recording: RecordingWriter) -> tuple[SessionStatus, str]:
    """Run a SQL session to its end."""
    console = SqlConsole(bastion, process, live, target, recording)
    status, reason = await console.run()
    if live.end_reason is not None:
        with contextlib.suppress(RecordingError):
            await recording.marker(f"ended by the bastion: {live.end_reason}")
        return SessionStatus.ENDED, live.end_reason
    return status, reason
