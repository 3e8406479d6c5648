"""The SQL engine: every statement a user sends goes through `SqlConnection.execute`.

For each statement: split, analyse (bastion.sql.analysis), check the guardrails and the masking
rules (bastion.sql.plan), send the comment-free text the bastion analysed, then mask each result
column by where the server says it comes from. Errors and notices are scrubbed of values. The
catalog is read on a separate connection at the start, and again after DDL or when the server
reports a relation the bastion does not know.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from bastion.config import Target
from bastion.sql.analysis import Analysis, analyse
from bastion.sql.catalog import Catalog, Source
from bastion.sql.detectors import scrub_value
from bastion.sql.driver import Driver, DriverError, Pending, RawRows
from bastion.sql.errors import SqlError
from bastion.sql.guardrails import check_guardrails
from bastion.sql.lexing import split_statements
from bastion.sql.masking import mask_function
from bastion.sql.plan import (
    MaskingContext,
    column_strategy,
    masking_context,
    prepared_key,
    source_of,
)
from bastion.sql.policy import SqlPolicy
from bastion.sql.results import Column, RowBatches, StatementResult
from bastion.sql.scrub import scrub_message

__all__ = ["LookupBudget", "SqlConnection", "open_sql_connection"]

# Literal values a session may compare masked columns with (WHERE ssn = '…', IN lists): enough
# for looking people up, far too few to enumerate the values the masks leave open.
LOOKUP_BUDGET = 500
REREAD_INTERVAL = 2.0  # seconds between catalog re-reads caused by unknown tables
_DDL = frozenset({"create", "alter", "drop", "rename", "truncate"})
_TEXT_KINDS = frozenset({"show", "explain", "describe"})  # results that are server text, not table data


class LookupBudget:
    """Literal values compared with masked columns, counted for one access grant: every session
    opened with the same approved request draws on it, so a new session does not reset it."""

    def __init__(self, limit: int = LOOKUP_BUDGET) -> None:
        self.limit = limit
        self.used = 0


async def open_sql_connection(target: Target, policy: SqlPolicy,
                              budget: LookupBudget | None = None) -> SqlConnection:
    """Log in to a database target and read its catalog."""
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
        catalog = await driver.load_catalog(policy)
    except BaseException:
        await driver.close()
        raise
    return SqlConnection(driver, policy, catalog, budget)


class SqlConnection:
    """A user's database session as the bastion runs it."""

    def __init__(self, driver: Driver, policy: SqlPolicy, catalog: Catalog,
                 budget: LookupBudget | None = None) -> None:
        self.driver = driver
        self.policy = policy
        self.catalog = catalog
        self.dialect = driver.dialect
        self.prepared: dict[str, Analysis] = {}  # by prepared_key: what EXECUTE/FETCH will run
        self.budget = budget or LookupBudget()
        self.own_tables: set[str] = set()  # created by this session (temporary ones included)
        self._last_reread = float("-inf")
        # Both depend on the catalog and are emptied whenever it is read again.
        self._contexts: dict[str, MaskingContext] = {}
        self._catalog_names: frozenset[str] | None = None

    @property
    def lookups(self) -> int:
        """Values compared with masked columns so far under this grant."""
        return self.budget.used

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
                where += " AND table_schema = ANY (current_schemas(false))"
            sql = ("SELECT column_name AS name, data_type AS type, is_nullable AS nullable "
                   f"FROM information_schema.columns WHERE {where} ORDER BY ordinal_position")
        return await self.run(analyse(sql, self.dialect))

    async def run(self, analysis: Analysis) -> StatementResult:
        """Run one analysed statement through the guardrails, the server and the masking."""
        redacted = analysis.lexed.redacted
        kind = analysis.kind
        blocked = check_guardrails(analysis, self.policy, self.catalog.functions, self._prepared)
        if "\x00" in analysis.lexed.text:
            # libpq ends the text at a NUL: the server would run less than the bastion checked.
            blocked = "The statement contains a NUL byte."
        if blocked is None and self.policy.masking_active:
            blocked = await self._unknown_tables(analysis)
        ctx = self._context(analysis) if blocked is None else None
        if ctx is not None and ctx.refusal:
            blocked = ctx.refusal
        if ctx is not None and blocked is None and ctx.lookups:
            budget = self.budget
            if budget.used + ctx.lookups > budget.limit:
                blocked = (f"masked data: this access grant has compared masked columns with "
                           f"{budget.used} values, and the limit is {budget.limit} per grant "
                           "(a guard against guessing values); ask for a new grant to go on.")
            else:
                budget.used += ctx.lookups
        if blocked is not None or ctx is None:
            # Reasons may quote the user's names; never a value (they reach the query log).
            why = scrub_message(blocked or "refused", self._names(analysis))
            return StatementResult.refused(redacted, kind, why)
        started = time.perf_counter()
        result = StatementResult(redacted=redacted, kind=kind)
        try:
            pending = await self.driver.start(analysis.lexed.clean)
        except DriverError as exc:
            result.error = self._scrub_error(exc, analysis)
            result.duration_ms = (time.perf_counter() - started) * 1000
            result.notices = self._notices(ctx)
            return result
        self._remember(analysis)
        self.own_tables.update(ref.name.lower() for ref in analysis.innermost().tables
                               if ref.role == "create")
        if pending.origins and _unknown_relation(pending, self.catalog):
            await self._reload_catalog()
        maskers = self._maskers(pending, ctx, analysis)
        # MySQL names a computed column after its own text (`ssn = '…'`): no literal in headers.
        names = self._names(analysis)
        result.columns = [Column(scrub_message(o.name, names), m[0])
                          for o, m in zip(pending.origins, maskers, strict=True)]
        result._batches = self._stream(result, pending, maskers, analysis, ctx, started)
        if pending.done:
            self._finish(result, pending, ctx, started)  # commands: status is final now
        return result

    def _context(self, analysis: Analysis) -> MaskingContext:
        """The masking decision, cached per statement text until the catalog is read again."""
        if analysis.innermost().kind in ("execute", "fetch"):
            return masking_context(analysis, self.catalog, self.prepared)
        key = analysis.lexed.text
        ctx = self._contexts.get(key)
        if ctx is None:
            if len(self._contexts) > 1024:
                self._contexts.clear()
            ctx = self._contexts[key] = masking_context(analysis, self.catalog, self.prepared)
        return ctx

    async def _unknown_tables(self, analysis: Analysis) -> str | None:
        """Tables the catalog does not know are read again from the database (someone may have
        created them since); still unknown, they are refused: their columns could hold copies of
        masked data under names no rule matches. Tables this session created are its own."""
        missing = self._missing(analysis)
        now = time.monotonic()
        if missing and now - self._last_reread >= REREAD_INTERVAL:
            # At most one re-read per interval: naming unknown tables must not become a way to
            # keep the bastion reading catalogs.
            self._last_reread = now
            await self._reload_catalog()
            missing = self._missing(analysis)
        if missing:
            return (f"masked data: table {sorted(missing)[0]} is not in the catalog the bastion "
                    "reads, so it cannot tell which of its columns are masked.")
        return None

    async def _reload_catalog(self) -> None:
        """Read the catalog again; what was decided from the old one is forgotten."""
        self.catalog = await self.driver.load_catalog(self.policy)
        self._contexts.clear()
        self._catalog_names = None

    def _missing(self, analysis: Analysis) -> set[str]:
        target = analysis.innermost()
        # Names that are aliases (MySQL's `DELETE c FROM customers c`) or CTEs are not tables.
        aliases = {ref.alias for ref in target.tables if ref.alias} | set(target.derived_names)
        return {ref.name.lower() for ref in target.tables
                if ref.role != "create" and ref.name.lower() not in aliases
                and ref.name.lower() not in self.own_tables
                and not self.catalog.find(ref.schema, ref.name)}

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

    def _maskers(self, pending: Pending, ctx: MaskingContext,
                 analysis: Analysis) -> list[tuple[str | None, Any]]:
        text_result = analysis.innermost().kind in _TEXT_KINDS or analysis.kind in _TEXT_KINDS
        out: list[tuple[str | None, Any]] = []
        for i, origin in enumerate(pending.origins):
            src: Source = source_of(origin, self.catalog)
            strategy = column_strategy(src, i, ctx, self.catalog)
            if text_result and src.kind != "column":
                # Plans, warnings, SHOW output: server text about the statement, not table data
                # (the statement inside EXPLAIN passed the masking checks itself).
                out.append(("scrub", self._text_scrubber(analysis)))
            elif strategy is None:
                out.append((None, None))
            elif strategy == "scrub":
                out.append((None, scrub_value))
            else:
                out.append((strategy, mask_function(strategy, self.policy.hash_key)))
        return out

    def _text_scrubber(self, analysis: Analysis) -> Any:
        names = self._names(analysis)

        def scrub(value: Any) -> Any:
            return scrub_message(value, names) if isinstance(value, str) else scrub_value(value)

        return scrub

    async def _stream(self, result: StatementResult, pending: Pending,
                      maskers: list[tuple[str | None, Any]], analysis: Analysis,
                      ctx: MaskingContext, started: float) -> RowBatches:
        limit = self.policy.max_rows
        sent = 0
        batch: RawRows = pending.first
        pending.first = []
        active = [(i, fn) for i, (_, fn) in enumerate(maskers) if fn is not None]
        try:
            while True:
                if batch:
                    if limit is not None and sent + len(batch) > limit:
                        batch = batch[: limit - sent]
                        result.truncated = True
                    if active:
                        batch = _masked(batch, active)
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
            self._finish(result, pending, ctx, started)
            if result.truncated:
                result.rowcount = sent
            if analysis.kind in _DDL or analysis.code:
                await self._reload_catalog()

    def _finish(self, result: StatementResult, pending: Pending, ctx: MaskingContext,
                started: float) -> None:
        result.status = pending.status
        result.rowcount = pending.rowcount
        result.duration_ms = (time.perf_counter() - started) * 1000
        result.notices.extend(self._notices(ctx))

    def _notices(self, ctx: MaskingContext) -> list[str]:
        notices = self.driver.take_notices()
        if not notices:
            return []
        if ctx.quiet:
            return [f"{len(notices)} server notice(s) withheld: the statement read masked data"]
        names = self.catalog.vocabulary() | frozenset(r.name.lower() for r in self.catalog.relations)
        return [scrub_message(n, names) for n in notices]

    def _names(self, analysis: Analysis) -> frozenset[str]:
        """Names a server message may quote without revealing a value: the catalog's relations,
        schemas and columns (built once per catalog), and the statement's own words."""
        if self._catalog_names is None:
            names = {r.name.lower() for r in self.catalog.relations}
            names.update(r.schema.lower() for r in self.catalog.relations)
            for rel in self.catalog.relations:
                names.update(c.lower() for _, c in rel.columns)
            self._catalog_names = frozenset(names)
        return self._catalog_names | analysis.words

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


def _masked(batch: RawRows, active: list[tuple[int, Any]]) -> RawRows:
    """Mask a batch column by column (zip and map run in C)."""
    columns = list(zip(*batch, strict=True))
    for i, fn in active:
        columns[i] = tuple(map(fn, columns[i]))
    return list(zip(*columns, strict=True))
