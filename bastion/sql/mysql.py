"""MySQL and MariaDB targets through PyMySQL, run off the event loop.

PyMySQL is blocking, so every call on a connection runs in a worker thread, one at a time per
connection. Rows stream through an unbuffered cursor (SSCursor). Cancelling a running statement
is `KILL QUERY <id>` sent on a separate connection, as the mysql client does on Ctrl-C.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pymysql
import pymysql.cursors

from bastion.config import Target
from bastion.sql.catalog import Catalog, Relation
from bastion.sql.driver import BATCH_ROWS, ColumnOrigin, DriverError, Pending, RawRows
from bastion.sql.errors import SqlConnectError
from bastion.sql.policy import SqlPolicy

__all__ = ["MysqlDriver", "tls_options"]

_IN_TRANSACTION = 1  # SERVER_STATUS_IN_TRANS
_CANCELLED = {1317, 1927, 3024, 1969}  # query interrupted / killed / max execution time
_LEXICAL_MODES = frozenset({"NO_BACKSLASH_ESCAPES", "ANSI_QUOTES", "ANSI"})


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def tls_options(host: str) -> dict[str, Any]:
    """PyMySQL's connect options for TLS: none on loopback, where it protects nothing and
    PyMySQL's "preferred" mode would build a context from the system's CA bundle at every
    connect (about 50 ms of CPU, every 2 s in the grant sweep); preferred elsewhere."""
    return {"ssl_disabled": True} if host in LOOPBACK else {}


def _connect(target: Target) -> pymysql.connections.Connection[Any]:
    password = target.password.resolve().reveal() if target.password is not None else ""
    try:
        return pymysql.connect(host=target.host, port=target.port, user=target.login,
                               password=password, database=target.database, autocommit=True,
                               connect_timeout=10, charset="utf8mb4",
                               **tls_options(target.host))
    except pymysql.err.MySQLError as exc:
        raise SqlConnectError(_message(exc)) from None


def _message(exc: BaseException) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[1], str):
        return str(args[1])
    return str(exc) or type(exc).__name__


class MysqlDriver:
    """A user's MySQL/MariaDB session."""

    dialect = "mysql"

    def __init__(self, target: Target, conn: pymysql.connections.Connection[Any]) -> None:
        self.target = target
        self.conn = conn
        self.cursor: pymysql.cursors.SSCursor | None = None
        self._notices: list[str] = []
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, target: Target, policy: SqlPolicy) -> MysqlDriver:
        """Log in as the target's login; read-only targets get read-only transactions."""
        conn = await asyncio.to_thread(_connect, target)
        await asyncio.to_thread(_pin_sql_mode, conn)
        if policy.read_only:
            await asyncio.to_thread(_run, conn, "SET SESSION TRANSACTION READ ONLY")
        return cls(target, conn)

    def take_notices(self) -> list[str]:
        """Warnings since the last call."""
        notices, self._notices = self._notices, []
        return notices

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open."""
        return bool(self.conn.server_status & _IN_TRANSACTION)

    async def start(self, sql: str) -> Pending:
        """Run a statement; read its columns and first batch."""
        await self._lock.acquire()
        try:
            pending = await asyncio.to_thread(self._start, sql)
        except BaseException:
            self._lock.release()
            raise
        if pending.done:
            self._lock.release()
        return pending

    def _start(self, sql: str) -> Pending:
        cur = self.conn.cursor(pymysql.cursors.SSCursor)
        self.cursor = cur
        try:
            cur.execute(sql)
        except pymysql.err.MySQLError as exc:
            cur.close()
            raise _error(exc) from None
        result = cur._result
        if result is None or not getattr(result, "fields", None):
            pending = Pending(origins=[], first=[], rowcount=max(cur.rowcount, 0), done=True,
                              status=_status(sql, cur.rowcount))
            self._warnings(result)
            cur.close()
            return pending
        origins = [ColumnOrigin(name=f.name, schema=_text(f.db) or None, table=f.org_table or None,
                                column=f.org_name or None) for f in result.fields]
        pending = Pending(origins=origins, first=[], rowcount=0)
        pending.first = self._fetch(pending)
        return pending

    def _fetch(self, pending: Pending) -> RawRows:
        cur = self.cursor
        assert cur is not None
        try:
            rows = list(cur.fetchmany(BATCH_ROWS))
        except pymysql.err.MySQLError as exc:
            pending.done = True
            cur.close()
            raise _error(exc) from None
        pending.rowcount = (pending.rowcount or 0) + len(rows)
        if len(rows) < BATCH_ROWS:
            pending.done = True
            self._warnings(cur._result)
            cur.close()
            pending.status = f"SELECT {pending.rowcount}"
        return rows

    def _warnings(self, result: Any) -> None:
        if result is not None and int(getattr(result, "warning_count", 0) or 0):
            self._notices.append(f"WARNING: the statement raised {result.warning_count} warning(s); "
                                 "SHOW WARNINGS lists them")

    async def more(self, pending: Pending) -> RawRows:
        """The next batch of rows."""
        if pending.done:
            return []
        try:
            rows = await asyncio.to_thread(self._fetch, pending)
        except BaseException:
            pending.done = True
            self._lock.release()
            raise
        if pending.done:
            self._lock.release()
        return rows

    async def stop(self, pending: Pending) -> None:
        """Abandon the rest of the rows: kill the query, then read what is left."""
        if pending.done:
            return
        await self.cancel()
        try:
            await asyncio.to_thread(self._discard)
        finally:
            pending.done = True
            self._lock.release()

    def _discard(self) -> None:
        cur = self.cursor
        if cur is None:
            return
        try:
            cur.close()  # reads and drops the rest of an unbuffered result
        except pymysql.err.MySQLError:
            pass

    async def cancel(self) -> None:
        """KILL QUERY on a separate connection."""
        if not self._lock.locked():
            return
        thread_id = self.conn.thread_id()
        try:
            await asyncio.to_thread(self._kill, thread_id)
        except (SqlConnectError, pymysql.err.MySQLError):
            pass

    def _kill(self, thread_id: int) -> None:
        other = _connect(self.target)
        try:
            _run(other, f"KILL QUERY {int(thread_id)}")
        finally:
            other.close()

    async def load_catalog(self) -> Catalog:
        """Read tables, columns and routines on a second connection."""
        return await asyncio.to_thread(self._load_catalog)

    def _load_catalog(self) -> Catalog:
        conn = _connect(self.target)
        try:
            tables = _rows(conn, "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES")
            columns = _rows(conn, "SELECT TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION, COLUMN_NAME "
                                  "FROM information_schema.COLUMNS ORDER BY 1, 2, 3")
            routines = _rows(conn, "SELECT ROUTINE_NAME FROM information_schema.ROUTINES")
        except pymysql.err.MySQLError as exc:
            raise SqlConnectError(f"cannot read the database catalog: {_message(exc)}") from None
        finally:
            conn.close()
        by_table: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for schema, name, position, column in columns:
            by_table.setdefault((schema, name), []).append((int(position), column))
        rels = []
        for schema, name, kind in tables:
            rel_kind = "view" if "VIEW" in str(kind).upper() else "table"
            rels.append(Relation(schema=schema, name=name, kind=rel_kind,
                                 columns=tuple(by_table.get((schema, name), ()))))
        return Catalog(relations=tuple(rels),
                       functions=frozenset(str(r[0]).lower() for r in routines))

    async def readable_columns(self) -> list[tuple[str, str, str]]:
        """(schema, table, column) of every column the login may read, on a second connection."""
        return await asyncio.to_thread(self._readable_columns)

    def _readable_columns(self) -> list[tuple[str, str, str]]:
        conn = _connect(self.target)
        try:
            # information_schema lists a column only to an account with a privilege on it.
            rows = _rows(conn, "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
                               "WHERE TABLE_SCHEMA NOT IN ('mysql', 'information_schema', "
                               "'performance_schema', 'sys') ORDER BY 1, 2, ORDINAL_POSITION")
        except pymysql.err.MySQLError as exc:
            raise SqlConnectError(f"cannot read the database catalog: {_message(exc)}") from None
        finally:
            conn.close()
        return [(_text(s), _text(t), _text(c)) for s, t, c in rows]

    async def close(self) -> None:
        """Close the session."""
        await asyncio.to_thread(self.conn.close)


def _pin_sql_mode(conn: pymysql.connections.Connection[Any]) -> None:
    """Quotes and backslashes must mean what the bastion's lexer thinks they mean."""
    with conn.cursor() as cur:
        cur.execute("SELECT @@SESSION.sql_mode")
        row = cur.fetchone()
        modes = [m for m in str(row[0] if row else "").split(",") if m]
        kept = [m for m in modes if m not in _LEXICAL_MODES]
        if kept != modes:
            cur.execute("SET SESSION sql_mode = %s", (",".join(kept),))


def _run(conn: pymysql.connections.Connection[Any], sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)


def _rows(conn: pymysql.connections.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def _status(sql: str, rowcount: int) -> str:
    verb = sql.split(None, 1)[0].upper() if sql.strip() else "OK"
    return f"{verb} {rowcount}" if rowcount >= 0 else verb


def _error(exc: pymysql.err.MySQLError) -> DriverError:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    return DriverError(_message(exc), cancelled=code in _CANCELLED)
