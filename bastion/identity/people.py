"""The bastion's users as policy sees them: the config's, plus people with a live binding. No I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime

from bastion.config import BastionConfig, User
from bastion.identity.claims import held_roles
from bastion.models import IdentityBinding

__all__ = ["with_people"]


def with_people(config: BastionConfig, bindings: Iterable[IdentityBinding], now: datetime
                ) -> BastionConfig:
    """`config` with a user for each person whose binding is in force at `now`.

    Such a user holds the roles of their bindings (MFA-only roles after an MFA sign-in), the bound
    keys, and expires with the last binding: policy then treats them like any other user.
    """
    settings = config.identity
    if settings is None:
        return config
    names = {u.name for u in config.users}
    people: dict[str, list[IdentityBinding]] = {}
    for binding in bindings:
        if binding.expires_at > now and binding.user not in names:
            people.setdefault(binding.user, []).append(binding)
    if not people:
        return config
    added = []
    for name, theirs in sorted(people.items()):
        roles = tuple(dict.fromkeys(r for b in theirs for r in held_roles(b, settings)))
        added.append(User(name=name, roles=roles, public_keys=tuple(b.public_key for b in theirs),
                          expires=max(b.expires_at for b in theirs)))
    return dataclasses.replace(config, users=config.users + tuple(added))
