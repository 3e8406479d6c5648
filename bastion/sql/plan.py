"""Masking decisions for one statement: may it run, and how is each result column masked.

The database says where each result column comes from (PostgreSQL: table OID and attribute
number; MySQL: org_table and org_name); `Source` carries that, resolved through the catalog.
What the database cannot say is decided here from the statement's parse tree, failing closed:

- Masked columns may be selected (and come back masked), counted, tested with IS NULL, and
  compared for equality with literal values or parameters (counted against a lookup budget).
  Any other use (functions, casts, operators, CASE, JSON/XML builders, joins, GROUP BY,
  DISTINCT, ORDER BY, LIKE, ranges) is refused: such expressions are how masked values leak, as
  computed columns or as oracles (`WHERE ssn LIKE '1%'`, errors raised conditionally, orderings).
- Masked columns are read-only, and statements that would copy masked values somewhere masking
  does not apply (INSERT … SELECT, UPDATE … SET note = ssn, CREATE TABLE AS, SELECT … INTO, user
  variables, settings) are refused.
- Code the bastion cannot read (DO blocks, CREATE FUNCTION, calls of user-defined functions) and
  statements it cannot parse are refused when they might touch masked data.
- A result column without a source (computed) is masked whenever its own expression, or the
  statement when its projections cannot be matched to result columns, reads a masked table;
  otherwise the content detectors scrub it.

Everything here is pure: tests call it with an Analysis and a Catalog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from bastion.sql.analysis import READ_KINDS, Analysis
from bastion.sql.catalog import SYSTEM_SCHEMAS, Catalog, Resolution, Source, resolve
from bastion.sql.lexing import STRING_LITERALS

__all__ = ["ColumnOrigin", "MaskingContext", "column_strategy", "masking_context", "source_of"]

MAX_IN_LIST = 50
_UNICODE_NAME = re.compile(r'(?i)\bU&"')
# Functions that run SQL given as a string: the bastion cannot check what they read.
_SQL_TEXT_FUNCTIONS = frozenset({
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "table_to_xml",
    "table_to_xmlschema", "table_to_xml_and_xmlschema", "schema_to_xml", "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema", "database_to_xml", "database_to_xmlschema",
    "database_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema", "ts_stat",
    "ts_rewrite", "dblink", "dblink_exec", "pg_catalog.query_to_xml",
})
_SIDE_EFFECT_FUNCTIONS = frozenset({
    "set_config", "pg_notify", "pg_logical_emit_message", "setval", "pg_advisory_lock",
    "pg_advisory_xact_lock", "pg_try_advisory_lock", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
    "sleep", "benchmark", "get_lock", "dblink", "dblink_exec", "lo_from_bytea", "lo_put",
})
_STATISTICS = frozenset({"pg_stats", "pg_statistic", "pg_stats_ext", "pg_stats_ext_exprs",
                         "pg_statistic_ext_data", "pg_mcv_list_items", "column_stats",
                         "innodb_index_stats"})
# Where the server shows the text of other sessions' statements. Every bastion session logs in
# as the target's one account, so these would show one user the literals another user typed,
# an unmasked session's included.
_OTHER_SESSIONS = frozenset({"pg_stat_activity", "pg_stat_statements", "pg_stat_statements_info",
                             "processlist", "performance_schema", "events_statements_current",
                             "events_statements_history", "events_statements_history_long",
                             "pg_prepared_statements", "pg_cursors"})
_COUNTS = (exp.Count,)
_EQUALITY = (exp.EQ, exp.NEQ, exp.NullSafeEQ, exp.NullSafeNEQ, exp.Is, exp.In)


@dataclass(frozen=True)
class ColumnOrigin:
    """What the database reports about one result column's origin."""

    name: str
    oid: int | None = None  # PostgreSQL table OID (None or 0: none reported)
    attnum: int | None = None
    schema: str | None = None  # MySQL db
    table: str | None = None  # MySQL org_table
    column: str | None = None  # MySQL org_name


def source_of(origin: ColumnOrigin, catalog: Catalog) -> Source:
    """Resolve a reported origin to a base column, a view's column, or no source."""
    if origin.oid:
        rel = catalog.by_oid(origin.oid)
        if rel is None:
            return Source("unknown")
        name = rel.column(origin.attnum or 0)
        if name is None:
            return Source("unknown")
        return _through_view(Source("column", rel.schema, rel.name, name), catalog, origin.attnum)
    if origin.table:
        rels = catalog.find(origin.schema, origin.table)
        if not rels:
            return Source("unknown")
        rel = rels[0]
        column = origin.column or origin.name
        return _through_view(Source("column", rel.schema, rel.name, column), catalog, None)
    return Source("none")


def _through_view(src: Source, catalog: Catalog, attnum: int | None, depth: int = 0) -> Source:
    if src.schema.lower() in SYSTEM_SCHEMAS:
        return src  # the server's own catalogs hold names, not data (statistics are refused)
    view = catalog.views.get((src.schema.lower(), src.table.lower()))
    rels = catalog.find(src.schema, src.table)
    if view is None:
        if rels and rels[0].kind == "view":
            return Source("computed", src.schema, src.table, src.column, reads_masked=True, opaque=True)
        return src
    inner = view.source(src.column)
    if inner.kind == "unknown" and attnum is not None:
        inner = view.source_at(attnum)
    if inner.kind == "column" and depth < 8:
        return _through_view(inner, catalog, None, depth + 1)
    if inner.kind == "unknown":
        return Source("computed", src.schema, src.table, src.column,
                      reads_masked=view.reads_masked, opaque=True)
    return inner


@dataclass(frozen=True)
class MaskingContext:
    """What the statement as a whole means for masking."""

    refusal: str | None
    touches_masked: bool
    projections: tuple[bool, ...] | None  # per result column: reads masked data (None: unknown)
    quiet: bool  # withhold notices (they may carry values the statement read)
    lookups: int = 0  # values a masked column is compared with (counted against a session budget)


def masking_context(analysis: Analysis, catalog: Catalog,
                    prepared: dict[str, Analysis] | None = None) -> MaskingContext:
    """Decide whether a statement may run under the catalog's masking, and what its columns read."""
    if not catalog.policy.masking_active:
        return MaskingContext(None, False, None, False)
    if {"get", "diagnostics"} <= analysis.words:
        return _refuse("GET DIAGNOSTICS copies the server's warnings, which quote the values a "
                       "statement read, into variables")
    if _UNICODE_NAME.search(analysis.lexed.text):
        return _refuse('U&"…" names can spell any table, column or function past the bastion\'s '
                       "checks; write names plainly")
    if analysis.functions & _SQL_TEXT_FUNCTIONS:
        calls = sorted(analysis.functions & _SQL_TEXT_FUNCTIONS)
        return _refuse(f"{calls[0]}() runs SQL from a string, which the bastion cannot check")
    target = analysis.innermost()
    if analysis.kind in ("execute", "fetch") or target.kind in ("execute", "fetch"):
        stored = (prepared or {}).get(prepared_key(target.kind, target.name or ""))
        if stored is None:
            return MaskingContext(None, True, None, True)  # fail closed: every computed column masked
        target = stored.innermost()
        if not _literal_arguments(analysis):
            return _refuse("EXECUTE arguments must be literal values while masking is on: "
                           "expressions there are not checked like the statement's own")
    # MySQL compares a string column with a number as numbers ('123-45-6789' = 123).
    numeric_args = analysis.lexed.dialect == "mysql" and _numeric_arguments(analysis)
    vocabulary = catalog.vocabulary()
    if any(a.code or a.kind == "do" for a in analysis.chain()) and (
            analysis.words & vocabulary or analysis.kind == "do" or analysis.code):
        return _refuse("it defines or runs code (a function, procedure, trigger or DO block) that the "
                       "bastion cannot inspect, on a target with masked columns")
    if analysis.words & _STATISTICS:
        return _refuse("planner statistics (pg_stats, pg_statistic) hold sample values of masked "
                       "columns")
    if analysis.words & _OTHER_SESSIONS:
        return _refuse("it shows the statements of other sessions, which may quote masked values "
                       "other users typed")
    resolution = resolve(target, catalog)
    if resolution.unknown and resolution.unknown.startswith("it calls user-defined"):
        return _refuse(f"{resolution.unknown}, which may read masked columns the bastion cannot see")
    if tree_name := _names_masked_table(target.ast, catalog):
        return _refuse(f"a table or view named {tree_name} would fall under the masking rules or "
                       "shadow a relation with masked columns (names compare without case): "
                       "choose another name")
    altered = [rel for rel in resolution.altered if catalog.relation_masked(rel)]
    if altered:
        return _refuse(f"{altered[0].name} has masked columns; renaming or altering it could move "
                       "them out of the masking rules")
    tree = target.ast
    # Without a parse tree, any masked table or column name, view or user function counts.
    words_touch = bool(target.words & (vocabulary | resolution.masked_names | resolution.row_names))
    if tree is None:
        if target.kind in ("show", "describe"):  # metadata: names and types, not values
            return MaskingContext(None, False, None, False)
        if words_touch or (target.kind in ("select", "other", "call") and resolution.unknown):
            return _refuse("the bastion could not parse it, so it cannot check how it uses masked "
                           "columns")
        return MaskingContext(None, bool(resolution.unknown), None, bool(resolution.unknown))
    masked = _masked_names(tree, resolution, catalog)
    if masked:
        masked |= _unresolved_names(tree, resolution)
    uses = list(_masked_uses(tree, masked, resolution.row_names))
    touches = bool(uses) or _star_reads_in(tree, resolution) or resolution.unknown is not None
    writes = bool(target.kinds - READ_KINDS) or bool(analysis.kinds - READ_KINDS) or bool(target.into)
    if written := _masked_write(tree, catalog):
        return _refuse(f"{written} is masked, so it is read-only here: a value written into it and "
                       "read back (masked or hashed, or as a duplicate-key error) would test a guess. "
                       "Request access with --unmasked to change it")
    if writes and _star_reads_in(tree, resolution):
        return _refuse("it would copy masked columns (through * or TABLE) where masking does not apply")
    if refusal := _implicit_join_refusal(tree, masked, resolution):
        return _refuse(refusal)
    lookups = 0
    if touches:
        if refusal := _use_refusal(target, uses, analysis):
            return _refuse(refusal)
        lookups = sum(_compared_values(col) for col in uses)
        if lookups and numeric_args:
            return _refuse("EXECUTE … USING with a number compares the masked column as a number "
                           "(a prefix test): pass quoted strings")
    projections = _projection_reads(tree, masked, resolution) if not resolution.unknown else None
    if _orders_by_masked_position(tree, projections):
        return _refuse("ordering by a masked column would reveal the order of its values")
    return MaskingContext(None, touches, projections, touches, lookups)


_ARGUMENT_TOKENS = frozenset(getattr(TokenType, n) for n in (
    "STRING", "NATIONAL_STRING", "NUMBER", "NULL", "TRUE", "FALSE", "COMMA", "L_PAREN", "R_PAREN",
    "DASH", "PLUS") if hasattr(TokenType, n))


def _execute_arguments(analysis: Analysis) -> list[Token]:
    """The argument tokens of an EXECUTE (PostgreSQL `EXECUTE p(…)`, MySQL `EXECUTE p USING …`)."""
    if analysis.kind != "execute":
        return []
    tokens = list(analysis.lexed.tokens or ())
    if analysis.lexed.dialect != "mysql":
        return tokens[2:]  # EXECUTE name ( … )
    words = [t.text.upper() for t in tokens]
    return tokens[words.index("USING") + 1:] if "USING" in words else []


def _literal_arguments(analysis: Analysis) -> bool:
    """Whether an EXECUTE passes only literal values."""
    return all(t.token_type in _ARGUMENT_TOKENS for t in _execute_arguments(analysis))


def _numeric_arguments(analysis: Analysis) -> bool:
    """Whether an EXECUTE … USING passes anything but quoted strings."""
    return any(t.token_type not in STRING_LITERALS and t.text != ","
               for t in _execute_arguments(analysis))


def prepared_key(kind: str, name: str) -> str:
    """Prepared statements and cursors live in separate namespaces (as in PostgreSQL)."""
    return ("cursor:" if kind in ("declare", "fetch", "close") else "prepared:") + name


def column_strategy(src: Source, position: int, ctx: MaskingContext, catalog: Catalog) -> str | None:
    """How result column `position` is masked: a strategy, "scrub" (detectors only) or None."""
    policy = catalog.policy
    if not policy.masking_active:
        return None
    if src.kind == "column":
        strategy = catalog.strategy(src.schema, src.table, src.column)
        if strategy:
            return strategy
        return None
    if src.kind == "computed":
        return "redact" if src.reads_masked or src.opaque else "scrub"
    reads: bool | None = None
    if ctx.projections is not None and position < len(ctx.projections):
        reads = ctx.projections[position]
    if reads is None:
        reads = ctx.touches_masked or src.kind == "unknown"
    return "redact" if reads else "scrub"


def _refuse(why: str) -> MaskingContext:
    return MaskingContext(f"masked data: {why}.", True, None, True)


def _masked_names(tree: exp.Expression, resolution: Resolution, catalog: Catalog) -> frozenset[str]:
    """Masked column names, plus every name a statement gives to a masked value: projection
    aliases, and column alias lists of tables, views, derived tables, CTEs and LATERAL."""
    names = set(resolution.masked_names)
    for _ in range(8):
        before = len(names)
        for select in tree.find_all(exp.Select):
            for projection in select.expressions:
                if _refs(projection, names, resolution.row_names) and projection.alias_or_name:
                    names.add(projection.alias_or_name.lower())
        for alias in tree.find_all(exp.TableAlias):
            columns = alias.columns
            if not columns:
                continue
            masked = _alias_positions(alias.parent, names, resolution, catalog)
            for i, col in enumerate(columns):
                if masked is None or i in masked:
                    names.add(col.name.lower())
        if len(names) == before:
            break
    return frozenset(names)


def _alias_positions(source: exp.Expression | None, names: set[str], resolution: Resolution,
                     catalog: Catalog) -> set[int] | None:
    """Which positions of an aliased relation carry masked values (None: all of them)."""
    if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
        rels = catalog.find(source.db or None, source.name)
        if not rels:
            return None if names or resolution.unknown else set()
        rel = rels[0]
        if rel.kind == "view":
            view = catalog.views.get(rel.key)
            if view is None:
                return None if catalog.relation_masked(rel) else set()
            return {i for i, (_, src) in enumerate(view.columns) if catalog.source_masked(src)}
        return {i for i, (_, col) in enumerate(rel.columns) if catalog.strategy(rel.schema, rel.name, col)}
    query = source.this if source is not None else None
    while isinstance(query, exp.Subquery | exp.Paren):
        query = query.this
    if isinstance(query, exp.Select) and not any(
            isinstance(p, exp.Star) or (isinstance(p, exp.Column) and isinstance(p.this, exp.Star))
            for p in query.expressions):
        return {i for i, p in enumerate(query.expressions) if _refs(p, names, resolution.row_names)}
    if query is None or _refs(query, names, resolution.row_names) or _star_reads_in(query, resolution):
        return None
    return set()


def _unresolved_names(tree: exp.Expression, resolution: Resolution) -> frozenset[str]:
    """Column names that are neither columns of the statement's tables nor names it defines.

    They count as masked (fail closed): quoting tricks such as PostgreSQL's U&"\\0073sn" name a
    column the parser does not recognise, and only the server knows which one it is.
    """
    known = {name.lower() for rel in resolution.relations for _, name in rel.columns}
    known |= resolution.row_names
    for node in tree.find_all(exp.Alias, exp.TableAlias, exp.CTE):
        if node.alias:
            known.add(node.alias.lower())
        for col in node.args.get("columns") or []:
            known.add(col.name.lower())
    unknown = set()
    for col in tree.find_all(exp.Column):
        if not isinstance(col.this, exp.Star) and col.name.lower() not in known:
            unknown.add(col.name.lower())
    return frozenset(unknown)


def _refs(node: exp.Expression, names: set[str] | frozenset[str], rows: frozenset[str]) -> bool:
    return any(True for _ in _masked_uses(node, frozenset(names), rows))


def _masked_uses(node: exp.Expression, names: frozenset[str], rows: frozenset[str]):  # type: ignore[no-untyped-def]
    """Column references that read masked values: a masked column, or a masked table's whole row."""
    for col in node.find_all(exp.Column):
        name = col.name.lower()
        if isinstance(col.this, exp.Star):
            if col.table.lower() in rows:
                yield col
            continue
        if name in names or (not col.table and name in rows):
            yield col


def _use_refusal(target: Analysis, uses: list[exp.Column], analysis: Analysis) -> str | None:
    """Why the statement's uses of masked columns are refused (None: they are all safe)."""
    if target.kinds - READ_KINDS or analysis.kinds - READ_KINDS or target.into:
        for col in uses:
            if not _is_write_target(col) and not _in_predicate(col):
                return ("it would copy masked values where masking does not apply (into a table, "
                        "a variable or a setting)")
    if analysis.functions & _SIDE_EFFECT_FUNCTIONS:
        calls = sorted(analysis.functions & _SIDE_EFFECT_FUNCTIONS)
        return f"{calls[0]}() can carry masked values out of the result"
    if any(w.startswith("@") for w in analysis.words) or "@" in analysis.lexed.words:
        return "user variables can carry masked values out of the result"
    for col in uses:
        if _is_write_target(col):
            continue
        if why := _unsafe_use(col, analysis.lexed.dialect):
            return why
    return None


def _masked_write(tree: exp.Expression, catalog: Catalog) -> str | None:
    """The masked column an INSERT, UPDATE or MERGE would write, if any, wherever it sits
    (data-modifying CTEs included), through a view or a multi-table UPDATE's other tables."""
    for node in tree.find_all(exp.Insert, exp.Update, exp.Merge):
        if written := _written_masked(node, catalog):
            return written
    return None


def _relation_masked_columns(table: exp.Table, catalog: Catalog) -> set[str]:
    """Masked columns of a table, or of a view (its columns over masked data); all columns of
    an opaque view."""
    masked: set[str] = set()
    for rel in catalog.find(table.db or None, table.name):
        if rel.kind != "view":
            masked.update(catalog.masked_columns(rel))
            continue
        view = catalog.views.get(rel.key)
        if view is None or view.opaque:
            if catalog.relation_masked(rel):
                masked.update(name.lower() for _, name in rel.columns)
            continue
        masked.update(col.lower() for col, src in view.columns if catalog.source_masked(src))
    return masked


def _written_masked(node: exp.Expression, catalog: Catalog) -> str | None:
    target = node.this.this if isinstance(node.this, exp.Schema) else node.this
    if not isinstance(target, exp.Table):
        return None
    if isinstance(node, exp.Update):
        # A multi-table UPDATE may SET the columns of any of its tables: resolve each target.
        tables: dict[str, set[str]] = {}
        for table in node.find_all(exp.Table):
            if not isinstance(table.this, exp.Identifier):
                continue
            cols = _relation_masked_columns(table, catalog)
            for key in {table.name.lower(), (table.alias or table.name).lower()}:
                tables.setdefault(key, set()).update(cols)
        for item in node.expressions:
            left = item.this if isinstance(item, exp.EQ) else None
            if not isinstance(left, exp.Column):
                continue
            scope = [tables.get(left.table.lower(), set())] if left.table else list(tables.values())
            if any(left.name.lower() in cols for cols in scope):
                return str(left.name)
        return None
    masked = _relation_masked_columns(target, catalog)
    if not masked:
        return None
    if isinstance(node, exp.Merge):
        return sorted(masked)[0]
    columns = node.this.expressions if isinstance(node.this, exp.Schema) else None
    if columns is None:
        return sorted(masked)[0]  # every column, masked ones included
    for col in columns:
        if col.name.lower() in masked:
            return str(col.name)
    for eq in node.find_all(exp.EQ):  # ON CONFLICT / ON DUPLICATE KEY … SET
        left = eq.this
        if isinstance(left, exp.Column) and left.name.lower() in masked and (
                eq.find_ancestor(exp.OnConflict) is not None):
            return str(left.name)
    return None


def _implicit_join_refusal(tree: exp.Expression, masked: frozenset[str],
                           resolution: Resolution) -> str | None:
    """JOIN … USING (ssn) and NATURAL JOIN compare columns the parse tree never names."""
    for join in tree.find_all(exp.Join):
        using = {ident.name.lower() for ident in join.args.get("using") or []}
        if using & masked:
            return f"{sorted(using & masked)[0]} is masked: it cannot be a join column"
        if str(join.args.get("method") or "").upper() == "NATURAL" and (masked or resolution.star_masked):
            return "NATURAL JOIN would compare masked columns implicitly; name the join columns"
    return None


def _names_masked_table(tree: exp.Expression | None, catalog: Catalog) -> str | None:
    """The name a CREATE or RENAME gives a relation, when the masking rules cover that name or a
    relation with masked data already has it (in any letter case)."""
    if tree is None:
        return None
    names: list[exp.Table] = []
    for create in tree.find_all(exp.Create):
        target = create.this.this if isinstance(create.this, exp.Schema) else create.this
        if isinstance(target, exp.Table):
            names.append(target)
    names.extend(node.this for node in tree.find_all(exp.AlterRename)
                 if isinstance(node.this, exp.Table))
    for select in tree.find_all(exp.Select):
        into = select.args.get("into")
        if isinstance(into, exp.Into) and isinstance(into.this, exp.Table):
            names.append(into.this)
    for table in names:
        if catalog.policy.covers_table(table.db or "*", table.name) or any(
                catalog.relation_masked(rel) for rel in catalog.find(None, table.name)):
            return str(table.name)
    return None


def _in_predicate(col: exp.Column) -> bool:
    """Whether a column reference sits in a WHERE, HAVING or JOIN condition (read, not copied)."""
    node: exp.Expression | None = col
    while node is not None:
        if node.arg_key in ("where", "having", "on") or isinstance(node, exp.Where | exp.Having):
            return True
        if isinstance(node, exp.Select | exp.Insert | exp.Update | exp.Merge):
            return False
        node = node.parent
    return False


def _is_write_target(col: exp.Column) -> bool:
    """SET ssn = … of an UPDATE, or the column list of an INSERT."""
    parent = col.parent
    if isinstance(parent, exp.EQ) and col.arg_key == "this" and isinstance(parent.parent, exp.Update):
        return bool(parent.arg_key == "expressions")
    return isinstance(parent, exp.Schema) and isinstance(parent.parent, exp.Insert)


def _unsafe_use(col: exp.Column, dialect: str) -> str | None:
    name = col.sql()
    node: exp.Expression = col
    parent = node.parent
    while isinstance(parent, exp.Paren | exp.Alias):
        node, parent = parent, parent.parent
    if parent is None:
        return None
    if isinstance(parent, exp.Select) and node.arg_key == "expressions":
        if parent.args.get("distinct"):
            return f"{name} is masked: DISTINCT over it would return rows in the order of its values"
        return _subquery_compared(parent, name)
    counted = isinstance(parent, exp.Distinct) and isinstance(parent.parent, _COUNTS)
    if isinstance(parent, _COUNTS) or counted:
        return None
    if isinstance(parent, exp.Group):
        return f"{name} is masked: grouping by it would return rows in the order of its values"
    if isinstance(parent, _EQUALITY):
        return _comparison_refusal(parent, node, name, dialect)
    if isinstance(parent, exp.Ordered) or isinstance(parent, exp.Order):
        return f"ordering by {name} would reveal the order of masked values"
    return (f"{name} is masked: it may be selected, compared for equality, joined, grouped or "
            "counted, but not used in other expressions")


def _orders_by_masked_position(tree: exp.Expression, projections: tuple[bool, ...] | None) -> bool:
    """`SELECT ssn … ORDER BY 1`: a position that names a projection reading masked data."""
    order = tree.args.get("order") if isinstance(tree, exp.Select) else None
    if order is None:
        return False
    for item in order.expressions:
        node = item.this if isinstance(item, exp.Ordered) else item
        if isinstance(node, exp.Literal) and not node.is_string:
            position = int(node.name) if node.name.isdigit() else 0
            if projections is None or not 1 <= position <= len(projections) or projections[position - 1]:
                return True
    return False


def _operands(parent: exp.Expression, node: exp.Expression) -> list[exp.Expression]:
    """The other side(s) of a comparison: its expressions, IN-list items or subquery."""
    out: list[exp.Expression] = []
    for value in parent.args.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, exp.Expression) and item is not node:
                out.extend(item.expressions if isinstance(item, exp.Tuple) else [item])
    return out


def _comparison_refusal(parent: exp.Expression, node: exp.Expression, name: str,
                        dialect: str) -> str | None:
    """Equality of a masked column with literal values (or parameters) and NULL; nothing else.

    Comparing with a column (a join against generate_series, VALUES or the user's own table of
    guesses) would test thousands of guesses in one statement, and joins and semi-joins between
    masked columns may return rows in the order of their values (merge joins); MySQL's numeric
    and boolean comparisons convert the string ('123-45-6789' = 123 is true), which turns
    equality into a prefix test.
    """
    operands = _operands(parent, node)
    if len(operands) > MAX_IN_LIST:
        return (f"{name} is masked: it may be compared with at most {MAX_IN_LIST} values at once")
    for other in operands:
        if isinstance(other, exp.Null):
            continue
        if isinstance(parent, exp.Is):
            return f"{name} is masked: only IS NULL and IS NOT NULL may test it"
        if isinstance(other, exp.Literal | exp.HexString | exp.Placeholder | exp.Parameter):
            if dialect == "mysql" and isinstance(other, exp.Literal) and not other.is_string:
                return (f"{name} is masked: compare it with a quoted string (MySQL converts strings "
                        "to numbers, which would let a number match a prefix)")
            continue
        return (f"{name} is masked: it may be compared for equality only with literal values or "
                "NULL")
    return None


def _compared_values(col: exp.Column) -> int:
    """How many literal values a masked column reference is compared with."""
    node: exp.Expression = col
    parent = col.parent
    while isinstance(parent, exp.Paren):
        node, parent = parent, parent.parent
    if not isinstance(parent, _EQUALITY):
        return 0
    return sum(1 for o in _operands(parent, node)
               if isinstance(o, exp.Literal | exp.HexString | exp.Placeholder | exp.Parameter))


def _subquery_compared(select: exp.Select, name: str) -> str | None:
    """A masked column selected by a subquery whose value is then used by an expression."""
    parent = select.parent
    while parent is not None:
        if isinstance(parent, exp.Subquery | exp.Paren):
            parent = parent.parent
            continue
        if isinstance(parent, exp.Union | exp.Intersect | exp.Except):
            return f"{name} is masked: set operations (UNION, INTERSECT, EXCEPT) over it are not allowed"
        if isinstance(parent, exp.From | exp.Join | exp.CTE | exp.With | exp.Lateral):
            return None  # a derived table: its output names are tracked as masked
        if isinstance(parent, exp.Insert | exp.Create):
            return None  # copying is decided by the write rule
        return f"{name} is masked: a subquery selecting it may not be used inside an expression"
    return None


def _projection_reads(tree: exp.Expression, masked: frozenset[str],
                      resolution: Resolution) -> tuple[bool, ...] | None:
    """Per top-level projection, whether it reads masked data (None when they cannot be matched)."""
    if not isinstance(tree, exp.Select):
        return None
    if any(isinstance(p, exp.Star) or (isinstance(p, exp.Column) and isinstance(p.this, exp.Star))
           for p in tree.expressions):
        return None
    return tuple(any(not _counted(c) for c in _masked_uses(p, masked, resolution.row_names))
                 or _star_reads_in(p, resolution) for p in tree.expressions)


def _counted(col: exp.Column) -> bool:
    """count(ssn), count(DISTINCT ssn): how many values, not what they are."""
    parent = col.parent
    while isinstance(parent, exp.Paren | exp.Distinct):
        parent = parent.parent
    return isinstance(parent, _COUNTS)


def _star_reads_in(node: exp.Expression, resolution: Resolution) -> bool:
    return any(not isinstance(s.parent, _COUNTS) and resolution.star_masked for s in node.find_all(exp.Star))
