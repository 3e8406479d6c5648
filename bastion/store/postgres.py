"""The PostgreSQL store: shared state for several bastions behind one load balancer.

A few psycopg async connections in autocommit mode, each transaction opened explicitly. Reviews
and closes lock the request row (SELECT … FOR UPDATE), so concurrent reviewers on different
bastions queue on it instead of losing or double-counting a review.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from bastion.errors import StoreError
from bastion.store.bindings import BindingRows
from bastion.store.cluster_sql import ClusterSqlStore
from bastion.store.migrations import Dialect
from bastion.store.sql import Row, Tx

__all__ = ["PostgresStore"]

_CONNECT_TIMEOUT_S = 10
_URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")
_PARAM_PASSWORD = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return the URL with any password replaced by `***`."""
    return _PARAM_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))


def _secrets_of(url: str) -> list[str]:
    """Return the spellings of the URL's password that must never reach a message."""
    try:
        password = str(conninfo_to_dict(url).get("password") or "")
    except psycopg.Error:
        password = ""
    return [url, password, quote(password, safe="")] if password else []


class _PostgresTx(Tx):
    """A transaction on one pooled connection."""

    dialect: Dialect = "postgresql"
    for_update = " FOR UPDATE"

    def __init__(self, conn: psycopg.AsyncConnection[Row], store: PostgresStore) -> None:
        self._conn = conn
        self._store = store

    async def _run(self, sql: str, params: Sequence[Any], fetch: bool) -> list[Row]:
        """Run one statement, translating `?` placeholders and driver errors."""
        query = sql.replace("%", "%%").replace("?", "%s")
        try:
            async with self._conn.cursor() as cursor:
                await cursor.execute(query, tuple(params))
                return await cursor.fetchall() if fetch else []
        except psycopg.Error as exc:
            raise self._store._error(exc) from exc

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement."""
        await self._run(sql, params, False)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query and return all rows."""
        return await self._run(sql, params, True)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each row (pipelined by psycopg)."""
        query = sql.replace("%", "%%").replace("?", "%s")
        try:
            async with self._conn.cursor() as cursor:
                await cursor.executemany(query, [tuple(r) for r in rows])
        except psycopg.Error as exc:
            raise self._store._error(exc) from exc


class PostgresStore(BindingRows, ClusterSqlStore):
    """State in a PostgreSQL database, shared by several bastions."""

    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        self._url = url
        self._where = redact_url(url)
        self._secrets = _secrets_of(url)
        self._idle: list[psycopg.AsyncConnection[Row]] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._open = False

    def __repr__(self) -> str:
        """Name the database without its password."""
        return f"PostgresStore({self._where!r})"

    def _error(self, exc: BaseException) -> StoreError:
        """Return a StoreError for a driver error, with the password scrubbed out."""
        message = str(exc)
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return StoreError(f"PostgreSQL store {self._where}: {message}")

    async def _acquire(self) -> psycopg.AsyncConnection[Row]:
        """Return an idle connection, or a new one."""
        if not self._open:
            raise StoreError(f"the PostgreSQL store {self._where} is not open")
        if self._idle:
            return self._idle.pop()
        try:
            return await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
            )
        except psycopg.Error as exc:
            # from None: the driver's own message may quote the URL.
            raise self._error(exc) from None

    async def _release(self, conn: psycopg.AsyncConnection[Row]) -> None:
        """Keep a healthy connection for reuse; close any other."""
        healthy = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        if healthy and self._open:
            self._idle.append(conn)
        else:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def open(self) -> None:
        """Connect and bring the schema up to the current version."""
        if self._open:
            return
        self._open = True
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every idle connection; busy ones close when their transaction ends."""
        self._open = False
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[Tx]:
        """Open a transaction that commits on success and rolls back on error."""
        # READ COMMITTED plus row locks is enough; `write` only matters to SQLite.
        async with self._slots:
            conn = await self._acquire()
            try:
                try:
                    async with conn.transaction():
                        yield _PostgresTx(conn, self)
                except psycopg.Error as exc:
                    raise self._error(exc) from None
            finally:
                await self._release(conn)
