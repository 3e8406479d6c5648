"""What a SQL session may do on one target: its guardrails, as one frozen object."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.config import Target

__all__ = ["SqlPolicy"]


@dataclass(frozen=True)
class SqlPolicy:
    """Guardrails for one SQL session (masking is the database's: bastion.db)."""

    read_only: bool = False
    blocked_statements: frozenset[str] = frozenset()
    max_rows: int | None = None

    @classmethod
    def for_target(cls, target: Target) -> SqlPolicy:
        """Build the policy a target's config asks for."""
        return cls(
            read_only=target.read_only,
            blocked_statements=frozenset(k.lower() for k in target.blocked_statements),
            max_rows=target.max_rows,
        )
