"""The small interface each database engine implements for the SQL engine (bastion.sql.engine).

A Driver runs one statement at a time on the user's session connection and streams its rows in
batches; it reports each result column's origin as the server gave it. Server errors become
DriverError with the server's own message (the engine scrubs it before anyone sees it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from bastion.sql.catalog import Catalog
from bastion.sql.errors import SqlError

__all__ = ["BATCH_ROWS", "ColumnOrigin", "Driver", "DriverError", "Pending", "RawRows"]

BATCH_ROWS = 1000
RawRows = list[tuple[Any, ...]]


@dataclass(frozen=True)
class ColumnOrigin:
    """What the database reports about one result column's origin."""

    name: str
    oid: int | None = None  # PostgreSQL table OID (None or 0: none reported)
    attnum: int | None = None
    schema: str | None = None  # MySQL db
    table: str | None = None  # MySQL org_table
    column: str | None = None  # MySQL org_name


class DriverError(SqlError):
    """The server refused or failed a statement; `message` is the server's (unscrubbed) text."""

    def __init__(self, message: str, *, hint: str | None = None, cancelled: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.cancelled = cancelled


@dataclass
class Pending:
    """A statement that is running: its columns are known, its rows come in batches."""

    origins: list[ColumnOrigin]
    first: RawRows
    status: str = ""
    rowcount: int | None = None
    done: bool = False


class Driver(Protocol):
    """One database session of one user, plus what the engine needs around it."""

    dialect: str

    @property
    def in_transaction(self) -> bool:
        """Whether the session is inside a transaction block."""

    async def start(self, sql: str) -> Pending:
        """Send one statement; return once its columns and first batch (or its status) are known."""

    async def more(self, pending: Pending) -> RawRows:
        """The next batch of rows ([] once done, when status and rowcount are final)."""

    async def stop(self, pending: Pending) -> None:
        """Abandon the rest of a running statement's rows (cancelling it on the server)."""

    async def cancel(self) -> None:
        """Cancel whatever the session is running now, from outside (Ctrl-C, session end)."""

    def take_notices(self) -> list[str]:
        """Notices and warnings the server sent since the last call (unscrubbed)."""

    async def load_catalog(self) -> Catalog:
        """Read the database's relations and functions on a separate connection."""

    async def readable_columns(self) -> list[tuple[str, str, str]]:
        """(schema, table, column) of every column the session's login may read, on a separate
        connection (the database's own view of its privileges)."""

    async def close(self) -> None:
        """Close every connection the driver holds."""
