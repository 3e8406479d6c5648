"""The `[identity]` table: which OpenID provider signs people in, and how groups map to roles."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bastion.config_table import ConfigTable, secret_ref
from bastion.secrets import SecretRef

__all__ = ["GroupMapping", "IdentitySettings", "MfaRule", "parse_identity"]

# amr values (RFC 8176) that mean a second factor was used.
DEFAULT_MFA_AMR = ("mfa", "otp", "hwk", "swk", "sms", "fpt", "face", "iris", "retina", "sc", "pop")


@dataclass(frozen=True)
class GroupMapping:
    """Members of `group` at the provider hold `roles` here."""

    group: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class MfaRule:
    """Which roles and targets need a sign-in with a second factor, and what counts as one."""

    roles: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    amr: tuple[str, ...] = DEFAULT_MFA_AMR
    acr: tuple[str, ...] = ()

    def satisfied_by(self, amr: tuple[str, ...], acr: str | None) -> bool:
        """Whether a sign-in with these `amr` and `acr` claims counts as MFA."""
        return bool(set(amr) & set(self.amr)) or (acr is not None and acr in self.acr)

    def target_needs(self, target: str) -> bool:
        """Whether sessions and requests on `target` need an MFA sign-in."""
        return any(fnmatch.fnmatchcase(target, p) for p in self.targets)


@dataclass(frozen=True)
class IdentitySettings:
    """How the bastion signs people in through an OpenID Connect provider (device flow)."""

    issuer: str
    client_id: str
    client_secret: SecretRef | None
    username_claim: str
    groups_claim: str
    key_ttl: timedelta
    recheck_interval: timedelta
    groups: tuple[GroupMapping, ...]
    scopes: tuple[str, ...]
    mfa: MfaRule
    timeout: float

    def roles_for(self, groups: tuple[str, ...]) -> tuple[str, ...]:
        """The roles the provider's groups map to, in config order, each once."""
        roles: list[str] = []
        for mapping in self.groups:
            if mapping.group in groups:
                roles += [r for r in mapping.roles if r not in roles]
        return tuple(roles)

    def mapped_roles(self) -> frozenset[str]:
        """Every role some group maps to."""
        return frozenset(r for m in self.groups for r in m.roles)


def parse_identity(t: ConfigTable, roles: set[str], base: Path) -> IdentitySettings:
    """Validate the `[identity]` table against the defined roles."""
    issuer = t.text("issuer").rstrip("/")
    if not issuer.startswith("https://") and not _loopback(issuer):
        raise t.error("issuer", "must be an https:// URL (http:// only for a provider on loopback, "
                      "in tests)")
    key_ttl = t.duration("key_ttl", "12h")
    recheck = t.duration("recheck_interval", "5m")
    if recheck > key_ttl:
        raise t.error("recheck_interval", "must not be longer than key_ttl")
    groups = tuple(_group(g, roles) for g in t.tables("groups"))
    if not groups:
        raise t.error("groups", 'map at least one group to roles: [[identity.groups]] group = "eng" '
                      'roles = ["developer"]')
    seen: set[str] = set()
    for i, mapping in enumerate(groups):
        if mapping.group in seen:
            raise t.error(f"groups[{i}].group", f"group {mapping.group!r} is mapped twice")
        seen.add(mapping.group)
    scopes = t.strings("scopes", ["openid", "profile", "offline_access"])
    if "openid" not in scopes:
        raise t.error("scopes", 'must include "openid"')
    settings = IdentitySettings(
        issuer=issuer,
        client_id=t.text("client_id"),
        client_secret=secret_ref(t, "client_secret", base),
        username_claim=t.text("username_claim", "preferred_username"),
        groups_claim=t.text("groups_claim", "groups"),
        key_ttl=key_ttl,
        recheck_interval=recheck,
        groups=groups,
        scopes=scopes,
        mfa=_mfa(t.table("mfa"), roles),
        timeout=float(t.get("timeout", (int, float), 10.0)),
    )
    if not 0 < settings.timeout <= 120:
        raise t.error("timeout", "must be between 0 and 120 seconds")
    t.done()
    return settings


def _loopback(url: str) -> bool:
    return url.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:"))


def _group(t: ConfigTable, roles: set[str]) -> GroupMapping:
    mapping = GroupMapping(group=t.text("group"), roles=t.strings("roles"))
    for i, role in enumerate(mapping.roles):
        if role not in roles:
            raise t.error(f"roles[{i}]", f"unknown role {role!r} (defined: {', '.join(sorted(roles))})")
    t.done()
    return mapping


def _mfa(t: ConfigTable, roles: set[str]) -> MfaRule:
    rule = MfaRule(
        roles=t.strings("roles", []),
        targets=t.strings("targets", []),
        amr=t.strings("amr", list(DEFAULT_MFA_AMR)),
        acr=t.strings("acr", []),
    )
    for i, role in enumerate(rule.roles):
        if role not in roles:
            raise t.error(f"roles[{i}]", f"unknown role {role!r}")
    t.done()
    return rule
