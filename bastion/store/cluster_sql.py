"""The store's cluster queries: nodes' heartbeats, a dead node's sessions, re-checks of live ones."""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bastion.models import Node, SessionRecord
from bastion.store.sql import _SESSION_COLUMNS, SqlStore, _session, from_us, to_us

__all__ = ["ClusterSqlStore", "end_reason"]

_BATCH = 500  # session ids per re-check query, well under both backends' parameter limits


def end_reason(session_status: str, session_reason: str | None, request_id: int,
               request_status: str, expires_at: datetime | None, revoked: bool, now: datetime
               ) -> str | None:
    """Why the store says a session this bastion runs must end now, or None if it may go on."""
    if session_status != "live":
        return f"the session was ended elsewhere: {session_reason or session_status}"
    if revoked or request_status == "revoked":
        return f"request {request_id} was revoked"
    if request_status == "expired" or (expires_at is not None and expires_at <= now):
        return "your access window has ended"
    if request_status != "approved":
        return f"request {request_id} is {request_status}"
    return None


def _node(row: Sequence[Any]) -> Node:
    started, beat = from_us(row[2]), from_us(row[3])
    assert started is not None and beat is not None
    return Node(bastion_id=row[0], address=row[1], started_at=started, heartbeat_at=beat)


class ClusterSqlStore(SqlStore, ABC):
    """The cluster's part of the Store, written once against `Tx`."""

    async def heartbeat(self, bastion_id: str, address: str, now: datetime, *,
                        starting: bool = False) -> None:
        """Note that a bastion is alive now (`starting`: it has just started)."""
        at = to_us(now)
        keep_start = "started_at = excluded.started_at, " if starting else ""
        async with self._transaction(write=True) as tx:
            await tx.execute(
                "INSERT INTO nodes (bastion_id, address, started_at, heartbeat_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (bastion_id) DO UPDATE SET "
                f"{keep_start}address = excluded.address, heartbeat_at = excluded.heartbeat_at",
                (bastion_id, address, at, at),
            )

    async def forget_node(self, bastion_id: str) -> None:
        """Remove a bastion that stopped cleanly (it is not dead, and has no live sessions)."""
        async with self._transaction(write=True) as tx:
            await tx.execute("DELETE FROM nodes WHERE bastion_id = ?", (bastion_id,))

    async def list_nodes(self) -> list[Node]:
        """Return the bastions that heartbeat, by id."""
        async with self._transaction(write=False) as tx:
            rows = await tx.fetchall(
                "SELECT bastion_id, address, started_at, heartbeat_at FROM nodes "
                "ORDER BY bastion_id")
        return [_node(row) for row in rows]

    async def reap_dead_nodes(self, silent_since: datetime, now: datetime, *, by: str
                              ) -> list[tuple[Node, list[SessionRecord]]]:
        """Forget bastions (other than `by`) silent since `silent_since` and mark their live
        sessions ended abnormally; each dead node is returned to exactly one caller."""
        reaped: list[tuple[Node, list[SessionRecord]]] = []
        async with self._transaction(write=True) as tx:
            # DELETE … RETURNING hands each row to one transaction only: two survivors reaping
            # at once never both end (and audit) the same node.
            rows = await tx.fetchall(
                "DELETE FROM nodes WHERE heartbeat_at < ? AND bastion_id <> ? "
                "RETURNING bastion_id, address, started_at, heartbeat_at",
                (to_us(silent_since), by))
            for node in sorted((_node(row) for row in rows), key=lambda n: n.bastion_id):
                reason = (f"bastion {node.bastion_id} stopped answering (no heartbeat since "
                          f"{node.heartbeat_at:%H:%M:%S} UTC); its recording is cut off")
                ended = await tx.fetchall(
                    "UPDATE sessions SET status = 'ended_abnormally', ended_at = ?, "
                    "end_reason = ? WHERE bastion_id = ? AND status = 'live' "
                    f"RETURNING {_SESSION_COLUMNS}",
                    (to_us(now), reason, node.bastion_id))
                sessions = sorted((_session(r) for r in ended), key=lambda s: (s.started_at, s.id))
                reaped.append((node, sessions))
        return reaped

    async def sessions_to_end(self, session_ids: Sequence[str], now: datetime) -> dict[str, str]:
        """Of these live sessions, those the store says must end now, with the reason why."""
        found: dict[str, str] = {}
        ids = list(dict.fromkeys(session_ids))
        async with self._transaction(write=False) as tx:
            for start in range(0, len(ids), _BATCH):
                batch = ids[start:start + _BATCH]
                marks = ", ".join("?" * len(batch))
                rows = await tx.fetchall(
                    "SELECT s.id, s.status, s.end_reason, r.id, r.status, r.expires_at, "
                    "v.serial FROM sessions s JOIN requests r ON r.id = s.request_id "
                    "LEFT JOIN revocations v ON v.serial = s.cert_serial "
                    f"WHERE s.id IN ({marks})", batch)
                seen = set()
                for row in rows:
                    seen.add(row[0])
                    reason = end_reason(row[1], row[2], row[3], row[4], from_us(row[5]),
                                        row[6] is not None, now)
                    if reason is not None:
                        found[row[0]] = reason
                for missing in set(batch) - seen:
                    found[missing] = "the session is not on record"
        return found

    async def set_session_recording(self, session_id: str, location: str) -> None:
        """Point a session at where its recording is kept now."""
        async with self._transaction(write=True) as tx:
            await tx.execute("UPDATE sessions SET recording = ? WHERE id = ?",
                             (location, session_id))
