"""From the provider's claims to a person of the bastion: name, groups, roles, MFA. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bastion.identity.errors import SignInRefused
from bastion.identity.settings import IdentitySettings
from bastion.models import IdentityBinding

__all__ = ["SignedInPerson", "held_roles", "person_from_claims"]

_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
RESERVED = frozenset({"access"})
MAX_GROUPS = 1000


@dataclass(frozen=True)
class SignedInPerson:
    """Who the provider says signed in, mapped to this bastion's roles."""

    user: str
    subject: str
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    amr: tuple[str, ...]
    acr: str | None
    mfa: bool

    def binding(self, key_fingerprint: str, public_key: str, now: datetime, ttl: timedelta,
                sealed_tokens: str) -> IdentityBinding:
        """This person bound to one SSH key until `now + ttl`."""
        return IdentityBinding(
            key_fingerprint=key_fingerprint, public_key=public_key, user=self.user,
            subject=self.subject, roles=self.roles, groups=self.groups, amr=self.amr,
            acr=self.acr, mfa=self.mfa, bound_at=now, expires_at=now + ttl, checked_at=now,
            sealed_tokens=sealed_tokens)


def _groups(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise SignInRefused("the provider's groups claim is not a list of names")
    if len(value) > MAX_GROUPS:
        # Not cut silently: a mapped group past the cut would be "not a member" for no reason.
        raise SignInRefused(f"the provider's groups claim lists {len(value)} groups; the bastion "
                            f"reads at most {MAX_GROUPS}: ask the administrator to send only the "
                            "groups the bastion maps")
    # Keycloak sends full paths ("/eng") unless told otherwise: both spellings match "eng".
    return tuple(dict.fromkeys(g.lstrip("/") for g in value))


def person_from_claims(claims: dict[str, Any], settings: IdentitySettings,
                       config_users: frozenset[str]) -> SignedInPerson:
    """Map validated claims to a person; refuse with the reason when they do not make one."""
    raw = claims.get(settings.username_claim)
    if not isinstance(raw, str) or not raw:
        raise SignInRefused(f"the provider's answer has no {settings.username_claim!r} claim to "
                            "name you by; ask the administrator to check username_claim")
    # Only ASCII is folded to lower case: str.lower() maps some other letters onto ASCII (the
    # Kelvin sign to "k"), and a name with spaces or a newline is not trimmed into another one.
    user = raw.lower() if raw.isascii() else raw
    if not _NAME.fullmatch(user) or user in RESERVED:
        shown = "".join(c for c in raw[:64] if c.isprintable())
        raise SignInRefused(f"the name {shown!r} cannot be a bastion user name (lower-case "
                            "letters, digits, '-', '_' or '.', starting with a letter)")
    if user in config_users:
        raise SignInRefused(f"{user} is a user of the bastion's config file: one name cannot be "
                            "both; sign in with that user's registered key instead")
    groups = _groups(claims.get(settings.groups_claim))
    roles = settings.roles_for(groups)
    if not roles:
        raise SignInRefused(f"none of your groups ({', '.join(groups[:20]) or 'none'}) is mapped "
                            "to a role on this bastion; ask an administrator")
    amr_claim = claims.get("amr")
    amr = tuple(a for a in amr_claim if isinstance(a, str)) if isinstance(amr_claim, list) else ()
    acr = claims.get("acr") if isinstance(claims.get("acr"), str) else None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise SignInRefused("the provider's answer names no subject (sub)")
    return SignedInPerson(user=user, subject=subject, groups=groups, roles=roles,
                          amr=amr, acr=acr, mfa=settings.mfa.satisfied_by(amr, acr))


def held_roles(binding: IdentityBinding, settings: IdentitySettings) -> tuple[str, ...]:
    """The roles a binding holds now: roles that need MFA only after an MFA sign-in."""
    return tuple(r for r in binding.roles if binding.mfa or r not in settings.mfa.roles)
