"""Resolving views to their base columns, from the view's definition, failing closed.

A view column that is a plain column of one of the view's tables maps to that column (so masking
follows it through the view); any other view column is "computed" and counts as reading masked
data when the view reads any table with masked columns. A view whose definition the bastion cannot
read or parse is opaque: all its columns are masked whenever masking is active.
"""

from __future__ import annotations

from collections import Counter

import sqlglot
from sqlglot import exp

from bastion.sql.catalog import Catalog, Relation, Source, ViewInfo
from bastion.sql.lexing import DIALECTS

__all__ = ["resolve_views"]


def resolve_views(catalog: Catalog, definitions: dict[tuple[str, str], str], dialect: str) -> None:
    """Fill `catalog.views` for every view with a definition (views over views included)."""
    trees: dict[tuple[str, str], exp.Expression | None] = {}
    for key, text in definitions.items():
        trees[key] = _parse(text, dialect)
    views = [r for r in catalog.relations if r.kind == "view" and r.key in definitions]
    # Relations whose names differ only in case share a key: the bastion cannot tell which one a
    # statement reads, so such views are opaque (every column masked).
    shared = {key for key, n in Counter(r.key for r in catalog.relations).items() if n > 1}
    for _ in range(8):  # views over views: repeat until nothing changes
        changed = False
        for rel in views:
            info = _view_info(rel, None if rel.key in shared else trees.get(rel.key), catalog)
            if catalog.views.get(rel.key) != info:
                catalog.views[rel.key] = info
                changed = True
        if not changed:
            break


def _parse(text: str, dialect: str) -> exp.Expression | None:
    if not text.strip():
        return None
    try:
        tree = sqlglot.parse_one(text.strip().rstrip(";"), read=DIALECTS[dialect])
    except Exception:
        return None
    return tree if isinstance(tree, exp.Query) else None


def _view_info(rel: Relation, tree: exp.Expression | None, catalog: Catalog) -> ViewInfo:
    names = [name for _, name in rel.columns]
    if tree is None:
        unreadable = Source("computed", rel.schema, rel.name, reads_masked=True, opaque=True)
        return ViewInfo(columns=tuple((n, unreadable) for n in names), reads_masked=True, opaque=True)
    tables = _tables(tree, catalog)
    unknown_table = any(not catalog.find(t.db or None, t.name) for t in tree.find_all(exp.Table)
                        if isinstance(t.this, exp.Identifier))
    reads_masked = unknown_table or any(catalog.relation_masked(t) for t in tables.values())
    opaque = bool({f.lower() for f in _function_names(tree)} & catalog.functions)
    computed = Source("computed", rel.schema, rel.name, reads_masked=reads_masked, opaque=opaque)
    columns: list[tuple[str, Source]] = []
    projections = tree.expressions if isinstance(tree, exp.Select) else []
    plain = len(projections) == len(names) and not any(isinstance(p, exp.Star) for p in projections)
    for i, name in enumerate(names):
        src = computed
        if plain:
            node = projections[i]
            node = node.this if isinstance(node, exp.Alias) else node
            if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
                base = _column_table(node, tables)
                if base is not None:
                    src = Source("column", base.schema, base.name, node.name)
        columns.append((name, src))
    return ViewInfo(columns=tuple(columns), reads_masked=reads_masked, opaque=opaque)


def _tables(tree: exp.Expression, catalog: Catalog) -> dict[str, Relation]:
    """Tables the definition reads, by alias and by name (lower case)."""
    found: dict[str, Relation] = {}
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            continue
        rels = catalog.find(table.db or None, table.name)
        if not rels:
            continue
        if len({r.key for r in rels}) > 1 and not table.db:
            # Unqualified, and several schemas have it: which one the view reads depends on a
            # search_path the bastion does not know. Read as all of them (the masked one wins).
            masked = [r for r in rels if catalog.relation_masked(r)]
            rels = masked or rels
        found[table.name.lower()] = rels[0]
        if table.alias:
            found[table.alias.lower()] = rels[0]
    return found


def _column_table(col: exp.Column, tables: dict[str, Relation]) -> Relation | None:
    if col.table:
        return tables.get(col.table.lower())
    distinct = {r.key: r for r in tables.values()}
    return next(iter(distinct.values())) if len(distinct) == 1 else None


def _function_names(tree: exp.Expression) -> set[str]:
    names: set[str] = set()
    for func in tree.find_all(exp.Func):
        if isinstance(func, exp.Anonymous):
            names.add(str(func.this))
        else:
            names.add(func.sql_name())
    return names
