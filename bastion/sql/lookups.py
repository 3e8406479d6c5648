"""Lookups on masked columns: `WHERE ssn = '…'` and `ssn IN (…)` against the masked views.

The views show a masked column's mask, so comparing it with a value the user typed would find
nothing. Each masked column has a lookup column beside it in its view, holding the keyed hash of
the stored value; the bastion rewrites the comparison to use it, hashing the user's literals under
the target's key (which only the bastion and the views' owner hold). Every value compared counts
against the grant's lookup budget, so lookups cannot become a way to enumerate values.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from functools import cached_property

import sqlglot
from sqlglot import exp

from bastion.sql.lexing import DIALECTS

__all__ = ["LOOKUP_SUFFIX", "Lookups", "keyed_hash"]

LOOKUP_SUFFIX = "__lookup"
LOOKUP_SETTING = "bastion.lookups"  # PostgreSQL: the hashes the session named, comma-separated
LOOKUP_VARIABLE = "bastion_lookups"  # MySQL: the same, in a user variable


def keyed_hash(key: bytes, value: str) -> str:
    """What the masked views show for a hashed value, computed the same way here: "h:" and the
    first 16 hex digits of HMAC-SHA-256 under the target's key."""
    return "h:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Lookups:
    """The masked columns of one session's target and the key of their hashes."""

    masked: frozenset[str]  # lower-case column names
    key: bytes = field(repr=False)
    # Which columns of the masked views are masked, and how: (schema, view, column), lower case.
    strategies: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def strategy(self, schema: str | None, view: str, column: str) -> str | None:
        """How the database masked a result column of a masked view (None: not masked). MySQL
        reports no database for a computed column: then the view's name decides."""
        if schema:
            return self.strategies.get((schema.lower(), view.lower(), column.lower()))
        return next((s for (_, v, c), s in self.strategies.items()
                     if v == view.lower() and c == column.lower()), None)

    @cached_property
    def lookup_columns(self) -> frozenset[str]:
        """The lookup columns' names (lower case); asked for every result."""
        return frozenset(name + LOOKUP_SUFFIX for name in self.masked)

    def rewrite(self, sql: str, dialect: str) -> tuple[str, list[str]]:
        """The statement with equality lookups on masked columns turned into hash lookups, and
        the hashes it compares (none: the statement is returned unchanged). The session must name
        the hashes (`naming`) before it runs the statement."""
        lowered = sql.lower()
        if not any(name in lowered for name in self.masked):
            return sql, []
        try:
            tree = sqlglot.parse_one(sql, read=DIALECTS[dialect])
        except Exception:
            return sql, []  # the database parses what the bastion cannot; it masks either way
        if tree is None:
            return sql, []
        hashes: list[str] = []
        for node in list(tree.find_all(exp.EQ, exp.In)):
            if isinstance(node, exp.EQ):
                hashes += self._equality(node)
            else:
                hashes += self._in_list(node)
        if not hashes:
            return sql, []
        return tree.sql(dialect=DIALECTS[dialect]), hashes

    @staticmethod
    def naming(hashes: list[str], dialect: str) -> str:
        """The statement that names the hashes a lookup compares, for the views' lookup columns
        (hashes are "h:" and hex digits: nothing to quote)."""
        listed = ",".join(sorted(set(hashes)))
        if dialect == "mysql":
            return f"SET @{LOOKUP_VARIABLE} = '{listed}'"
        return f"SELECT set_config('{LOOKUP_SETTING}', '{listed}', false)"

    def _column(self, node: exp.Expression) -> exp.Column | None:
        if isinstance(node, exp.Column) and isinstance(node.this, exp.Identifier) \
                and node.name.lower() in self.masked:
            return node
        return None

    def _swap(self, column: exp.Column, literals: list[exp.Literal]) -> list[str]:
        ident = column.this
        column.set("this", exp.Identifier(this=ident.name + LOOKUP_SUFFIX, quoted=ident.quoted))
        hashes = []
        for literal in literals:
            hashes.append(keyed_hash(self.key, str(literal.this)))
            literal.replace(exp.Literal.string(hashes[-1]))
        return hashes

    def _equality(self, node: exp.EQ) -> list[str]:
        for col_side, value_side in ((node.this, node.expression), (node.expression, node.this)):
            column = self._column(col_side)
            if column is not None and isinstance(value_side, exp.Literal):
                return self._swap(column, [value_side])
        return []

    def _in_list(self, node: exp.In) -> list[str]:
        column = self._column(node.this)
        values = node.expressions
        if column is None or not values or not all(isinstance(v, exp.Literal) for v in values):
            return []
        return self._swap(column, list(values))
