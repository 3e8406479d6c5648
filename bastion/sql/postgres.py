"""PostgreSQL targets through psycopg 3 (async): the user's session and the catalog reader.

Rows stream in chunks (libpq's chunked-rows mode) so a large result never sits whole in memory.
psycopg's public `stream()` hides the result of a statement that returns no rows and the columns
of an empty result, so the driver drives psycopg's own send/fetch generators directly; the
package pins psycopg below 3.4 for that reason.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import pq
from psycopg.generators import fetch

from bastion.config import Target
from bastion.sql.catalog import Catalog, Relation
from bastion.sql.driver import BATCH_ROWS, ColumnOrigin, DriverError, Pending, RawRows
from bastion.sql.errors import SqlConnectError
from bastion.sql.policy import SqlPolicy

__all__ = ["PostgresDriver"]

_ROWS = (pq.ExecStatus.SINGLE_TUPLE, pq.ExecStatus.TUPLES_CHUNK)
_DONE = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK, pq.ExecStatus.EMPTY_QUERY)
_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind,
       coalesce(array_agg(a.attnum ORDER BY a.attnum) FILTER (WHERE a.attnum > 0), '{}'),
       coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum > 0), '{}')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND n.nspname <> 'pg_toast'
GROUP BY c.oid, n.nspname, c.relname, c.relkind
"""
_FUNCTIONS = """
SELECT DISTINCT lower(p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# information_schema lists a column only to an account with a privilege on it (or owning it).
_READABLE = """
SELECT table_schema, table_name, column_name FROM information_schema.columns
WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
ORDER BY table_schema, table_name, ordinal_position
"""


def _conninfo(target: Target) -> dict[str, Any]:
    info: dict[str, Any] = {"host": target.host, "port": target.port, "user": target.login,
                            "dbname": target.database or target.login, "connect_timeout": 10,
                            "application_name": "bastion"}
    if target.password is not None:
        info["password"] = target.password.resolve().reveal()
    return info


async def _connect(target: Target, **options: Any) -> psycopg.AsyncConnection[Any]:
    try:
        return await psycopg.AsyncConnection.connect(autocommit=True, **_conninfo(target), **options)
    except psycopg.Error as exc:
        # libpq's message names host, port and user, never the password.
        raise SqlConnectError(str(exc).strip().splitlines()[0]) from None


class PostgresDriver:
    """A user's PostgreSQL session."""

    dialect = "postgres"

    def __init__(self, target: Target, conn: psycopg.AsyncConnection[Any]) -> None:
        self.target = target
        self.conn = conn
        self.cursor = conn.cursor()
        self._notices: list[str] = []
        conn.add_notice_handler(self._on_notice)

    @classmethod
    async def open(cls, target: Target, policy: SqlPolicy) -> PostgresDriver:
        """Log in as the target's login; read-only targets get read-only transactions."""
        # The bastion reads statements as PostgreSQL does with standard strings; pin it, whatever
        # the server's default (changing it later is refused by the guardrails).
        options = "-c standard_conforming_strings=on"
        if policy.read_only:
            options += " -c default_transaction_read_only=on"
        conn = await _connect(target, options=options)
        return cls(target, conn)

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        self._notices.append(f"{diag.severity or 'NOTICE'}: {diag.message_primary or ''}")

    def take_notices(self) -> list[str]:
        """Notices since the last call."""
        notices, self._notices = self._notices, []
        return notices

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction block is open (or failed and waiting for ROLLBACK)."""
        return self.conn.info.transaction_status in (pq.TransactionStatus.INTRANS,
                                                     pq.TransactionStatus.INERROR)

    async def start(self, sql: str) -> Pending:
        """Send a statement in chunked-rows mode and read up to its first chunk."""
        await self.conn.lock.acquire()
        pending = Pending(origins=[], first=[])
        try:
            await self.conn.wait(self.cursor._stream_send_gen(sql, None, size=BATCH_ROWS))
        except BaseException:
            await self._abandon()
            raise
        pending.first = await self._step(pending, first=True)
        return pending

    async def more(self, pending: Pending) -> RawRows:
        """The next chunk of rows."""
        if pending.done:
            return []
        return await self._step(pending, first=False)

    async def _step(self, pending: Pending, *, first: bool) -> RawRows:
        """Read the next result; the session lock is released once the statement is over."""
        try:
            rows = await self._next(pending, first=first)
        except psycopg.Error as exc:
            pending.done = True
            self._release()
            raise _error(exc) from None
        except BaseException:
            await self._abandon()
            raise
        if pending.done:
            self._release()
        return rows

    async def _next(self, pending: Pending, *, first: bool) -> RawRows:
        cur = self.cursor
        res = await self.conn.wait(fetch(self.conn.pgconn))
        if res is None:
            pending.done = True
            return []
        if res.status in _ROWS:
            if first or not pending.origins:
                cur.pgresult = res
                cur._tx.set_pgresult(res, set_loaders=True)
                cur._make_row = cur._make_row_maker()
                pending.origins = _origins(res)
            else:
                cur._tx.set_pgresult(res, set_loaders=False)
            rows: RawRows = cur._tx.load_rows(0, res.ntuples, cur._make_row)
            pending.rowcount = (pending.rowcount or 0) + res.ntuples
            return rows
        final = res
        while res is not None:
            res = await self.conn.wait(fetch(self.conn.pgconn))
        pending.done = True
        if final.status not in _DONE:
            cur._raise_for_result(final)
        if final.status == pq.ExecStatus.TUPLES_OK and not pending.origins:
            pending.origins = _origins(final)
            pending.rowcount = pending.rowcount or 0
        status = (final.command_status or b"").decode()
        pending.status = status
        if not pending.origins:
            pending.rowcount = final.command_tuples
        return []

    async def stop(self, pending: Pending) -> None:
        """Cancel the rest of a statement's rows."""
        if not pending.done:
            await self._abandon()
            pending.done = True

    async def _abandon(self) -> None:
        """Cancel the running statement and read what is left, so the session can go on."""
        try:
            if self.conn.pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                await self.conn._try_cancel()
                for _ in range(100000):
                    res = await self.conn.wait(fetch(self.conn.pgconn))
                    if res is None and self.conn.pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
                        break
        except Exception:  # noqa: S110 - best effort: the statement is being abandoned
            pass
        finally:
            self._release()

    def _release(self) -> None:
        if self.conn.lock.locked():
            self.conn.lock.release()

    async def cancel(self) -> None:
        """Ask the server to cancel the running statement."""
        try:
            await self.conn.cancel_safe(timeout=5)
        except psycopg.Error:
            pass

    async def load_catalog(self) -> Catalog:
        """Read relations and functions on a second connection."""
        conn = await _connect(self.target)
        try:
            relations = await (await conn.execute(_RELATIONS)).fetchall()
            functions = await (await conn.execute(_FUNCTIONS)).fetchall()
        except psycopg.Error as exc:
            raise SqlConnectError(f"cannot read the database catalog: {exc.diag.message_primary}") from None
        finally:
            await conn.close()
        kinds = {"r": "table", "p": "table", "f": "table", "v": "view", "m": "view"}
        return Catalog(relations=tuple(Relation(schema=schema, name=name, kind=kinds[relkind], oid=oid,
                                                columns=tuple(zip(nums, names, strict=True)))
                                       for oid, schema, name, relkind, nums, names in relations),
                       functions=frozenset(f for (f,) in functions))

    async def readable_columns(self) -> list[tuple[str, str, str]]:
        """(schema, table, column) of every column the login may read, on a second connection."""
        conn = await _connect(self.target)
        try:
            rows = await (await conn.execute(_READABLE)).fetchall()
        except psycopg.Error as exc:
            raise SqlConnectError(f"cannot read the database catalog: {exc.diag.message_primary}") from None
        finally:
            await conn.close()
        return [(str(s), str(t), str(c)) for s, t, c in rows]

    async def close(self) -> None:
        """Close the session."""
        await self.conn.close()


def _origins(res: pq.abc.PGresult) -> list[ColumnOrigin]:
    out = []
    for i in range(res.nfields):
        name = (res.fname(i) or b"?").decode()
        oid = res.ftable(i)
        out.append(ColumnOrigin(name=name, oid=oid or None, attnum=res.ftablecol(i) or None))
    return out


def _error(exc: psycopg.Error) -> DriverError:
    diag = exc.diag
    message = diag.message_primary or (str(exc).strip().splitlines() or ["error"])[0]
    return DriverError(message, hint=diag.message_hint,
                       cancelled=isinstance(exc, psycopg.errors.QueryCanceled))
