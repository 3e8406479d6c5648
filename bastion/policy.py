"""Access decisions as plain functions over the config and stored records.

Nothing here does I/O: the workflow and the SSH front door gather the facts, these functions
decide, and every refusal says what the user can do next.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from bastion.ca import Forwarding
from bastion.config import TRANSFER_DIRECTIONS, BastionConfig, Target, User
from bastion.durations import format_duration
from bastion.errors import AccessDenied, InvalidRequest, NotFound
from bastion.models import AccessRequest, IssuedCertificate, RequestStatus

__all__ = [
    "LoginFacts",
    "RequestPlan",
    "can_audit",
    "check_login",
    "check_review",
    "check_revoke",
    "forward_destination",
    "forward_refusal",
    "forwarding_for",
    "may_see_request",
    "plan_request",
    "request_command",
]


@dataclass(frozen=True)
class RequestPlan:
    """What a valid new request will be: its target, window length and approvals needed."""

    target: Target
    duration: timedelta
    approvals_required: int


def request_command(config: BastionConfig, target: str) -> str:
    """The exact command a user runs to ask for access to `target`."""
    server = config.server
    port = "" if server.listen_port == 22 else f"-p {server.listen_port} "
    return f'ssh {port}access@{server.public_host} request {target} --reason "…"'


def _known_user(config: BastionConfig, name: str, now: datetime) -> User:
    user = config.user(name)
    if user is None:
        raise AccessDenied(f"user {name!r} is not (or no longer) in the bastion's config")
    if user.expired(now):
        assert user.expires is not None
        raise AccessDenied(f"the account of {name} expired on {user.expires:%Y-%m-%d %H:%M} UTC")
    return user


def plan_request(
    config: BastionConfig,
    user_name: str,
    target_name: str,
    reason: str,
    duration: timedelta | None,
    now: datetime,
    unmasked: bool = False,
) -> RequestPlan:
    """Check a new request; return its plan or raise with what to change."""
    user = _known_user(config, user_name, now)
    target = config.target(target_name)
    if target is None:
        names = ", ".join(t.name for t in config.targets if _may(config, user, "request", t.name))
        raise NotFound(f"unknown target {target_name!r}; targets you may request: {names or 'none'}")
    if not reason.strip():
        raise InvalidRequest('a reason is required: --reason "INC-42: what you need to do"')
    roles = [r for r in config.roles_of(user) if r.may("request", target.name)]
    if not roles:
        raise AccessDenied(
            f"none of your roles ({', '.join(user.roles) or 'none'}) may request {target.name}; "
            "ask an administrator for a role that lists it under `request`"
        )
    if unmasked:
        if target.kind == "ssh":
            raise InvalidRequest("--unmasked applies to database targets only")
        if not any(r.may("request_unmasked", target.name) for r in config.roles_of(user)):
            raise AccessDenied(
                f"none of your roles may request unmasked access to {target.name}; request "
                "masked access, or ask for a role with `request_unmasked`"
            )
    limits = [r.max_duration or config.certificates.max_ttl for r in roles]
    longest = min(max(limits), config.certificates.max_ttl)
    wanted = duration or min(config.certificates.default_ttl, longest)
    if wanted > longest:
        raise InvalidRequest(
            f"--duration {format_duration(wanted)} is longer than your roles allow for "
            f"{target.name} ({format_duration(longest)}); ask for {format_duration(longest)} or less"
        )
    if user.expires is not None and now + wanted > user.expires:
        wanted = user.expires - now
    return RequestPlan(target, wanted, target.approvals_required)


def _may(config: BastionConfig, user: User, action: str, target: str) -> bool:
    return any(role.may(action, target) for role in config.roles_of(user))


def can_audit(config: BastionConfig, user_name: str, target: str | None = None) -> bool:
    """Return whether a user may audit `target` (or any target when None)."""
    user = config.user(user_name)
    if user is None:
        return False
    if target is None:
        return any(role.audit for role in config.roles_of(user))
    return _may(config, user, "audit", target)


def may_see_request(config: BastionConfig, user_name: str, request: AccessRequest) -> bool:
    """A user sees their own requests, those they may approve, and all of a target they audit."""
    user = config.user(user_name)
    if user is None:
        return False
    return (
        request.user == user_name
        or _may(config, user, "approve", request.target)
        or _may(config, user, "audit", request.target)
    )


def check_review(
    config: BastionConfig, reviewer: str, request: AccessRequest, now: datetime,
    reviewer_keys: frozenset[str] = frozenset(),
) -> None:
    """Raise unless `reviewer` may approve or deny `request` now.

    `reviewer_keys` are the fingerprints of the key the review is made with and of the
    reviewer's registered keys: a person is their keys as much as their name, so a user renamed
    in the config (same key) is still the requester, and one person under two names approves once.
    """
    user = _known_user(config, reviewer, now)
    if request.user == reviewer or (request.requester_key and request.requester_key in reviewer_keys):
        raise AccessDenied("you cannot review your own request: another approver must do it")
    if any(r.reviewer != reviewer and r.reviewer_key in reviewer_keys
           for r in request.reviews if r.reviewer_key):
        raise AccessDenied("this request was already reviewed with one of your keys (under another "
                           "name): another approver must do it")
    if not _may(config, user, "approve", request.target):
        raise AccessDenied(
            f"none of your roles ({', '.join(user.roles) or 'none'}) may approve requests for "
            f"{request.target}"
        )
    status = request.status_at(now)
    if status is not RequestStatus.PENDING:
        raise InvalidRequest(f"request {request.id} is {status.value}, not pending")


def check_revoke(config: BastionConfig, actor: str, request: AccessRequest, now: datetime) -> None:
    """Raise unless `actor` (the requester or an approver of the target) may revoke `request`."""
    user = config.user(actor)
    if user is None:
        raise AccessDenied(f"user {actor!r} is not in the bastion's config")
    if request.user != actor and not _may(config, user, "approve", request.target):
        raise AccessDenied("only the requester or an approver of the target may revoke a request")
    status = request.status_at(now)
    if status not in (RequestStatus.PENDING, RequestStatus.APPROVED):
        raise InvalidRequest(f"request {request.id} is already {status.value}")


def forwarding_for(config: BastionConfig, user_name: str, target: str) -> Forwarding:
    """Forwarding granted by any of the user's roles that may request `target`."""
    user = config.user(user_name)
    if user is None:
        return Forwarding()
    roles = [r for r in config.roles_of(user) if r.may("request", target)]
    found = config.target(target)
    # A database target's certificate carries the native-client channel (`ssh -L` to the
    # target's own name, nothing else: policy.forward_refusal).
    return Forwarding(port=any(r.port_forwarding for r in roles) or
                      (found is not None and found.kind != "ssh"))


def transfer_refusal(config: BastionConfig, user_name: str, target: Target, direction: str
                     ) -> str | None:
    """Why a file transfer in `direction` ("download" or "upload") is refused, or None. Both the
    target and one of the user's roles that may request it must allow the direction."""
    if target.kind != "ssh":
        return f"{target.name} is a {target.kind} target: file transfer applies to ssh targets"
    plural = f"{direction}s"
    if direction not in target.file_transfer:
        return (f"{plural} are not allowed on {target.name} (its file_transfer setting is "
                f"{_directions(target.file_transfer)})")
    user = config.user(user_name)
    roles = [r for r in config.roles_of(user) if r.may("request", target.name)] if user else []
    if not any(direction in r.file_transfer for r in roles):
        return (f"none of your roles allows {plural} through {target.name}; ask an administrator "
                "for a role with file_transfer")
    return None


def transfer_session_refusal(config: BastionConfig, user_name: str, target: Target) -> str | None:
    """Why an sftp session on `target` is refused (neither direction is allowed), or None."""
    if any(transfer_refusal(config, user_name, target, d) is None for d in ("download", "upload")):
        return None
    if target.kind != "ssh":
        return f"{target.name} is a {target.kind} target: file transfer applies to ssh targets"
    if not target.file_transfer:
        return f"file transfer is not allowed on {target.name} (its file_transfer setting is off)"
    return (f"none of your roles allows file transfer through {target.name} (the target allows "
            f"{_directions(target.file_transfer)}); ask an administrator for a role with "
            "file_transfer")


def _directions(allowed: frozenset[str]) -> str:
    """A target's file_transfer setting as the config spells it."""
    return next((f'"{name}"' for name, value in TRANSFER_DIRECTIONS.items() if value == allowed),
                "off")


_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*$")


def forward_destination(host: str, port: int) -> str:
    """A forwarded channel's destination as `host:port` (`[v6]:port`), for patterns and logs."""
    shown = host.lower()
    try:
        if ipaddress.ip_address(shown).version == 6:
            shown = f"[{shown}]"
    except ValueError:
        if not _HOSTNAME.match(shown):
            shown = repr(host[:100])
    return f"{shown}:{port}"


def _destination_matches(destination: str, pattern: str) -> bool:
    """`host:port` against a pattern; a pattern of digits, dots and `*` matches IP addresses only
    (so "10.0.*:5432" never matches the name "10.0.0.1.example.com")."""
    host, _, port = destination.rpartition(":")
    want_host, _, want_port = pattern.rpartition(":")
    if want_port != "*" and want_port != port:
        return False
    if want_host != "*" and re.fullmatch(r"[0-9.*]+", want_host):
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
    return fnmatch.fnmatchcase(host, want_host)


def forward_refusal(config: BastionConfig, user_name: str, target: Target, host: str,
                    port: int) -> str | None:
    """Why a forwarded channel to `host:port` through `target` is refused, or None.

    Only the roles that let the user request the target count, and only the destinations their
    `forward_to` patterns name; a host that is neither a DNS name nor an IP address never matches.
    """
    user = config.user(user_name)
    roles = [r for r in config.roles_of(user) if r.may("request", target.name)] if user else []
    granting = [r for r in roles if r.port_forwarding]
    if target.kind != "ssh":
        # Native database clients: the destination is the database itself, named as the target.
        if host.lower().rstrip(".") != target.name.lower():
            return (f"{target.name} is a {target.kind} target: forward to {target.name} (e.g. "
                    f"-L 15432:{target.name}:{5432 if target.kind == 'postgres' else 3306}), "
                    f"not {forward_destination(host, port)}")
        return None
    if not granting:
        return (f"none of your roles grants port forwarding through {target.name}; ask an "
                "administrator for a role with port_forwarding and forward_to")
    destination = forward_destination(host, port)
    if destination.startswith("'") or not 0 < port < 65536:
        return f"{destination} is not a host name or IP address and port"
    if any(_destination_matches(destination, p) for r in granting for p in r.forward_to):
        return None
    allowed = ", ".join(sorted({p for r in granting for p in r.forward_to}))
    return f"forwarding to {destination} is not allowed through {target.name}; allowed: {allowed}"


@dataclass(frozen=True)
class LoginFacts:
    """What the front door knows about a certificate login attempt."""

    username: str
    key_id: str
    serial: int
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    signed_by_user_ca: bool
    issued: IssuedCertificate | None
    serial_revoked: bool
    request: AccessRequest | None
    key_fingerprint: str


def check_login(config: BastionConfig, facts: LoginFacts, now: datetime) -> str | None:
    """Return None if the certificate login may proceed, else the reason it is refused.

    Every check of the security rules: trusted CA, principal equals the target, inside the window,
    serial issued here and not revoked, the backing request still approved, the user still in
    the config and not expired, and the certificate exactly as issued (key, principals, key id,
    window).
    """
    target = facts.username
    ask = request_command(config, target)
    if not facts.signed_by_user_ca:
        return f"your certificate was not signed by this bastion's user CA. Run: {ask}"
    if config.target(target) is None:
        server = config.server
        return (f"there is no target named {target!r} on this bastion; see which there are: "
                f"ssh -p {server.listen_port} access@{server.public_host} targets")
    if target not in facts.principals:
        got = ", ".join(facts.principals) or "none"
        return f"your certificate is for {got}, not {target}. Run: {ask}"
    if len(facts.principals) != 1:
        return ("certificates from this bastion name exactly one target; this one does not. "
                f"Run: {ask}")
    if now < facts.valid_after:
        return f"your certificate is not valid before {facts.valid_after:%Y-%m-%d %H:%M:%S} UTC"
    if now >= facts.valid_before:
        return f"your certificate for {target} expired at {facts.valid_before:%Y-%m-%d %H:%M:%S} " \
               f"UTC. Run: {ask}"
    issued = facts.issued
    if issued is None or facts.request is None:
        return f"this bastion has no record of issuing certificate serial {facts.serial}. Run: {ask}"
    if facts.serial_revoked or facts.request.status is RequestStatus.REVOKED:
        return f"request {facts.request.id} for {target} was revoked. Run: {ask}"
    if (
        issued.key_fingerprint != facts.key_fingerprint
        or issued.principals != facts.principals
        # The key id names user and request in the audit trail; the window bounds the session.
        or facts.key_id != f"{issued.user}/{issued.request_id}"
        or int(facts.valid_after.timestamp()) != int(issued.valid_after.timestamp())
        or int(facts.valid_before.timestamp()) != int(issued.valid_before.timestamp())
    ):
        return f"this certificate does not match what the bastion issued for it. Run: {ask}"
    status = facts.request.status_at(now)
    if status is not RequestStatus.APPROVED:
        return f"request {facts.request.id} for {target} is {status.value}. Run: {ask}"
    user = config.user(issued.user)
    if user is None:
        return (f"user {issued.user!r} is no longer allowed on this bastion; ask an administrator "
                "to add you back")
    if user.expired(now):
        assert user.expires is not None
        return f"the account of {user.name} expired on {user.expires:%Y-%m-%d %H:%M} UTC"
    if not _may(config, user, "request", target):
        return f"{user.name}'s roles no longer allow {target}"
    return None
