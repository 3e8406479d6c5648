"""The SQL engine: every statement a user sends goes through `SqlConnection.execute`.

For each statement: split, analyse (bastion.sql.analysis), check the guardrails, rewrite equality
lookups on masked columns (bastion.sql.lookups, counted against the grant's budget), send the
comment-free text the bastion analysed, and stream the rows. The database masks: a masked grant's
account reads masked views (bastion.db). The engine adds what a database cannot: errors and
notices scrubbed of values, content detectors on computed values of masked grants, literals kept
out of column headers. The catalog (relations and functions, for names and origins) is read on a
separate connection at the start, and again after DDL or when the server reports a relation the
bastion does not know.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any, Protocol

from bastion.config import Target
from bastion.sql.analysis import Analysis, analyse
from bastion.sql.catalog import Catalog
from bastion.sql.detectors import scrub_value
from bastion.sql.driver import ColumnOrigin, Driver, DriverError, Pending, RawRows
from bastion.sql.errors import SqlError
from bastion.sql.guardrails import check_guardrails, prepared_key
from bastion.sql.lexing import split_statements
from bastion.sql.lookups import Lookups
from bastion.sql.policy import SqlPolicy
from bastion.sql.results import Column, RowBatches, StatementResult
from bastion.sql.scrub import scrub_message

__all__ = ["Budget", "LookupBudget", "SqlConnection", "open_sql_connection"]

# Literal values a session may compare masked columns with (WHERE ssn = '…', IN lists): enough
# for looking people up, far too few to enumerate the values the masks leave open.
LOOKUP_BUDGET = 500
_DDL = frozenset({"create", "alter", "drop", "rename", "truncate"})
_TEXT_KINDS = frozenset({"show", "explain", "describe"})  # results that are server text, not table data


class Budget(Protocol):
    """Where a grant's lookups are counted."""

    limit: int

    async def spend(self, count: int) -> tuple[bool, int]:
        """Count `count` more if the grant stays within `limit`; return whether it did and how
        many were used before."""
        ...


class LookupBudget:
    """Literal values compared with masked columns, counted for one access grant: every session
    opened with the same approved request draws on it, so a new session does not reset it. This
    one counts in memory; the bastion's sessions count in the state store (`StoreLookupBudget`)."""

    def __init__(self, limit: int = LOOKUP_BUDGET) -> None:
        self.limit = limit
        self.used = 0

    async def spend(self, count: int) -> tuple[bool, int]:
        """Count `count` more if the grant stays within its limit; return whether it did and
        how many were used before."""
        before = self.used
        if before + count > self.limit:
            return False, before
        self.used += count
        return True, before


async def open_sql_connection(target: Target, policy: SqlPolicy,
                              budget: Budget | None = None,
                              lookups: Lookups | None = None) -> SqlConnection:
    """Log in to a database target and read its catalog. With `lookups`, the database masks (the
    session logs in with its grant's account) and equality on masked columns is rewritten."""
    driver: Driver
    if target.kind == "postgres":
        from bastion.sql.postgres import PostgresDriver

        driver = await PostgresDriver.open(target, policy)
    elif target.kind == "mysql":
        from bastion.sql.mysql import MysqlDriver

        driver = await MysqlDriver.open(target, policy)
    else:
        raise SqlError(f"target {target.name} is not a database (kind {target.kind})")
    try:
        catalog = await driver.load_catalog()
    except BaseException:
        await driver.close()
        raise
    return SqlConnection(driver, policy, catalog, budget, lookups)


class SqlConnection:
    """A user's database session as the bastion runs it."""

    def __init__(self, driver: Driver, policy: SqlPolicy, catalog: Catalog,
                 budget: Budget | None = None, lookups: Lookups | None = None) -> None:
        self.driver = driver
        self.rewriter = lookups
        self.policy = policy
        self.catalog = catalog
        self.dialect = driver.dialect
        self.prepared: dict[str, Analysis] = {}  # by prepared_key: what EXECUTE/FETCH will run
        self.budget: Budget = budget or LookupBudget()
        self._catalog_names: frozenset[str] | None = None  # emptied whenever the catalog is read

    @property
    def in_transaction(self) -> bool:
        """Whether the user has a transaction open."""
        return self.driver.in_transaction

    async def cancel(self) -> None:
        """Cancel the running statement on the server (the session goes on)."""
        await self.driver.cancel()

    async def close(self) -> None:
        """End the database session."""
        await self.driver.close()

    async def readable_columns(self) -> list[tuple[str, str, str]]:
        """(schema, table, column) the session may read, the bastion's lookup columns left out."""
        hidden = self.rewriter.lookup_columns if self.rewriter is not None else frozenset()
        return [row for row in await self.driver.readable_columns() if row[2].lower() not in hidden]

    async def execute(self, sql: str) -> AsyncGenerator[StatementResult, None]:
        """Run each statement of `sql` in turn; read each result's rows before the next."""
        for text in split_statements(sql, self.dialect):
            result = await self.run(analyse(text, self.dialect))
            try:
                yield result
            finally:
                await result.drain()

    async def describe(self, name: str | None) -> StatementResult:
        """List tables (name None) or describe one table's columns, for both engines."""
        if name is None:
            sql = ("SELECT table_schema AS schema, table_name AS name, table_type AS type "
                   "FROM information_schema.tables WHERE table_schema NOT IN "
                   "('pg_catalog', 'information_schema', 'mysql', 'performance_schema', 'sys') "
                   "ORDER BY 1, 2")
        else:
            schema, _, table = name.rpartition(".")
            quoted = "'" + table.replace("'", "''").replace("\\", "") + "'"
            where = f"table_name = {quoted}"
            if schema:
                where += " AND table_schema = '" + schema.replace("'", "''").replace("\\", "") + "'"
            elif self.dialect == "mysql":
                where += " AND table_schema = DATABASE()"
            else:
                # The first schema of the search path that has it (a masked view before its table).
                where += (" AND table_schema = (SELECT s FROM unnest(current_schemas(false)) "
                          "WITH ORDINALITY AS u(s, i) WHERE EXISTS (SELECT 1 FROM "
                          f"information_schema.columns c WHERE c.table_schema = u.s AND "
                          f"c.table_name = {quoted}) ORDER BY u.i LIMIT 1)")
            if self.rewriter is not None:
                where += "".join(" AND column_name <> '" + c.replace("'", "''") + "'"
                                 for c in sorted(self.rewriter.lookup_columns))
            sql = ("SELECT column_name AS name, data_type AS type, is_nullable AS nullable "
                   f"FROM information_schema.columns WHERE {where} ORDER BY ordinal_position")
        return await self.run(analyse(sql, self.dialect))

    async def run(self, analysis: Analysis) -> StatementResult:
        """Run one analysed statement through the guardrails, the lookups and the server."""
        redacted = analysis.lexed.redacted
        kind = analysis.kind
        blocked = check_guardrails(analysis, self.policy, self.catalog.functions, self._prepared)
        if "\x00" in analysis.lexed.text:
            # libpq ends the text at a NUL: the server would run less than the bastion checked.
            blocked = "The statement contains a NUL byte."
        text = analysis.lexed.clean
        hashes: list[str] = []
        if blocked is None and self.rewriter is not None:
            text, hashes = self.rewriter.rewrite(text, self.dialect)
        if blocked is None and hashes:
            spent, used = await self.budget.spend(len(hashes))
            if not spent:
                blocked = (f"masked data: this access grant has compared masked columns with "
                           f"{used} values, and the limit is {self.budget.limit} per grant "
                           "(a guard against guessing values); ask for a new grant to go on.")
        if blocked is not None:
            # Reasons may quote the user's names; never a value (they reach the query log).
            return StatementResult.refused(redacted, kind,
                                           scrub_message(blocked, self._names(analysis)))
        started = time.perf_counter()
        result = StatementResult(redacted=redacted, kind=kind)
        try:
            if hashes:
                await self._quietly(Lookups.naming(hashes, self.dialect))
            pending = await self.driver.start(text)
        except DriverError as exc:
            result.error = self._scrub_error(exc, analysis)
            result.duration_ms = (time.perf_counter() - started) * 1000
            result.notices = self._notices()
            return result
        self._remember(analysis)
        if pending.origins and _unknown_relation(pending, self.catalog):
            await self._reload_catalog()
        scrubbers = self._scrubbers(pending, analysis)
        # MySQL names a computed column after its own text (`ssn = '…'`): no literal in headers.
        names = self._names(analysis)
        shown = self._shown(pending)
        result.columns = [Column(scrub_message(o.name, names), self._masked_by_database(o))
                          for i, o in enumerate(pending.origins) if shown is None or i in shown]
        result._batches = self._stream(result, pending, scrubbers, analysis, started, shown)
        if pending.done:
            self._finish(result, pending, started)  # commands: status is final now
        return result

    async def _reload_catalog(self) -> None:
        """Read the catalog again (after DDL, or a relation the bastion did not know)."""
        self.catalog = await self.driver.load_catalog()
        self._catalog_names = None

    def _prepared(self, name: str) -> Analysis | None:
        return self.prepared.get(name)

    def _remember(self, analysis: Analysis) -> None:
        """Keep what PREPARE and DECLARE … CURSOR will run, for EXECUTE and FETCH later."""
        name = analysis.name
        if analysis.kind in ("prepare", "declare") and name and analysis.inner is not None:
            self.prepared[prepared_key(analysis.kind, name)] = analysis.inner
        elif analysis.kind in ("deallocate", "close") and name:
            key = prepared_key(analysis.kind, name)
            if name == "all":
                prefix = key.removesuffix("all")
                for stale in [k for k in self.prepared if k.startswith(prefix)]:
                    del self.prepared[stale]
            self.prepared.pop(key, None)

    def _scrubbers(self, pending: Pending, analysis: Analysis) -> list[Any]:
        """Per result column, what scrubs its values (None: shown as the database sent them).
        Plans, warnings and SHOW output are server text about the statement: values quoted in
        them go. Computed values of a masked grant pass the content detectors, a last net."""
        text_result = analysis.innermost().kind in _TEXT_KINDS or analysis.kind in _TEXT_KINDS
        out: list[Any] = []
        for origin in pending.origins:
            computed = not (origin.oid or origin.table)
            if text_result and computed:
                out.append(self._text_scrubber(analysis))
            elif computed and self.rewriter is not None:
                out.append(scrub_value)
            else:
                out.append(None)
        return out

    async def _quietly(self, sql: str) -> None:
        """Run a statement of the bastion's own and drop its result."""
        pending = await self.driver.start(sql)
        while not pending.done:
            await self.driver.more(pending)
        self.driver.take_notices()

    def _masked_by_database(self, origin: ColumnOrigin) -> str | None:
        """The strategy a masked view applied to a result column, for the recording and the TUI."""
        if self.rewriter is None:
            return None
        if origin.oid:
            rel = self.catalog.by_oid(origin.oid)
            column = rel.column(origin.attnum or 0) if rel is not None else None
            if rel is None or column is None:
                return None
            return self.rewriter.strategy(rel.schema, rel.name, column)
        if origin.table:
            return self.rewriter.strategy(origin.schema, origin.table, origin.column or origin.name)
        return None

    def _shown(self, pending: Pending) -> list[int] | None:
        """Result columns to show: all (None) but the masked views' lookup columns, which hold
        hashes for the bastion's lookups rather than anything a person reads."""
        if self.rewriter is None:
            return None
        hidden = self.rewriter.lookup_columns
        shown = [i for i, o in enumerate(pending.origins) if o.name.lower() not in hidden]
        return None if len(shown) == len(pending.origins) else shown

    def _text_scrubber(self, analysis: Analysis) -> Any:
        names = self._names(analysis)

        def scrub(value: Any) -> Any:
            return scrub_message(value, names) if isinstance(value, str) else scrub_value(value)

        return scrub

    async def _stream(self, result: StatementResult, pending: Pending, scrubbers: list[Any],
                      analysis: Analysis, started: float,
                      shown: list[int] | None = None) -> RowBatches:
        limit = self.policy.max_rows
        sent = 0
        batch: RawRows = pending.first
        pending.first = []
        active = [(i, fn) for i, fn in enumerate(scrubbers) if fn is not None]
        try:
            while True:
                if batch:
                    if limit is not None and sent + len(batch) > limit:
                        batch = batch[: limit - sent]
                        result.truncated = True
                    if active:
                        batch = _scrubbed(batch, active)
                    if shown is not None:
                        batch = [tuple(row[i] for i in shown) for row in batch]
                    sent += len(batch)
                    yield batch
                if result.truncated or pending.done:
                    break
                try:
                    batch = await self.driver.more(pending)
                except DriverError as exc:
                    result.error = self._scrub_error(exc, analysis)
                    break
        finally:
            if not pending.done:
                await self.driver.stop(pending)
            self._finish(result, pending, started)
            if result.truncated:
                result.rowcount = sent
            if analysis.kind in _DDL or analysis.code:
                await self._reload_catalog()

    def _finish(self, result: StatementResult, pending: Pending, started: float) -> None:
        result.status = pending.status
        result.rowcount = pending.rowcount
        result.duration_ms = (time.perf_counter() - started) * 1000
        result.notices.extend(self._notices())

    def _notices(self) -> list[str]:
        notices = self.driver.take_notices()
        names = self._catalog_words()
        return [scrub_message(n, names) for n in notices]

    def _catalog_words(self) -> frozenset[str]:
        """The catalog's relations, schemas and columns (built once per catalog read)."""
        if self._catalog_names is None:
            names = {r.name.lower() for r in self.catalog.relations}
            names.update(r.schema.lower() for r in self.catalog.relations)
            for rel in self.catalog.relations:
                names.update(c.lower() for _, c in rel.columns)
            self._catalog_names = frozenset(names)
        return self._catalog_names

    def _names(self, analysis: Analysis) -> frozenset[str]:
        """Names a server message may quote without revealing a value: the catalog's and the
        statement's own words."""
        return self._catalog_words() | analysis.words

    def _scrub_error(self, exc: DriverError, analysis: Analysis) -> str:
        if exc.cancelled:
            return "canceling statement due to user request"
        names = self._names(analysis)
        message = scrub_message(exc.message, names)
        if exc.hint:
            message += f"\nHINT: {scrub_message(exc.hint, names)}"
        return message


def _unknown_relation(pending: Pending, catalog: Catalog) -> bool:
    for origin in pending.origins:
        if origin.oid and catalog.by_oid(origin.oid) is None:
            return True
    return False


def _scrubbed(batch: RawRows, active: list[tuple[int, Any]]) -> RawRows:
    """Scrub a batch column by column (zip and map run in C)."""
    columns = list(zip(*batch, strict=True))
    for i, fn in active:
        columns[i] = tuple(map(fn, columns[i]))
    return list(zip(*columns, strict=True))
