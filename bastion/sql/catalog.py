"""What the database holds, as far as masking cares: relations, their masked columns, views, and
user-defined functions; and where each result column comes from (its Source).

The engines load a Catalog from the database (PostgreSQL pg_catalog, MySQL information_schema)
on a second connection, so that the user's session state is never disturbed; this module only
holds and queries the data. Names compare case-insensitively everywhere (fail closed: a rule for
`customers` also covers a table created as `"Customers"`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bastion.sql.analysis import Analysis
from bastion.sql.policy import STRATEGY_STRENGTH, SqlPolicy

__all__ = ["Catalog", "Relation", "Resolution", "Source", "ViewInfo", "resolve"]

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast", "performance_schema",
                            "mysql", "sys"})


@dataclass(frozen=True)
class Source:
    """Where one result column's values come from.

    kind: "column" (a base table column), "row" (a whole row of a table), "computed" (an expression
    of a view: reads_masked says whether it reads masked columns, opaque whether it calls code the
    bastion cannot inspect), "none" (the database reports no source) or "unknown" (it reports one
    the bastion cannot resolve).
    """

    kind: str
    schema: str = ""
    table: str = ""
    column: str = ""
    reads_masked: bool = False
    opaque: bool = False


NO_SOURCE = Source("none")
UNKNOWN_SOURCE = Source("unknown")


@dataclass(frozen=True)
class Relation:
    """A table, view or other relation of the database."""

    schema: str
    name: str
    kind: str  # "table", "view" (views and materialized views) or "other"
    oid: int | None = None
    columns: tuple[tuple[int, str], ...] = ()  # (attnum or ordinal position, name)

    @property
    def key(self) -> tuple[str, str]:
        """Case-folded (schema, name)."""
        return self.schema.lower(), self.name.lower()

    def column(self, number: int) -> str | None:
        """The name of the column with this attnum/ordinal."""
        return next((name for num, name in self.columns if num == number), None)


@dataclass(frozen=True)
class ViewInfo:
    """What a view's columns are made of (resolved to base tables where possible)."""

    columns: tuple[tuple[str, Source], ...]
    reads_masked: bool
    opaque: bool = False

    def source(self, name: str) -> Source:
        """The source of a view column by name (unknown if absent)."""
        wanted = name.lower()
        return next((src for col, src in self.columns if col.lower() == wanted), UNKNOWN_SOURCE)

    def source_at(self, position: int) -> Source:
        """The source of the view's position-th column (1-based)."""
        if 1 <= position <= len(self.columns):
            return self.columns[position - 1][1]
        return UNKNOWN_SOURCE


@dataclass
class Catalog:
    """The relations of one database with the masking policy applied to them."""

    relations: tuple[Relation, ...]
    functions: frozenset[str]
    policy: SqlPolicy
    views: dict[tuple[str, str], ViewInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._vocabulary: frozenset[str] | None = None
        self._by_name: dict[str, list[Relation]] = {}
        self._by_oid: dict[int, Relation] = {}
        self._masked: dict[tuple[str, str], dict[str, str]] = {}
        for rel in self.relations:
            self._by_name.setdefault(rel.name.lower(), []).append(rel)
            if rel.oid is not None:
                self._by_oid[rel.oid] = rel
            if rel.schema.lower() in SYSTEM_SCHEMAS:
                continue
            masked = {}
            for _, col in rel.columns:
                strategy = self.policy.strategy_for(rel.schema, rel.name, col)
                if strategy:
                    masked[col.lower()] = strategy
            if masked:
                # Names compare case-insensitively, so "Customers" and customers share a key:
                # merge (strictest strategy wins), never let one relation replace another's.
                merged = self._masked.setdefault(rel.key, {})
                for col, strategy in masked.items():
                    old = merged.get(col)
                    if old is None or STRATEGY_STRENGTH[strategy] > STRATEGY_STRENGTH[old]:
                        merged[col] = strategy

    def find(self, schema: str | None, name: str) -> list[Relation]:
        """Relations with this name (in this schema, if given)."""
        found = self._by_name.get(name.lower(), [])
        return [r for r in found if schema is None or r.schema.lower() == schema.lower()]

    def by_oid(self, oid: int) -> Relation | None:
        """A PostgreSQL relation by OID."""
        return self._by_oid.get(oid)

    def masked_columns(self, rel: Relation) -> dict[str, str]:
        """Masked columns of a base relation: case-folded name → strategy."""
        return self._masked.get(rel.key, {})

    def strategy(self, schema: str, table: str, column: str) -> str | None:
        """How a base column is masked, or None."""
        return self._masked.get((schema.lower(), table.lower()), {}).get(column.lower())

    def table_masked(self, schema: str, table: str) -> bool:
        """Whether a base table (or a view over masked data) has masked columns."""
        key = (schema.lower(), table.lower())
        if key in self._masked:
            return True
        view = self.views.get(key)
        return view is not None and (view.reads_masked or view.opaque)

    def source_masked(self, src: Source) -> bool:
        """Whether values from this source carry masked data."""
        if src.kind == "column":
            return self.strategy(src.schema, src.table, src.column) is not None
        if src.kind == "row":
            return self.table_masked(src.schema, src.table)
        if src.kind == "computed":
            return src.reads_masked or src.opaque
        return src.kind == "unknown" and self.policy.masking_active

    def relation_masked(self, rel: Relation) -> bool:
        """Whether a relation has masked columns (for a view: whether it shows masked data)."""
        if rel.schema.lower() in SYSTEM_SCHEMAS:
            return False
        if rel.kind == "view":
            view = self.views.get(rel.key)
            return view is None or view.reads_masked or view.opaque or any(
                self.source_masked(src) for _, src in view.columns)
        return bool(self.masked_columns(rel))

    def vocabulary(self) -> frozenset[str]:
        """Names that show a statement may touch masked data: masked tables and columns, every
        view, and every user-defined function. Computed once: every statement asks."""
        if self._vocabulary is not None:
            return self._vocabulary
        words: set[str] = set(self.functions)
        for rel in self.relations:
            if rel.kind == "view" and rel.schema.lower() not in SYSTEM_SCHEMAS:
                words.add(rel.name.lower())
            masked = self._masked.get(rel.key)
            if masked:
                words.add(rel.name.lower())
                words.update(masked)
        self._vocabulary = frozenset(words)
        return self._vocabulary


@dataclass(frozen=True)
class Resolution:
    """The statement's names resolved against the catalog."""

    relations: tuple[Relation, ...]
    altered: tuple[Relation, ...]
    masked_names: frozenset[str]
    row_names: frozenset[str]
    star_masked: bool
    unknown: str | None  # why the statement touches something the bastion cannot resolve


def views_touched(analysis: Analysis, catalog: Catalog) -> list[Relation]:
    """Views the statement names (their columns must be resolved before `resolve`)."""
    return [rel for rel in _touched(analysis, catalog) if rel.kind == "view"]


def _touched(analysis: Analysis, catalog: Catalog) -> Iterable[Relation]:
    for ref in analysis.tables:
        yield from catalog.find(ref.schema, ref.name)


def resolve(analysis: Analysis, catalog: Catalog) -> Resolution:
    """Resolve the tables a statement names: which of its names carry masked values."""
    relations: list[Relation] = []
    altered: list[Relation] = []
    names: set[str] = set()
    rows: set[str] = set()
    unknown: str | None = None
    for ref in analysis.tables:
        found = catalog.find(ref.schema, ref.name)
        if ref.role == "alter":
            altered.extend(found)
        if ref.role == "create":
            continue
        if not found and ref.name not in analysis.cte_names:
            unknown = unknown or f"table {ref.name!r} is not in the catalog the bastion can see"
        for rel in found:
            relations.append(rel)
            masked = _masked_names(rel, catalog)
            if masked:
                names.update(masked)
                rows.add(ref.alias or ref.name)
                rows.add(ref.name)
    calls = analysis.functions & catalog.functions
    if calls:
        unknown = unknown or f"it calls user-defined function {sorted(calls)[0]}"
    return Resolution(
        relations=tuple(relations),
        altered=tuple(altered),
        masked_names=frozenset(names),
        row_names=frozenset(rows),
        star_masked=bool(rows),
        unknown=unknown,
    )


def _masked_names(rel: Relation, catalog: Catalog) -> set[str]:
    if rel.schema.lower() in SYSTEM_SCHEMAS:
        return set()  # the server's catalogs: names, not data (statistics are refused elsewhere)
    if rel.kind != "view":
        return set(catalog.masked_columns(rel))
    view = catalog.views.get(rel.key)
    if view is None:
        return {name.lower() for _, name in rel.columns} or {"*"}
    return {col.lower() for col, src in view.columns if catalog.source_masked(src)}
