"""Signing in, re-checking and ending bindings of SSH keys to people, kept in the state store."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

import asyncssh

from bastion.access import key_fingerprint
from bastion.audit import AuditTrail
from bastion.config import BastionConfig
from bastion.identity.claims import SignedInPerson, held_roles, person_from_claims
from bastion.identity.device_flow import DeviceAuthorization, Pending, TokenSet
from bastion.identity.errors import IdentityError, ProviderUnreachable, SignInRefused
from bastion.identity.people import with_people
from bastion.identity.provider import ProviderClient
from bastion.identity.sealing import TokenSeal
from bastion.identity.settings import IdentitySettings
from bastion.models import IdentityBinding, RequestStatus, SessionRecord, utcnow
from bastion.store import Store

__all__ = ["Identities"]

log = logging.getLogger("bastion.identity")

MAX_SIGN_IN_WAIT = 900.0  # seconds a `login` waits for the person, whatever the provider allows
# Sign-ins waiting at once on one bastion: any key may start one, so they are bounded.
MAX_PENDING_SIGN_INS = 64
# ... and from one client address, so that one host cannot take every place for 15 minutes.
MAX_PENDING_PER_ADDRESS = 8
# Ends the live sessions a predicate picks, with the reason shown to each; returns how many.
EndSessions = Callable[[Callable[[SessionRecord], bool], str], int]


class Identities:
    """The people signed in through the identity provider, and the bastion's view of its users.

    The store holds the bindings; this keeps a copy of them to answer `config` without I/O,
    refreshed by the sweep, by every change made here, and before every decision that matters.
    """

    def __init__(self, config: Callable[[], BastionConfig], store: Store, audit: AuditTrail,
                 seal: TokenSeal, end_sessions: EndSessions) -> None:
        self._file_config = config
        self.store = store
        self.audit = audit
        self._seal = seal
        self._end_sessions = end_sessions
        self._bindings: list[IdentityBinding] = []
        self._effective: tuple[BastionConfig, BastionConfig] | None = None
        self._provider: ProviderClient | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._refreshing = asyncio.Lock()
        self._pending: dict[str, int] = {}  # client address -> sign-ins waiting

    @property
    def settings(self) -> IdentitySettings | None:
        """The `[identity]` table in force."""
        return self._file_config().identity

    def provider(self) -> ProviderClient:
        """The provider client for the settings in force (a new one after a reload changes them)."""
        settings = self.settings
        if settings is None:
            raise SignInRefused("sign-in through an identity provider is not set up on this "
                                "bastion ([identity] in its config)")
        if self._provider is None or self._provider.settings != settings:
            self._provider = ProviderClient(settings)
        return self._provider

    def config(self) -> BastionConfig:
        """The config with a user for every person signed in now."""
        file = self._file_config()
        if self._effective is None or self._effective[0] is not file:
            self._effective = (file, with_people(file, self._bindings, utcnow()))
        return self._effective[1]

    def _remember(self, bindings: list[IdentityBinding]) -> None:
        self._bindings = bindings
        self._effective = None

    async def refresh(self) -> None:
        """Read the bindings again; remove the ones past key_ttl (auditing each once)."""
        if self.settings is None and not self._bindings:
            return
        # One at a time: a sweep's read from before a sign-in must not land after the sign-in's
        # own refresh and hide the new binding (its sessions would be ended as "removed").
        async with self._refreshing:
            now = utcnow()
            bindings = await self.store.identity_bindings()
            for stale in [b for b in bindings if b.expires_at <= now]:
                for gone in await self.store.unbind_identity(key_fingerprint=stale.key_fingerprint):
                    await self.audit.record("identity.expired", actor=gone.user,
                                            key=gone.key_fingerprint, reason="key_ttl reached")
            self._remember([b for b in bindings if b.expires_at > now])

    async def binding_for(self, key: asyncssh.SSHKey) -> IdentityBinding | None:
        """The binding of this key in force now, as the store has it."""
        fingerprint = key_fingerprint(key)
        found = await self.store.identity_bindings(key_fingerprint=fingerprint)
        now = utcnow()
        live = next((b for b in found if b.expires_at > now), None)
        known = next((b for b in self._bindings if b.key_fingerprint == fingerprint), None)
        if live != known:
            await self.refresh()
        return live

    # signing in ---------------------------------------------------------------------------

    async def sign_in(self, key: asyncssh.SSHKey, say: Callable[[str], Awaitable[None]],
                      gone: Callable[[], bool], client: str) -> IdentityBinding:
        """Run the device flow for this connection's key; bind it to the person who signed in."""
        fingerprint = key_fingerprint(key)
        address = client.rpartition(":")[0] or client
        if sum(self._pending.values()) >= MAX_PENDING_SIGN_INS:
            # Not audited one by one: a flood of these would flood the trail.
            raise SignInRefused(f"{MAX_PENDING_SIGN_INS} sign-ins are already waiting on this "
                                "bastion; try again in a minute")
        if self._pending.get(address, 0) >= MAX_PENDING_PER_ADDRESS:
            raise SignInRefused(f"{MAX_PENDING_PER_ADDRESS} sign-ins from {address} are already "
                                "waiting; finish or cancel one first")
        self._pending[address] = self._pending.get(address, 0) + 1
        try:
            return await self._sign_in(key, fingerprint, say, gone, client)
        finally:
            self._pending[address] -= 1
            if not self._pending[address]:
                del self._pending[address]

    async def _sign_in(self, key: asyncssh.SSHKey, fingerprint: str,
                       say: Callable[[str], Awaitable[None]], gone: Callable[[], bool],
                       client: str) -> IdentityBinding:
        user: str | None = None
        try:
            provider = self.provider()
            nonce = secrets.token_urlsafe(24)
            auth = await provider.start(nonce)
            link = auth.verification_uri_complete or auth.verification_uri
            await say(f"To sign in, open {auth.verification_uri} and enter the code "
                      f"{auth.user_code}\n" + (f"(or open {link})\n" if link != auth.verification_uri
                                               else "") + "Waiting for the identity provider...\n")
            tokens = await self._wait(provider, auth, gone)
            claims = await provider.claims(tokens, nonce)
            settings = provider.settings
            person = person_from_claims(claims, settings, frozenset(
                u.name for u in self._file_config().users))
            user = person.user
            binding = self._bind(person, key, tokens, nonce, settings)
            others = await self.store.identity_bindings(user=person.user)
            if any(b.subject != person.subject and b.expires_at > utcnow() for b in others):
                # A name reused at the provider must not inherit someone else's requests.
                raise SignInRefused(f"the name {person.user} is signed in here by another person "
                                    "(another subject at the provider); ask an auditor to "
                                    f"`unbind {person.user}` first")
            previous_owner = await self.store.name_owner(person.user)
            if previous_owner is not None and previous_owner != person.subject:
                await self._check_name_free(person.user)
        except IdentityError as exc:
            await self.audit.record("identity.sign_in_failed", actor=user, key=fingerprint,
                                    client=client, reason=str(exc))
            raise
        previous = await self.store.identity_bindings(key_fingerprint=fingerprint)
        await self.store.bind_identity(binding)
        await self.store.own_name(person.user, person.subject, utcnow())
        if previous_owner is not None and previous_owner != person.subject:
            await self.audit.record("identity.name_reassigned", actor=person.user,
                                    subject=person.subject, previous_subject=previous_owner)
        for earlier in previous:
            if earlier.user != binding.user:
                await self._end_key_sessions(earlier.user, fingerprint,
                                             f"this key was signed in again as {binding.user}")
        await self.audit.record(
            "identity.signed_in", actor=person.user, subject=person.subject,
            groups=list(person.groups), roles=list(person.roles), amr=list(person.amr),
            acr=person.acr, mfa=person.mfa, client=client)
        await self.audit.record("identity.bound", actor=person.user, key=fingerprint,
                                expires_at=binding.expires_at.isoformat())
        await self.refresh()
        return binding

    async def _check_name_free(self, user: str) -> None:
        """A name the provider now gives to another person passes on nothing: while requests
        made under it are still open, the new person cannot sign in as it."""
        now = utcnow()
        still_open = [r.id for r in await self.store.list_requests(
            user=user, statuses=(RequestStatus.PENDING, RequestStatus.APPROVED))
            if r.status_at(now) in (RequestStatus.PENDING, RequestStatus.APPROVED)]
        if still_open:
            numbers = ", ".join(str(n) for n in sorted(still_open))
            raise SignInRefused(f"the name {user} belonged to another person at the provider "
                                f"(another subject), whose requests {numbers} are still open; an "
                                "auditor must revoke them before the name can be signed in again")

    def _bind(self, person: SignedInPerson, key: asyncssh.SSHKey, tokens: TokenSet, nonce: str,
              settings: IdentitySettings) -> IdentityBinding:
        fingerprint = key_fingerprint(key)
        if self._file_config().user_for_key(key) is not None:
            raise SignInRefused("this SSH key is registered to a user in the bastion's config; "
                                "sign in with another key")
        sealed = self._seal.seal(self._tokens(tokens, nonce), fingerprint)
        line = key.export_public_key().decode().strip()
        return person.binding(fingerprint, line, utcnow(), settings.key_ttl, sealed)

    @staticmethod
    def _tokens(tokens: TokenSet, nonce: str | None) -> dict[str, str | None]:
        return {"refresh_token": tokens.refresh_token, "access_token": tokens.access_token,
                "nonce": nonce}

    async def _wait(self, provider: ProviderClient, auth: DeviceAuthorization,
                    gone: Callable[[], bool]) -> TokenSet:
        deadline = time.monotonic() + min(float(auth.expires_in), MAX_SIGN_IN_WAIT)
        interval = auth.interval
        while time.monotonic() < deadline:
            # Sleep in short steps: a client that hangs up stops the polling at once.
            until = time.monotonic() + interval
            while time.monotonic() < until:
                if gone():
                    raise SignInRefused("the SSH connection closed before the sign-in finished")
                await asyncio.sleep(min(0.2, max(0.0, until - time.monotonic())))
            answer = await provider.poll(auth, interval)
            if not isinstance(answer, Pending):
                return answer
            interval = answer.interval
        raise SignInRefused("the code expired before the sign-in was finished; run login again")

    # re-checks ------------------------------------------------------------------------------

    async def recheck(self, binding: IdentityBinding, client: str = "?") -> str | None:
        """Ask the provider about the person again when the last check is old enough.

        Returns why the person may not act now, or None. A person the provider no longer knows,
        or who left every mapped group, loses every binding and their live sessions.
        """
        settings = self.settings
        if settings is None:
            return "sign-in through the identity provider is no longer set up on this bastion"
        lock = self._locks.setdefault(binding.user, asyncio.Lock())
        async with lock:
            found = await self.store.identity_bindings(key_fingerprint=binding.key_fingerprint)
            if not found:
                return "your sign-in has ended (logout, unbind or re-check); run: login"
            binding = found[0]
            now = utcnow()
            if now - binding.checked_at < settings.recheck_interval:
                return None
            try:
                person, sealed = await self._ask_provider(binding, settings)
            except ProviderUnreachable as exc:
                await self.audit.record("identity.recheck_unreachable", actor=binding.user,
                                        key=binding.key_fingerprint, reason=str(exc))
                return f"{exc} (your sign-in must be re-checked before you act)"
            except IdentityError as exc:
                await self.audit.record("identity.recheck_failed", actor=binding.user,
                                        key=binding.key_fingerprint, client=client, reason=str(exc))
                await self.unbind(binding.user, by=None, reason=f"re-check failed: {exc}")
                return f"your sign-in is no longer valid: {exc}; run: login"
            await self.store.update_identity_check(
                binding.key_fingerprint, roles=person.roles, groups=person.groups, checked_at=now,
                sealed_tokens=sealed)
            await self.audit.record("identity.rechecked", actor=binding.user,
                                    key=binding.key_fingerprint, roles=list(person.roles),
                                    groups=list(person.groups))
            await self.refresh()
        return None

    async def _ask_provider(self, binding: IdentityBinding, settings: IdentitySettings
                            ) -> tuple[SignedInPerson, str]:
        provider = self.provider()
        tokens = self._seal.open(binding.sealed_tokens, binding.key_fingerprint)
        nonce = tokens.get("nonce")
        if tokens.get("refresh_token"):
            fresh = await provider.refresh(str(tokens["refresh_token"]))
            claims = await provider.claims(fresh, nonce if fresh.id_token else None)
            kept = TokenSet(None, fresh.access_token or tokens.get("access_token"),
                            fresh.refresh_token or str(tokens["refresh_token"]))
        elif tokens.get("access_token"):
            claims = await provider.userinfo(str(tokens["access_token"]))
            kept = TokenSet(None, str(tokens["access_token"]), None)
        else:
            raise SignInRefused("this bastion holds no token to re-check the sign-in with")
        names = frozenset(u.name for u in self._file_config().users)
        person = person_from_claims(claims, settings, names)
        if person.subject != binding.subject or person.user != binding.user:
            raise SignInRefused("the identity provider now names someone else")
        return person, self._seal.seal(self._tokens(kept, nonce), binding.key_fingerprint)

    # ending bindings ------------------------------------------------------------------------

    async def logout(self, key: asyncssh.SSHKey) -> IdentityBinding | None:
        """End this key's binding."""
        fingerprint = key_fingerprint(key)
        removed = await self.store.unbind_identity(key_fingerprint=fingerprint)
        for binding in removed:
            await self.audit.record("identity.logged_out", actor=binding.user,
                                    key=binding.key_fingerprint)
        await self.refresh()
        if removed:
            await self._end_key_sessions(removed[0].user, fingerprint,
                                         "you signed out of this key (logout)")
        return removed[0] if removed else None

    async def _end_key_sessions(self, user: str, fingerprint: str, reason: str) -> None:
        # Now, not at the sweep: the sweep ends a person's sessions only once the person is gone,
        # and another key of theirs may still be signed in.
        serials = {c.serial for c in await self.store.certificates_for_key(fingerprint)}
        self._end_sessions(lambda r: r.user == user and r.cert_serial in serials, reason)

    async def unbind(self, user: str, *, by: str | None, reason: str) -> list[IdentityBinding]:
        """End every binding of `user` and their live sessions (on the other bastions of a
        cluster through its re-check notification, or at their next sweep)."""
        removed = await self.store.unbind_identity(user=user)
        for binding in removed:
            await self.audit.record("identity.unbound", actor=by, user=user,
                                    key=binding.key_fingerprint, reason=reason)
        await self.refresh()
        if removed:
            ended = self._end_sessions(lambda r: r.user == user,
                                       f"your sign-in was ended: {reason}")
            log.info("unbound %s (%d key(s)); ended %d live session(s)", user, len(removed), ended)
        return removed

    # MFA ------------------------------------------------------------------------------------

    def target_refusal(self, binding: IdentityBinding, target: str) -> str | None:
        """Why this binding may not reach `target` for lack of an MFA sign-in, if so."""
        settings = self.settings
        if settings is None or binding.mfa or not settings.mfa.target_needs(target):
            return None
        return (f"{target} requires signing in with MFA (a second factor); your sign-in used "
                f"{', '.join(binding.amr) or 'no declared method'}: run login again and use "
                "your second factor")

    def withheld_note(self, binding: IdentityBinding) -> str | None:
        """Which of the binding's roles need an MFA sign-in it lacks, said as a hint."""
        settings = self.settings
        if settings is None:
            return None
        withheld = [r for r in binding.roles if r not in held_roles(binding, settings)]
        if not withheld:
            return None
        return (f"note: your role(s) {', '.join(withheld)} require signing in with MFA; your "
                f"sign-in used {', '.join(binding.amr) or 'no declared method'}: run login again "
                "and use your second factor\n")
