"""The masked query log's rows, written once for both backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bastion.models import QueryRecord

__all__ = ["INSERT_QUERY", "QUERY_COLUMNS", "query_params", "query_record", "select_queries"]

QUERY_COLUMNS = ("id, session_id, username, target, statement, kind, started_at, duration_us, "
                 "rows_count, blocked, error")
INSERT_QUERY = (
    "INSERT INTO queries (session_id, username, target, statement, kind, started_at, "
    "duration_us, rows_count, blocked, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)


def query_params(q: QueryRecord, started_us: int) -> tuple[Any, ...]:
    """Insert parameters for one record."""
    return (q.session_id, q.user, q.target, q.statement, q.kind, started_us,
            round(q.duration_ms * 1000), q.rows, q.blocked, q.error)


def query_record(row: Sequence[Any], started_at: Any) -> QueryRecord:
    """Build a QueryRecord from a row (started_at already converted)."""
    return QueryRecord(
        id=row[0], session_id=row[1], user=row[2], target=row[3], statement=row[4], kind=row[5],
        started_at=started_at, duration_ms=row[7] / 1000, rows=row[8], blocked=row[9],
        error=row[10],
    )


def select_queries(session_id: str | None, user: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters for listing queries."""
    clauses, params = [], []
    if session_id is not None:
        clauses.append("session_id = ?")
        params.append(session_id)
    if user is not None:
        clauses.append("username = ?")
        params.append(user)
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    return where, params


