"""Masking decisions for one statement: may it run, and how is each result column masked.

The database says where each result column comes from (PostgreSQL: table OID and attribute
number; MySQL: org_table and org_name); `Source` carries that, resolved through the catalog.
What the database cannot say is decided here from the statement's parse tree, failing closed:

- Masked columns may be selected (and come back masked), compared for equality with a literal
  or another column (`WHERE ssn = '…'`, joins), grouped on, counted, or written to. Any other use
  (functions, casts, operators, CASE, JSON/XML builders, window ordering, LIKE, ranges, ORDER BY)
  is refused: such expressions are how masked values leak, as computed columns or as oracles
  (`WHERE ssn LIKE '1%'`, errors raised conditionally, orderings).
- Statements that would copy masked values somewhere masking does not apply (INSERT … SELECT,
  UPDATE … SET note = ssn, CREATE TABLE AS, SELECT … INTO, user variables, settings) are refused.
- Code the bastion cannot read (DO blocks, CREATE FUNCTION, calls of user-defined functions) and
  statements it cannot parse are refused when they might touch masked data.
- A result column without a source (computed) is masked whenever its own expression, or the
  statement when its projections cannot be matched to result columns, reads a masked table;
  otherwise the content detectors scrub it.

Everything here is pure: tests call it with an Analysis and a Catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from bastion.sql.analysis import READ_KINDS, Analysis
from bastion.sql.catalog import SYSTEM_SCHEMAS, Catalog, Resolution, Source, resolve

__all__ = ["ColumnOrigin", "MaskingContext", "column_strategy", "masking_context", "source_of"]

_SIDE_EFFECT_FUNCTIONS = frozenset({
    "set_config", "pg_notify", "pg_logical_emit_message", "setval", "pg_advisory_lock",
    "pg_advisory_xact_lock", "pg_try_advisory_lock", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
    "sleep", "benchmark", "get_lock", "dblink", "dblink_exec", "lo_from_bytea", "lo_put",
})
_STATISTICS = frozenset({"pg_stats", "pg_statistic", "pg_stats_ext", "pg_stats_ext_exprs",
                         "pg_statistic_ext_data"})
_COUNTS = (exp.Count,)
_EQUALITY = (exp.EQ, exp.NEQ, exp.NullSafeEQ, exp.NullSafeNEQ, exp.Is, exp.In)
_PLAIN_OPERANDS = (exp.Literal, exp.Null, exp.Column, exp.Placeholder, exp.Parameter, exp.Boolean,
                   exp.HexString)
_WRITE_TARGET_KEYS = frozenset({"this"})


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
        rels = [r for r in catalog.find(origin.schema, origin.table)]
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


def masking_context(analysis: Analysis, catalog: Catalog,
                    prepared: dict[str, Analysis] | None = None) -> MaskingContext:
    """Decide whether a statement may run under the catalog's masking, and what its columns read."""
    if not catalog.policy.masking_active:
        return MaskingContext(None, False, None, False)
    target = analysis.innermost()
    if analysis.kind in ("execute", "fetch") or target.kind in ("execute", "fetch"):
        stored = (prepared or {}).get(target.name or "")
        if stored is None:
            return MaskingContext(None, True, None, True)  # fail closed: every computed column masked
        target = stored.innermost()
    vocabulary = catalog.vocabulary()
    if any(a.code or a.kind == "do" for a in _chain(analysis)) and (
            analysis.words & vocabulary or analysis.kind == "do" or analysis.code):
        return _refuse("it defines or runs code (a function, procedure, trigger or DO block) that the "
                       "bastion cannot inspect, on a target with masked columns")
    if analysis.words & _STATISTICS:
        return _refuse("planner statistics (pg_stats, pg_statistic) hold sample values of masked "
                       "columns")
    resolution = resolve(target, catalog)
    if resolution.unknown and resolution.unknown.startswith("it calls user-defined"):
        return _refuse(f"{resolution.unknown}, which may read masked columns the bastion cannot see")
    altered = [rel for rel in resolution.altered if catalog.relation_masked(rel)]
    if altered:
        return _refuse(f"{altered[0].name} has masked columns; renaming or altering it could move "
                       "them out of the masking rules")
    tree = target.ast
    # Without a parse tree, any masked table or column name, view or user function counts.
    words_touch = bool(target.words & (vocabulary | resolution.masked_names | resolution.row_names))
    if tree is None:
        if words_touch or (target.kind in ("select", "other", "call") and resolution.unknown):
            return _refuse("the bastion could not parse it, so it cannot check how it uses masked "
                           "columns")
        return MaskingContext(None, bool(resolution.unknown), None, bool(resolution.unknown))
    masked = _masked_names(tree, resolution)
    if masked:
        masked |= _unresolved_names(tree, resolution)
    uses = list(_masked_uses(tree, masked, resolution.row_names))
    touches = bool(uses) or _star_reads_masked(tree, resolution) or resolution.unknown is not None
    if touches:
        if refusal := _use_refusal(target, uses, analysis):
            return _refuse(refusal)
    projections = _projection_reads(tree, masked, resolution) if not resolution.unknown else None
    if _orders_by_masked_position(tree, projections):
        return _refuse("ordering by a masked column would reveal the order of its values")
    return MaskingContext(None, touches, projections, touches)


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


def _chain(analysis: Analysis) -> list[Analysis]:
    chain = [analysis]
    while chain[-1].inner is not None:
        inner = chain[-1].inner
        assert inner is not None
        chain.append(inner)
    return chain


def _masked_names(tree: exp.Expression, resolution: Resolution) -> frozenset[str]:
    """Masked column names, plus every alias a derived table or CTE gives to a masked value."""
    names = set(resolution.masked_names)
    for _ in range(8):
        before = len(names)
        for select in tree.find_all(exp.Select):
            for projection in select.expressions:
                if _refs(projection, names, resolution.row_names) and projection.alias_or_name:
                    names.add(projection.alias_or_name.lower())
        for cte in tree.find_all(exp.CTE, exp.Subquery):
            alias = cte.args.get("alias")
            columns = alias.columns if isinstance(alias, exp.TableAlias) else []
            query = cte.this
            if columns and isinstance(query, exp.Select):
                for col, projection in zip(columns, query.expressions, strict=False):
                    if _refs(projection, names, resolution.row_names):
                        names.add(col.name.lower())
        if len(names) == before:
            break
    return frozenset(names)


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


def _star_reads_masked(tree: exp.Expression, resolution: Resolution) -> bool:
    for star in tree.find_all(exp.Star):
        if not isinstance(star.parent, _COUNTS) and resolution.star_masked:
            return True
    return False


def _use_refusal(target: Analysis, uses: list[exp.Column], analysis: Analysis) -> str | None:
    if target.kind not in READ_KINDS or analysis.kind not in READ_KINDS or target.into:
        for col in uses:
            if not _is_write_target(col):
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
        if why := _unsafe_use(col):
            return why
    return None


def _is_write_target(col: exp.Column) -> bool:
    """SET ssn = … of an UPDATE, or the column list of an INSERT."""
    parent = col.parent
    if isinstance(parent, exp.EQ) and col.arg_key == "this" and isinstance(parent.parent, exp.Update):
        return bool(parent.arg_key == "expressions")
    return isinstance(parent, exp.Schema) and isinstance(parent.parent, exp.Insert)


def _unsafe_use(col: exp.Column) -> str | None:
    name = col.sql()
    node: exp.Expression = col
    parent = node.parent
    while isinstance(parent, exp.Paren | exp.Alias):
        node, parent = parent, parent.parent
    if parent is None:
        return None
    if isinstance(parent, exp.Select) and node.arg_key == "expressions":
        return _subquery_compared(parent, name)
    counted = isinstance(parent, exp.Distinct) and isinstance(parent.parent, _COUNTS)
    if isinstance(parent, _COUNTS) or counted:
        return None
    if isinstance(parent, exp.Group):
        return None
    if isinstance(parent, _EQUALITY):
        others = [v for k, v in parent.args.items() if v is not None and v is not node]
        flat: list[exp.Expression] = []
        for other in others:
            flat.extend(other if isinstance(other, list) else [other])
        if all(isinstance(o, _PLAIN_OPERANDS) or _literal_tuple(o) for o in flat):
            return None
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


def _literal_tuple(node: exp.Expression) -> bool:
    return isinstance(node, exp.Tuple) and all(isinstance(e, exp.Literal | exp.Null)
                                               for e in node.expressions)


def _subquery_compared(select: exp.Select, name: str) -> str | None:
    """A masked column selected by a subquery whose value is then used by an expression."""
    node: exp.Expression = select
    parent = select.parent
    while parent is not None:
        if isinstance(parent, exp.Subquery | exp.Paren):
            node, parent = parent, parent.parent
            continue
        if isinstance(parent, exp.Union | exp.Intersect | exp.Except):
            return f"{name} is masked: set operations (UNION, INTERSECT, EXCEPT) over it are not allowed"
        if isinstance(parent, exp.From | exp.Join | exp.CTE | exp.With | exp.Lateral):
            return None  # a derived table: its output names are tracked as masked
        if isinstance(parent, exp.In) and node.arg_key == "query":
            return None  # `x IN (SELECT ssn …)`: equality
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
