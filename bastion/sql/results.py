"""What running one statement gives back to the console: columns, masked rows, status."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Column", "RowBatches", "StatementResult"]

RowBatches = AsyncIterator[list[tuple[Any, ...]]]


@dataclass(frozen=True)
class Column:
    """One result column as the user sees it; `masked` names the strategy applied, if any."""

    name: str
    masked: str | None = None


async def _no_rows() -> RowBatches:
    return
    yield  # pragma: no cover - makes this an async generator


@dataclass
class StatementResult:
    """One statement's outcome. Rows stream through `rows()`; status and rowcount are final after it.

    `redacted` is the statement with its literals replaced by `?`: the only form of the statement
    that the bastion logs or records. `error` and `notices` are scrubbed of values.
    """

    redacted: str
    kind: str
    blocked: str | None = None
    columns: Sequence[Column] = ()
    error: str | None = None
    status: str = ""
    rowcount: int | None = None
    truncated: bool = False
    notices: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    _batches: RowBatches | None = field(default=None, repr=False)

    async def rows(self) -> RowBatches:
        """Masked rows in batches; after the last one, status, rowcount and error are final."""
        if self._batches is None:
            return
        batches, self._batches = self._batches, None
        async for batch in batches:
            yield batch

    async def drain(self) -> None:
        """Consume whatever rows the caller did not read, so the next statement can run."""
        async for _ in self.rows():
            pass

    @classmethod
    def refused(cls, redacted: str, kind: str, why: str) -> StatementResult:
        """A statement the bastion did not send to the database."""
        return cls(redacted=redacted, kind=kind, blocked=why, _batches=_no_rows())
