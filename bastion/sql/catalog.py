"""What the database holds, as far as the SQL engine cares: relations with their columns (names a
server message may quote, and where a PostgreSQL result column comes from) and user-defined
functions (code the guardrails cannot read).

The engines load a Catalog from the database (PostgreSQL pg_catalog, MySQL information_schema)
on a second connection, so that the user's session state is never disturbed; this module only
holds and queries the data.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Catalog", "Relation"]


@dataclass(frozen=True)
class Relation:
    """A table, view or other relation of the database."""

    schema: str
    name: str
    kind: str  # "table", "view" (views and materialized views) or "other"
    oid: int | None = None
    columns: tuple[tuple[int, str], ...] = ()  # (attnum or ordinal position, name)

    def column(self, number: int) -> str | None:
        """The name of the column with this attnum/ordinal."""
        return next((name for num, name in self.columns if num == number), None)


@dataclass
class Catalog:
    """The relations and user-defined functions of one database."""

    relations: tuple[Relation, ...]
    functions: frozenset[str]

    def __post_init__(self) -> None:
        self._by_oid = {rel.oid: rel for rel in self.relations if rel.oid is not None}

    def by_oid(self, oid: int) -> Relation | None:
        """A PostgreSQL relation by OID."""
        return self._by_oid.get(oid)
