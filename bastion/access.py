"""The access workflow: request, review, revoke, expire, and certificates for approved requests."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncssh

from bastion import policy
from bastion.audit import AuditTrail
from bastion.ca import CertificateAuthority, new_serial
from bastion.config import BastionConfig
from bastion.durations import format_duration
from bastion.errors import AccessDenied, InvalidRequest, NotFound, StoreError
from bastion.models import (
    AccessRequest,
    Decision,
    IssuedCertificate,
    RequestStatus,
    utcnow,
)
from bastion.store import Store

__all__ = ["AccessWorkflow", "key_fingerprint"]

log = logging.getLogger("bastion.access")

RevokeListener = Callable[[AccessRequest], Awaitable[None]]


def key_fingerprint(key: asyncssh.SSHKey) -> str:
    """SHA256 fingerprint of a public key, as ssh-keygen prints it."""
    return key.get_fingerprint("sha256")


class AccessWorkflow:
    """Carries requests through pending → approved/denied → revoked/expired, auditing each step."""

    def __init__(
        self,
        config: Callable[[], BastionConfig],
        store: Store,
        audit: AuditTrail,
        user_ca: CertificateAuthority,
    ) -> None:
        self._config = config
        self.store = store
        self.audit = audit
        self.user_ca = user_ca
        self.revoke_listeners: list[RevokeListener] = []

    @property
    def config(self) -> BastionConfig:
        """The config in force now (it changes on reload)."""
        return self._config()

    async def request(
        self, user: str, target: str, reason: str, duration: timedelta | None,
        unmasked: bool = False, key: asyncssh.SSHKey | None = None,
    ) -> AccessRequest:
        """Create an access request (approved at once when the target needs no approval)."""
        now = utcnow()
        plan = policy.plan_request(self.config, user, target, reason, duration, now, unmasked)
        # Unmasked access is never auto-approved, whatever the target's approval count.
        approvals = max(plan.approvals_required, 1) if unmasked else plan.approvals_required
        req = await self.store.create_request(
            user=user,
            target=plan.target.name,
            reason=reason.strip(),
            duration=plan.duration,
            approvals_required=approvals,
            pending_until=now + self.config.server.pending_request_ttl,
            now=now,
            unmasked=unmasked,
            requester_key=key_fingerprint(key) if key is not None else "",
        )
        await self.audit.record(
            "request.created",
            actor=user,
            target=req.target,
            request_id=req.id,
            text=f"{user} requests {'UNMASKED ' if unmasked else ''}{req.target} for "
            f"{format_duration(req.duration)}: "
            f"{req.reason} (request {req.id}, {req.approvals_required} approval(s) needed)",
            reason=req.reason,
            duration=int(req.duration.total_seconds()),
            approvals_required=req.approvals_required,
            unmasked=unmasked,
        )
        if req.status is RequestStatus.APPROVED:
            await self._approved(req, by="auto-approval")
        return req

    async def review(
        self, reviewer: str, request_id: int, decision: Decision, comment: str,
        key: asyncssh.SSHKey | None = None,
    ) -> AccessRequest:
        """Approve or deny a request; a deny needs a reason."""
        now = utcnow()
        req = await self.store.get_request(request_id)
        if req is None:
            raise NotFound(f"no request {request_id}")
        if decision is Decision.DENY and not comment.strip():
            raise InvalidRequest('a denial needs a reason: deny ID --reason "why"')
        try:
            policy.check_review(self.config, reviewer, req, now, self._keys_of(reviewer, key))
        except (AccessDenied, InvalidRequest) as exc:
            await self.audit.record(
                "review.refused", actor=reviewer, target=req.target, request_id=req.id,
                decision=decision.value, reason=str(exc),
            )
            raise
        outcome = await self.store.add_review(
            request_id, reviewer=reviewer, decision=decision, comment=comment.strip(), now=now,
            reviewer_key=key_fingerprint(key) if key is not None else "",
        )
        req = outcome.request
        if outcome.recorded:
            await self.audit.record(
                f"review.{decision.value}", actor=reviewer, target=req.target, request_id=req.id,
                comment=comment.strip(), approvals=len(req.approvers),
                approvals_required=req.approvals_required,
            )
        if outcome.changed and req.status is RequestStatus.APPROVED:
            await self._approved(req, by=reviewer)
        elif outcome.changed and req.status is RequestStatus.DENIED:
            await self.audit.record(
                "request.denied", actor=reviewer, target=req.target, request_id=req.id,
                text=f"{reviewer} denied request {req.id} by {req.user} for {req.target}: "
                f"{comment.strip()}",
                reason=comment.strip(),
            )
        return req

    def _keys_of(self, name: str, key: asyncssh.SSHKey | None) -> frozenset[str]:
        """Fingerprints of the key in use and of every key registered to `name`."""
        user = self.config.user(name)
        registered = [asyncssh.import_public_key(text) for text in user.public_keys] if user else []
        return frozenset(key_fingerprint(k) for k in [*registered, *([key] if key else [])])

    async def _approved(self, req: AccessRequest, *, by: str) -> None:
        assert req.expires_at is not None
        await self.audit.record(
            "request.approved", actor=by, target=req.target, request_id=req.id,
            text=f"request {req.id} by {req.user} for {req.target} approved by "
            f"{', '.join(req.approvers) or by}, until {req.expires_at:%Y-%m-%d %H:%M} UTC",
            approvers=list(req.approvers), expires_at=req.expires_at.isoformat(),
        )

    async def revoke(self, actor: str, request_id: int, reason: str) -> AccessRequest:
        """Revoke a pending or approved request at once; live sessions on it end."""
        now = utcnow()
        req = await self.store.get_request(request_id)
        if req is None or not policy.may_see_request(self.config, actor, req):
            raise NotFound(f"no request {request_id} that you can see")
        policy.check_revoke(self.config, actor, req, now)
        req = await self.store.close_request(
            request_id, status=RequestStatus.REVOKED, by=actor,
            reason=reason.strip() or "revoked", now=now,
        )
        await self.audit.record(
            "request.revoked", actor=actor, target=req.target, request_id=req.id,
            text=f"{actor} revoked request {req.id} by {req.user} for {req.target}",
            reason=reason.strip(),
        )
        for listener in list(self.revoke_listeners):
            await listener(req)
        return req

    async def expire(self) -> list[AccessRequest]:
        """Mark lapsed requests expired and audit each."""
        expired = await self.store.expire_stale(utcnow())
        for req in expired:
            await self.audit.record(
                "request.expired", target=req.target, request_id=req.id, user=req.user
            )
        return expired

    async def issue_certificate(
        self, user: str, key: asyncssh.SSHKey, request_id: int | None
    ) -> tuple[asyncssh.SSHCertificate, IssuedCertificate]:
        """Sign the user's key for an approved request of theirs (the newest one by default)."""
        now = utcnow()
        config = self.config
        if config.user(user) is None:
            raise AccessDenied(f"user {user!r} is not in the bastion's config")
        req = await self._request_for_cert(user, request_id)
        assert req.approved_at is not None and req.expires_at is not None
        forwarding = policy.forwarding_for(config, user, req.target)
        valid_before = req.expires_at
        person = config.user(user)
        if person is not None and person.expires is not None:
            valid_before = min(valid_before, person.expires)
        for _ in range(3):
            serial = new_serial()
            issued = IssuedCertificate(
                serial=serial,
                request_id=req.id,
                user=user,
                key_fingerprint=key_fingerprint(key),
                principals=(req.target,),
                valid_after=req.approved_at.replace(microsecond=0),
                valid_before=valid_before,
                issued_at=now,
            )
            try:
                await self.store.record_certificate(issued)
                break
            except StoreError:  # a serial collision: astronomically rare, retry with a new one
                continue
        else:
            raise StoreError("could not allocate a unique certificate serial")
        cert = self.user_ca.sign_user(
            key,
            principals=issued.principals,
            key_id=f"{user}/{req.id}",
            serial=issued.serial,
            valid_after=issued.valid_after,
            valid_before=issued.valid_before,
            forwarding=forwarding,
        )
        await self.audit.record(
            "certificate.issued", actor=user, target=req.target, request_id=req.id,
            serial=str(issued.serial), key=issued.key_fingerprint,
            valid_before=issued.valid_before.isoformat(),
        )
        return cert, issued

    async def _request_for_cert(self, user: str, request_id: int | None) -> AccessRequest:
        now = utcnow()
        if request_id is None:
            mine = await self.store.list_requests(user=user, statuses=[RequestStatus.APPROVED])
            live = [r for r in mine if r.status_at(now) is RequestStatus.APPROVED]
            if not live:
                raise NotFound(
                    "you have no approved request in force; run `request TARGET --reason …`, "
                    "wait for approval, then `cert`"
                )
            return live[0]
        req = await self.store.get_request(request_id)
        if req is None or req.user != user:
            raise NotFound(f"you have no request {request_id}")
        status = req.status_at(now)
        if status is not RequestStatus.APPROVED:
            hint = " (waiting for approval)" if status is RequestStatus.PENDING else ""
            raise InvalidRequest(f"request {request_id} is {status.value}{hint}, not approved")
        return req
