"""The control commands about sign-ins: `logout`, and the auditors' `identities` and `unbind`."""

from __future__ import annotations

from typing import Any

import asyncssh

from bastion import policy
from bastion.config import BastionConfig
from bastion.errors import AccessDenied, InvalidRequest, NotFound
from bastion.identity.bindings import Identities
from bastion.models import IdentityBinding, utcnow
from bastion.text import table, when

__all__ = ["identities", "logout", "unbind"]


async def logout(people: Identities | None, binding: IdentityBinding | None,
                 key: asyncssh.SSHKey, as_json: bool) -> Any:
    """End this key's sign-in."""
    if people is None or binding is None:
        raise InvalidRequest("this key is not signed in through the identity provider "
                             "(a key of the config stays until an administrator removes it)")
    await people.logout(key)
    if as_json:
        return {"user": binding.user, "key": binding.key_fingerprint, "signed_out": True}
    return f"signed out: this key no longer works as {binding.user}\n"


def _for_auditor(people: Identities | None, config: BastionConfig, actor: str) -> Identities:
    if people is None or config.identity is None:
        raise InvalidRequest("sign-in through an identity provider is not set up on this bastion")
    if not policy.can_audit(config, actor):
        raise AccessDenied("signed-in identities are for auditors: none of your roles has `audit`")
    return people


async def identities(people: Identities | None, config: BastionConfig, actor: str,
                     as_json: bool) -> Any:
    """The keys bound to people now."""
    now = utcnow()
    bindings = [b for b in await _for_auditor(people, config, actor).store.identity_bindings()
                if b.expires_at > now]
    if as_json:
        return [b.to_json() for b in bindings]
    if not bindings:
        return "no signed-in identities\n"
    return table(("USER", "ROLES", "GROUPS", "MFA", "KEY", "UNTIL", "CHECKED"),
                 [(b.user, ",".join(b.roles), ",".join(b.groups), "yes" if b.mfa else "no",
                   b.key_fingerprint, when(b.expires_at), when(b.checked_at)) for b in bindings])


async def unbind(people: Identities | None, config: BastionConfig, actor: str, user: str,
                 reason: str, as_json: bool) -> Any:
    """End every sign-in of `user`, and their live sessions."""
    service = _for_auditor(people, config, actor)
    why = f"unbound by {actor}" + (f": {reason}" if reason else "")
    removed = await service.unbind(user, by=actor, reason=why)
    if not removed:
        raise NotFound(f"{user} has no signed-in key")
    if as_json:
        return {"user": user, "unbound": [b.key_fingerprint for b in removed]}
    return (f"{user}: {len(removed)} key(s) unbound; their live sessions on this bastion ended "
            "(other bastions end theirs within seconds)\n")
