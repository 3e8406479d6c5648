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
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncssh

from bastion.console.completion import SqlCompleter, Vocabulary
from bastion.console.history import SessionHistory
from bastion.console.prompt import ConsolePrompt
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

__all__ = ["SqlConsole", "parse_exec_options"]

log = logging.getLogger(__name__)

RECORDED_ROWS = 200  # rows of each result kept as structured data in the recording
_DDL = frozenset({"create", "alter", "drop", "rename"})  # statements that change the names to offer
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


def _shown(text: str) -> str:
    """Server and bastion messages line by line, control characters escaped."""
    return "\n".join(safe_text(line) for line in text.split("\n"))


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
        self._running = False  # a console statement is running: Ctrl-C cancels it
        self._ddl_seen = False  # the names completion offers may have changed
        self._dropping = False  # typed-ahead keys are being dropped (too many wait)

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

    def _buffer(self, data: bytes) -> None:
        """Gather output for the user only: the editor's drawing holds literals, never recorded."""
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

    async def _run_sql(self, sql: str) -> None:
        assert self.conn is not None
        if not sql.strip():
            return
        async with contextlib.aclosing(self.conn.execute(sql)) as results:
            async for result in results:
                await self._present(result)
                if self.live.stop.is_set():
                    return

    async def _present(self, result: StatementResult) -> None:
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
        if result.kind in _DDL and not result.blocked and not result.error:
            self._ddl_seen = True
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
        record = self.live.record
        completer = SqlCompleter()
        prompt = ConsolePrompt(
            write=self._buffer, flush=self.flush, term=self.process.term_type or "xterm",
            size=(self.width, self.process.term_size[1]), dialect=self.target.kind,
            history=SessionHistory(self.bastion.console_histories, record.user, record.target),
            completer=completer)
        reader = asyncio.create_task(self._read_keys(prompt))
        stopper = asyncio.create_task(self._close_on_stop(prompt))
        names = asyncio.create_task(self._learn_names(completer))
        await self.show(f"Connected to {self.target.name} ({self.target.kind}) through the bastion. "
                        "Type \\? for help.\n")
        try:
            while not self.live.stop.is_set():
                text = self._prompt(False)
                await self.recording.output(text.encode())
                line = await prompt.read(text, self._prompt(True))
                if line is None:
                    failure = reader.exception() if reader.done() and not reader.cancelled() else None
                    if failure is not None:
                        raise failure  # e.g. the recording failed: no recording, no session
                    await self.show("\n")
                    break
                if line.strip().startswith("\\"):
                    if await self._meta(line.strip()) == "quit":
                        break
                    continue
                self._running, self._dropping = True, False
                try:
                    await self._run_sql(line)
                finally:
                    self._running = False
                if self._ddl_seen and names.done():
                    self._ddl_seen = False
                    names = asyncio.create_task(self._learn_names(completer))
        finally:
            for task in (reader, stopper, names):
                task.cancel()
        self._exit(1 if self.live.end_reason else 0)
        return SessionStatus.ENDED, "console closed"

    async def _learn_names(self, completer: SqlCompleter) -> None:
        """Give completion the tables and columns the session's account may read."""
        assert self.conn is not None
        try:
            completer.learned(Vocabulary.from_columns(await self.conn.readable_columns()))
        except SqlError as exc:  # completion goes on with keywords only
            completer.learned(None)
            log.warning("session %s: cannot read names for completion: %s", self.live.record.id, exc)

    async def _close_on_stop(self, prompt: ConsolePrompt) -> None:
        await self.live.stop.wait()
        prompt.close()

    async def _read_keys(self, prompt: ConsolePrompt) -> None:
        """Hand keys to the editor; Ctrl-C while a statement runs cancels it on the server."""
        try:
            await self._pass_keys(prompt)
        finally:
            prompt.close()  # the end of input, or a failure the console raises in its place

    async def _pass_keys(self, prompt: ConsolePrompt) -> None:
        while True:
            try:
                data = await self.process.stdin.read(4096)
            except asyncssh.TerminalSizeChanged as change:
                self.width = change.width or self.width
                prompt.resize(change.width, change.height)
                await self.recording.resize(change.width, change.height)
                continue
            except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue
            if not data:
                return
            self.live.touch()
            if self._running and b"\x03" in data:
                data = data.replace(b"\x03", b"")
                await self.show("^C\n")
                if self.conn is not None:
                    await self.conn.cancel()
            if not prompt.feed(data) and not self._dropping:
                self._dropping = True  # said once per statement, not per read
                await self.show("bastion: too much typed ahead of a running statement; the rest "
                                "is ignored (Ctrl-C cancels the statement)\n")

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
            await self._present(result)
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
