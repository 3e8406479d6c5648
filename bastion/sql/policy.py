"""What a SQL session may do on one target: masking rules and guardrails, as one frozen object."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from functools import lru_cache

from bastion.config import MaskingRule, Target

__all__ = ["STRATEGY_STRENGTH", "SqlPolicy"]

# When several rules match one column the strictest wins (fail closed): redact and null reveal
# nothing, hash reveals equality, partial reveals the last characters.
STRATEGY_STRENGTH = {"redact": 3, "null": 3, "hash": 2, "partial": 1}


@dataclass(frozen=True)
class SqlPolicy:
    """Masking rules and guardrails for one SQL session."""

    masking: tuple[MaskingRule, ...]
    hash_key: bytes = field(repr=False)
    read_only: bool = False
    blocked_statements: frozenset[str] = frozenset()
    max_rows: int | None = None
    unmasked: bool = False

    @classmethod
    def for_target(cls, target: Target, hash_key: bytes, *, unmasked: bool = False) -> SqlPolicy:
        """Build the policy a target's config asks for."""
        return cls(
            masking=target.masking,
            hash_key=hash_key,
            read_only=target.read_only,
            blocked_statements=frozenset(k.lower() for k in target.blocked_statements),
            max_rows=target.max_rows,
            unmasked=unmasked,
        )

    @property
    def masking_active(self) -> bool:
        """Whether any column is masked in this session (rules exist and no unmasked grant)."""
        return bool(self.masking) and not self.unmasked

    def covers_table(self, schema: str, table: str) -> bool:
        """Whether any rule could mask a column of `schema.table` (case-insensitively)."""
        if not self.masking_active:
            return False
        return _covers(self.masking, schema.lower(), table.lower())

    def strategy_for(self, schema: str, table: str, column: str) -> str | None:
        """Return how `schema.table.column` is masked (case-insensitively), or None."""
        if self.unmasked:
            return None
        return _match(self.masking, f"{schema}.{table}.{column}".lower())


@lru_cache(maxsize=4096)
def _match(rules: tuple[MaskingRule, ...], name: str) -> str | None:
    best: str | None = None
    for rule in rules:
        if any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in rule.columns):
            if best is None or STRATEGY_STRENGTH[rule.strategy] > STRATEGY_STRENGTH[best]:
                best = rule.strategy
    return best


@lru_cache(maxsize=1024)
def _covers(rules: tuple[MaskingRule, ...], schema: str, table: str) -> bool:
    for rule in rules:
        for pattern in rule.columns:
            parts = pattern.lower().rsplit(".", 2)
            table_part = parts[-2] if len(parts) >= 2 else "*"
            schema_part = parts[-3] if len(parts) == 3 else "*"
            if fnmatch.fnmatchcase(table, table_part) and (
                    schema == "*" or fnmatch.fnmatchcase(schema, schema_part)):
                return True
    return False
