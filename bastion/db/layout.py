"""The masked layout of one SQL target: which tables get masked views, and the SQL that builds them.

Pure: `plan_layout` takes the target's base tables (as the admin account reads them) and the
masking rules; `provisioning_sql` turns the layout into statements. Nothing here opens a socket.

PostgreSQL: each schema with masked tables gets a schema `<schema>_masked` holding one
`security_barrier` view per masked table, named like the table; sessions put it first on their
`search_path`, so `customers` means the masked view and unmasked tables resolve as before.
MySQL/MariaDB: a database `<database>_masked` holds a `SQL SECURITY DEFINER` view for every table
(pass-through for tables without masked columns, so joins work) and is the session's default
database. Each masked column becomes its strategy's expression; each also gets a lookup column
`<column>__lookup` so that `WHERE ssn = '…'` can be rewritten by the bastion into a comparison of
keyed hashes. A lookup column is NULL except on rows whose hash the session named first (the
bastion sets `bastion.lookups` on PostgreSQL, `@bastion_lookups` on MySQL, to the hashes of the
values the user typed): it answers "is this the value I named?" and nothing more, so a whole-row
reference or an aggregate over it shows no more than the masks. The hash key sits in a state
table that only the views' owner reads: view text names the table, never the key.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from bastion.config import MaskingRule
from bastion.sql.lookups import LOOKUP_SETTING, LOOKUP_SUFFIX, LOOKUP_VARIABLE

__all__ = ["Layout", "MaskedTable", "Table", "plan_layout", "provisioning_sql", "strategy_for"]

MASKED_SUFFIX = "_masked"
STATE_SCHEMA = "bastion_masking"  # PostgreSQL: the schema of the state table
MYSQL_STATE_TABLE = "bastion_state"  # MySQL: the state table, in the masked database
LAYOUT_VERSION = "3"
_IPAD, _OPAD = 0x36, 0x5C
# When several rules match one column the strictest wins (fail closed): redact and null reveal
# nothing, hash reveals equality, partial reveals the last characters.
STRATEGY_STRENGTH = {"redact": 3, "null": 3, "hash": 2, "partial": 1}


@dataclass(frozen=True)
class Table:
    """A base table (or materialized view) of the target, as the admin account reads it."""

    schema: str
    name: str
    columns: tuple[str, ...]
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # MySQL: (index name, its columns)


@dataclass(frozen=True)
class MaskedTable:
    """A table and, per column, its masking strategy (None: shown as stored)."""

    table: Table
    strategies: tuple[str | None, ...]

    @property
    def masked(self) -> tuple[str, ...]:
        """The masked columns' names."""
        return tuple(c for c, s in zip(self.table.columns, self.strategies, strict=True) if s)

    @property
    def order_revealing(self) -> tuple[str, ...]:
        """Indexes on a masked column: a scan along one returns rows in the raw values' order."""
        masked = {c.lower() for c in self.masked}
        return tuple(name for name, cols in self.table.indexes
                     if masked & {c.lower() for c in cols})

    @property
    def plain(self) -> tuple[str, ...]:
        """The columns shown as stored."""
        return tuple(c for c, s in zip(self.table.columns, self.strategies, strict=True) if not s)


@dataclass(frozen=True)
class Layout:
    """Everything provisioning creates on one target."""

    dialect: str  # "postgres" or "mysql"
    database: str
    tables: tuple[MaskedTable, ...]  # every base table; those with masked columns get a view

    @property
    def masked(self) -> tuple[MaskedTable, ...]:
        """Tables with at least one masked column."""
        return tuple(t for t in self.tables if t.masked)

    @property
    def viewed(self) -> tuple[MaskedTable, ...]:
        """Tables that get a view: the masked ones (PostgreSQL), every one (MySQL)."""
        return self.tables if self.dialect == "mysql" else self.masked

    def view_schema(self, schema: str) -> str:
        """Where the views of `schema` live."""
        return (self.database if self.dialect == "mysql" else schema) + MASKED_SUFFIX

    @property
    def view_schemas(self) -> tuple[str, ...]:
        """The schemas (databases on MySQL) provisioning owns, in a stable order."""
        return tuple(sorted({self.view_schema(t.table.schema) for t in self.viewed}))

    @property
    def search_path(self) -> tuple[str, ...]:
        """PostgreSQL: the masked schemas, then the schemas they mask, then public."""
        masked = sorted({t.table.schema for t in self.masked})
        path = [self.view_schema(s) for s in masked] + masked
        return tuple(dict.fromkeys([*path, "public"]))

    @property
    def fingerprint(self) -> str:
        """A digest of what the views must be: the check compares it with what was applied."""
        text = "\n".join(
            f"{t.table.schema}.{t.table.name}:" + ",".join(
                f"{c}={s or ''}" for c, s in zip(t.table.columns, t.strategies, strict=True))
            + ":" + ",".join(t.order_revealing)
            for t in self.viewed)
        return hashlib.sha256(f"{LAYOUT_VERSION}:{self.dialect}\n{text}".encode()).hexdigest()

    def state_table(self) -> str:
        """The qualified name of the table holding the hash key and the fingerprint."""
        if self.dialect == "mysql":
            return f"{_q(self.dialect, self.database + MASKED_SUFFIX)}.{MYSQL_STATE_TABLE}"
        return f"{STATE_SCHEMA}.state"


def plan_layout(dialect: str, database: str, tables: list[Table],
                rules: tuple[MaskingRule, ...]) -> Layout:
    """Match every column of every table with the masking rules (strictest rule wins)."""
    planned = []
    for table in sorted(tables, key=lambda t: (t.schema, t.name)):
        if table.schema.endswith(MASKED_SUFFIX) or table.schema == STATE_SCHEMA:
            continue
        strategies = tuple(strategy_for(rules, f"{table.schema}.{table.name}.{c}".lower())
                           for c in table.columns)
        planned.append(MaskedTable(table, strategies))
    return Layout(dialect, database, tuple(planned))


@lru_cache(maxsize=4096)
def strategy_for(rules: tuple[MaskingRule, ...], name: str) -> str | None:
    """How `schema.table.column` (lower case) is masked by the rules, or None."""
    best: str | None = None
    for rule in rules:
        if any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in rule.columns):
            if best is None or STRATEGY_STRENGTH[rule.strategy] > STRATEGY_STRENGTH[best]:
                best = rule.strategy
    return best


def _pads(key: bytes) -> tuple[bytes, bytes]:
    block = key.ljust(64, b"\0")  # keys are 32 bytes: HMAC pads them to the block size
    return bytes(b ^ _IPAD for b in block), bytes(b ^ _OPAD for b in block)


def provisioning_sql(layout: Layout, key: bytes) -> list[str]:
    """The statements that create or bring up to date the masked views and the state table,
    idempotently. `key` (32 bytes) is written into the state table only."""
    if len(key) > 64:
        raise ValueError("the masking key must be at most 64 bytes")
    inner, outer = _pads(key)
    if layout.dialect == "postgres":
        return _postgres(layout, inner, outer)
    return _mysql(layout, inner, outer)


def _q(dialect: str, name: str) -> str:
    if dialect == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def _postgres(layout: Layout, inner: bytes, outer: bytes) -> list[str]:
    def q(name: str) -> str:
        return _q("postgres", name)

    state = layout.state_table()
    out = [
        f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}",
        f"REVOKE ALL ON SCHEMA {STATE_SCHEMA} FROM PUBLIC",
        f"CREATE TABLE IF NOT EXISTS {state} (inner_key bytea NOT NULL, outer_key bytea NOT NULL, "
        "fingerprint text NOT NULL)",
        f"REVOKE ALL ON {state} FROM PUBLIC",
        f"DELETE FROM {state}",
        f"INSERT INTO {state} VALUES ('\\x{inner.hex()}', '\\x{outer.hex()}', "
        f"'{layout.fingerprint}')",
    ]
    for schema in layout.view_schemas:
        out.append(f"CREATE SCHEMA IF NOT EXISTS {q(schema)}")
        out.append(f"REVOKE ALL ON SCHEMA {q(schema)} FROM PUBLIC")
    # Views of tables that lost their masked columns (or were dropped) go; the rest are rebuilt.
    out.append(_drop_stale_postgres(layout))
    for masked in layout.viewed:
        t = masked.table
        source = f"{q(t.schema)}.{q(t.name)}"
        view = f"{q(layout.view_schema(t.schema))}.{q(t.name)}"
        select = _select_list(masked, q, lambda strategy, ref: _pg_mask(strategy, ref, state),
                              lambda ref: _pg_lookup(ref, state))
        out.append(f"DROP VIEW IF EXISTS {view}")
        out.append(f"CREATE VIEW {view} WITH (security_barrier) AS SELECT {select} FROM {source} t")
        out.append(f"REVOKE ALL ON {view} FROM PUBLIC")
    return out


def _select_list(masked: MaskedTable, q: Callable[[str], str],
                 mask: Callable[[str, str], str], lookup: Callable[[str], str]) -> str:
    """A view's columns: each as stored or as its mask, then a lookup column per masked column
    (last, so that `SELECT *` positions match the table's)."""
    columns, lookups = [], []
    for column, strategy in zip(masked.table.columns, masked.strategies, strict=True):
        ref = f"t.{q(column)}"
        if strategy is None:
            columns.append(f"{ref} AS {q(column)}")
            continue
        columns.append(f"{mask(strategy, ref)} AS {q(column)}")
        lookups.append(f"{lookup(ref)} AS {q(column + LOOKUP_SUFFIX)}")
    return ", ".join(columns + lookups)


def _drop_stale_postgres(layout: Layout) -> str:
    """A DO block dropping views in masked schemas that the layout no longer has."""
    keep = ", ".join(f"'{layout.view_schema(m.table.schema)}.{m.table.name}'" for m in layout.viewed)
    keep = keep or "''"
    return ("DO $bastion$ DECLARE r record; BEGIN FOR r IN SELECT n.nspname, c.relname "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind = 'v' AND n.nspname LIKE '%{MASKED_SUFFIX}' "
            f"AND n.nspname || '.' || c.relname NOT IN ({keep}) LOOP "
            "EXECUTE format('DROP VIEW %I.%I', r.nspname, r.relname); END LOOP; END $bastion$")


def _pg_text(ref: str) -> str:
    return f"{ref}::text"


def _pg_null(ref: str) -> str:
    """`ref IS NULL`, also naming the row's ctid: an index-only scan cannot return a system
    column, so no plan reads a masked column from an index (rows in raw-value order), whatever
    the session's planner settings (`enable_seqscan = off`)."""
    return f"({ref} IS NULL OR t.ctid IS NULL)"


def _pg_hash(ref: str, state: str) -> str:
    data = f"convert_to({_pg_text(ref)}, 'UTF8')"
    mac = (f"sha256((SELECT outer_key FROM {state}) || "
           f"sha256((SELECT inner_key FROM {state}) || {data}))")
    return f"CASE WHEN {_pg_null(ref)} THEN NULL ELSE 'h:' || left(encode({mac}, 'hex'), 16) END"


def _pg_lookup(ref: str, state: str) -> str:
    named = f"coalesce(current_setting('{LOOKUP_SETTING}', true), '')"
    mac = _pg_hash(ref, state)
    return f"CASE WHEN {named} = '' THEN NULL WHEN strpos({named}, {mac}) > 0 THEN {mac} END"


def _pg_mask(strategy: str, ref: str, state: str) -> str:
    text = _pg_text(ref)
    if strategy == "partial":
        return (f"CASE WHEN {_pg_null(ref)} THEN NULL WHEN char_length({text}) >= 8 "
                f"THEN '*****' || right({text}, 4) ELSE '****' END")
    if strategy == "hash":
        return _pg_hash(ref, state)
    if strategy == "null":
        return "NULL::text"
    return f"CASE WHEN {_pg_null(ref)} THEN NULL ELSE '****' END"


def _mysql(layout: Layout, inner: bytes, outer: bytes) -> list[str]:
    def q(name: str) -> str:
        return _q("mysql", name)

    masked_db = q(layout.database + MASKED_SUFFIX)
    state = layout.state_table()
    out = [
        f"CREATE DATABASE IF NOT EXISTS {masked_db}",
        f"CREATE TABLE IF NOT EXISTS {state} (inner_key VARBINARY(64) NOT NULL, "
        "outer_key VARBINARY(64) NOT NULL, fingerprint VARCHAR(64) NOT NULL)",
        f"DELETE FROM {state}",
        f"INSERT INTO {state} VALUES (X'{inner.hex()}', X'{outer.hex()}', '{layout.fingerprint}')",
        f"DROP FUNCTION IF EXISTS {masked_db}.bastion_lookup",
        f"CREATE FUNCTION {masked_db}.bastion_lookup(h VARCHAR(20)) RETURNS VARCHAR(20) "
        f"NOT DETERMINISTIC NO SQL SQL SECURITY INVOKER "
        f"RETURN IF(FIND_IN_SET(h, COALESCE(@{LOOKUP_VARIABLE}, '')) > 0, h, NULL)",
    ]
    for masked in layout.viewed:
        t = masked.table
        select = _select_list(masked, q, lambda strategy, ref: _my_mask(strategy, ref, state),
                              lambda ref: f"{masked_db}.bastion_lookup({_my_hash(ref, state)})")
        # Rows come in primary-key order, never along an index on a masked column (whose order
        # would rank the raw values: `LIMIT 1`, GROUP_CONCAT and row order would show it).
        hint = ""
        if masked.order_revealing:
            hint = " IGNORE INDEX (" + ", ".join(q(i) for i in masked.order_revealing) + ")"
        out.append(f"CREATE OR REPLACE SQL SECURITY DEFINER VIEW {masked_db}.{q(t.name)} AS SELECT "
                   f"{select} FROM {q(t.schema)}.{q(t.name)} t{hint}")
    return out


def _my_text(ref: str) -> str:
    return f"CONVERT({ref} USING utf8mb4)"


def _my_hash(ref: str, state: str) -> str:
    inner = f"UNHEX(SHA2(CONCAT((SELECT inner_key FROM {state}), {_my_text(ref)}), 256))"
    mac = f"SHA2(CONCAT((SELECT outer_key FROM {state}), {inner}), 256)"
    return f"CASE WHEN {ref} IS NULL THEN NULL ELSE CONCAT('h:', LEFT({mac}, 16)) END"


def _my_mask(strategy: str, ref: str, state: str) -> str:
    text = _my_text(ref)
    if strategy == "partial":
        return (f"CASE WHEN {ref} IS NULL THEN NULL WHEN CHAR_LENGTH({text}) >= 8 "
                f"THEN CONCAT('*****', RIGHT({text}, 4)) ELSE '****' END")
    if strategy == "hash":
        return _my_hash(ref, state)
    if strategy == "null":
        return "CAST(NULL AS CHAR)"
    return f"CASE WHEN {ref} IS NULL THEN NULL ELSE '****' END"
