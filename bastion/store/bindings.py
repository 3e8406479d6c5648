"""Identity bindings in the SQL stores: keys bound to people signed in through the provider."""

from __future__ import annotations

import json
from abc import ABC
from datetime import datetime
from typing import Any

from bastion.models import IdentityBinding
from bastion.store.sql import Row, SqlStore, from_us, to_us

__all__ = ["BindingRows"]

_COLUMNS = ("key_fingerprint, public_key, username, subject, roles, groups_json, amr, acr, mfa, "
            "bound_at, expires_at, checked_at, sealed_tokens")


def _where(user: str | None, key_fingerprint: str | None) -> tuple[str, tuple[Any, ...]]:
    if user is not None:
        return "WHERE username = ? ", (user,)
    if key_fingerprint is not None:
        return "WHERE key_fingerprint = ? ", (key_fingerprint,)
    return "", ()


def _binding(row: Row) -> IdentityBinding:
    def at(value: int) -> datetime:
        moment = from_us(value)
        assert moment is not None
        return moment

    return IdentityBinding(
        key_fingerprint=row[0], public_key=row[1], user=row[2], subject=row[3],
        roles=tuple(json.loads(row[4])), groups=tuple(json.loads(row[5])),
        amr=tuple(json.loads(row[6])), acr=row[7], mfa=bool(row[8]), bound_at=at(row[9]),
        expires_at=at(row[10]), checked_at=at(row[11]), sealed_tokens=row[12],
    )


class BindingRows(SqlStore, ABC):
    """The SQL store with its identity-binding methods, written once against `Tx`."""

    async def bind_identity(self, binding: IdentityBinding) -> None:
        """Store a key's binding, replacing any earlier binding of the same key."""
        b = binding
        async with self._transaction(write=True) as tx:
            await tx.execute("DELETE FROM identity_bindings WHERE key_fingerprint = ?",
                             (b.key_fingerprint,))
            await tx.execute(
                f"INSERT INTO identity_bindings ({_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (b.key_fingerprint, b.public_key, b.user, b.subject, json.dumps(list(b.roles)),
                 json.dumps(list(b.groups)), json.dumps(list(b.amr)), b.acr, 1 if b.mfa else 0,
                 to_us(b.bound_at), to_us(b.expires_at), to_us(b.checked_at), b.sealed_tokens),
            )

    async def identity_bindings(self, *, user: str | None = None, key_fingerprint: str | None = None
                                ) -> list[IdentityBinding]:
        """Return bindings (of one user, or of one key), newest first."""
        where, params = _where(user, key_fingerprint)
        async with self._transaction(write=False) as tx:
            rows = await tx.fetchall(
                f"SELECT {_COLUMNS} FROM identity_bindings {where}ORDER BY bound_at DESC", params)
        return [_binding(row) for row in rows]

    async def update_identity_check(self, key_fingerprint: str, *, roles: tuple[str, ...],
                                    groups: tuple[str, ...], checked_at: datetime,
                                    sealed_tokens: str) -> bool:
        """Record a re-check's outcome on a binding; return whether the binding still existed."""
        async with self._transaction(write=True) as tx:
            row = await tx.fetchone(
                "UPDATE identity_bindings SET roles = ?, groups_json = ?, checked_at = ?, "
                "sealed_tokens = ? WHERE key_fingerprint = ? RETURNING key_fingerprint",
                (json.dumps(list(roles)), json.dumps(list(groups)), to_us(checked_at),
                 sealed_tokens, key_fingerprint))
        return row is not None

    async def unbind_identity(self, *, user: str | None = None, key_fingerprint: str | None = None
                              ) -> list[IdentityBinding]:
        """Remove the bindings of a user or of one key; return what was removed."""
        where, params = _where(user, key_fingerprint)
        if not where:
            return []
        async with self._transaction(write=True) as tx:
            rows = await tx.fetchall(f"SELECT {_COLUMNS} FROM identity_bindings {where}", params)
            await tx.execute(f"DELETE FROM identity_bindings {where}", params)
        return [_binding(row) for row in rows]

    async def name_owner(self, user: str) -> str | None:
        """The subject that last signed in as `user`."""
        async with self._transaction(write=False) as tx:
            row = await tx.fetchone("SELECT subject FROM identity_names WHERE username = ?", (user,))
        return None if row is None else str(row[0])

    async def own_name(self, user: str, subject: str, now: datetime) -> None:
        """Record `subject` as the owner of `user`."""
        async with self._transaction(write=True) as tx:
            await tx.execute("INSERT INTO identity_names (username, subject, owned_since) "
                             "VALUES (?, ?, ?) ON CONFLICT (username) DO UPDATE SET "
                             "subject = excluded.subject, owned_since = excluded.owned_since",
                             (user, subject, to_us(now)))
