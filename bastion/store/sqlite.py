"""The SQLite store: one bastion, one database file.

sqlite3 blocks, so every call runs on one dedicated worker thread that owns the connection; the
event loop only awaits it. Write transactions use BEGIN IMMEDIATE, which takes the file's write
lock up front, so writers (also in other processes) queue instead of failing half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from bastion.errors import StoreError
from bastion.store.bindings import BindingRows
from bastion.store.cluster_sql import ClusterSqlStore
from bastion.store.migrations import Dialect
from bastion.store.sql import Row, Tx

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_BUSY_TIMEOUT_S = 30.0
# Rows per INSERT statement, at most, and no more parameters in one than the 999 of SQLite
# builds older than 3.32 allow (the query log's 10 columns: 64 rows).
INSERT_CHUNK = 64
MAX_PARAMETERS = 999


def _connect(path: str) -> sqlite3.Connection:
    """Create the file 0600 (and its directory) if missing, then open and configure it."""
    if path != ":memory:":
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        try:
            # Created here, not by sqlite3, so it is never readable by others even briefly;
            # SQLite gives the -wal and -shm files the same mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
    # isolation_level=None: we issue BEGIN/COMMIT ourselves.
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    try:
        _wal(conn)
        # With WAL, NORMAL loses no committed transaction when the bastion crashes (only on power
        # loss) and spares an fsync per commit: the query log writes one row per statement.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


@functools.lru_cache(maxsize=INSERT_CHUNK)
def _multi_row(sql: str, count: int) -> str:
    """`INSERT ... VALUES (?, ...)` for `count` rows at once."""
    head, values, row = sql.rpartition(" VALUES ")
    if not values or not row.startswith("(") or not row.endswith(")"):
        raise sqlite3.ProgrammingError(f"not a one-row INSERT: {sql!r}")
    return head + values + ", ".join([row] * count)


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. SQLite answers "database is locked" at once, without its busy handler,
    while another connection opening the same new file holds the lock to do the same: retry."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class _SQLiteTx(Tx):
    """A transaction on the store's connection, each statement run on its worker thread."""

    dialect: Dialect = "sqlite"

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement."""
        await self._store._call(self._store._run, sql, tuple(params), False)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query and return all rows."""
        return await self._store._call(self._store._run, sql, tuple(params), True)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each row, in one trip to the worker thread."""
        await self._store._call(self._store._run_many, sql, [tuple(r) for r in rows])


class SQLiteStore(BindingRows, ClusterSqlStore):
    """State in one SQLite file, for a single bastion."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # One connection, so one transaction at a time per store.
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        """Name the database file."""
        return f"SQLiteStore({self._path!r})"

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking function on the store's worker thread."""
        if self._executor is None:
            raise StoreError(f"the SQLite store {self._path} is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self._path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"SQLite store {self._path}: {exc}") from exc

    def _open_connection(self) -> None:
        """Open the connection (worker thread)."""
        self._conn = _connect(self._path)

    def _close_connection(self) -> None:
        """Close the connection (worker thread)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, sql: str, params: tuple[Any, ...], fetch: bool) -> list[Row]:
        """Run one statement (worker thread)."""
        assert self._conn is not None
        cursor = self._conn.execute(sql, params)
        try:
            return cursor.fetchall() if fetch else []
        finally:
            cursor.close()

    def _run_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run one statement for each row (worker thread)."""
        assert self._conn is not None
        self._conn.executemany(sql, rows).close()

    async def _insert_rows(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Run an INSERT for each row, in one write transaction and one trip to the worker
        thread (the query log's batches: three trips cost more than the rows themselves)."""
        async with self._lock:
            await self._call(self._insert_committed, sql, rows)

    def _insert_committed(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Begin, insert, commit (worker thread); rolled back if an insert fails. The rows go
        in multi-row INSERTs of up to INSERT_CHUNK rows: sqlite3 releases and retakes the GIL
        around each statement it steps, and with executemany's one step per row the event
        loop and this thread handed the GIL back and forth for every row of every batch."""
        assert self._conn is not None
        width = sql.rpartition(" VALUES ")[2].count("?")
        if any(len(row) != width for row in rows):  # flattened, a short row would shift the rest
            raise sqlite3.ProgrammingError(f"every row must have {width} values for {sql!r}")
        per_statement = max(1, min(INSERT_CHUNK, MAX_PARAMETERS // max(width, 1)))
        self._begin(True)
        try:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start:start + per_statement]
                self._conn.execute(_multi_row(sql, len(chunk)),
                                   [value for row in chunk for value in row]).close()
        except BaseException:
            self._end(False)
            raise
        self._end(True)

    def _begin(self, write: bool) -> None:
        """Start a transaction (worker thread), dropping one a cancelled caller left open."""
        assert self._conn is not None
        if self._conn.in_transaction:
            self._conn.rollback()
        self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _end(self, commit: bool) -> None:
        """Commit or roll back (worker thread)."""
        assert self._conn is not None
        if not self._conn.in_transaction:
            return
        if commit:
            self._conn.commit()
        else:
            self._conn.rollback()

    async def open(self) -> None:
        """Open the file and bring the schema up to the current version."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-sqlite")
        try:
            await self._call(self._open_connection)
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""
        executor = self._executor
        if executor is None:
            return
        async with self._lock:
            try:
                await self._call(self._close_connection)
            finally:
                self._executor = None
                # The worker is idle now (the close above was its last job), so this is quick.
                executor.shutdown(wait=True)

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[Tx]:
        """Open a transaction that commits on success and rolls back on error."""
        async with self._lock:
            await self._call(self._begin, write)
            try:
                yield _SQLiteTx(self)
            except BaseException:
                # A failed rollback must not hide why the transaction failed.
                with contextlib.suppress(StoreError):
                    await self._call(self._end, False)
                raise
            await self._call(self._end, True)
