"""One SSH connection's authentication: who signed, for which user name, checked by every rule.

Identity comes only from the key that actually signed, for the user name that was finally
authenticated. Each publickey request is an attempt of its own: a query (no signature) with
someone else's certificate — certificates are public data — can pass the certificate checks and
still leaves nothing behind; the identity is set by the signed request that succeeds, and frozen
when asyncssh reports the authentication complete.

asyncssh's public hooks never see a certificate (`validate_ca_key` gets only the CA key, and
extensions it does not know are dropped), so the connection's `validate_public_key` is wrapped:
it is the one place where the certificate, the user name and the signature meet. Nothing else of
asyncssh's internals is used.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.public_key import SSHOpenSSHCertificate, decode_ssh_certificate, decode_ssh_public_key

from bastion import policy
from bastion.access import key_fingerprint
from bastion.config import CONTROL_USER, BastionConfig
from bastion.models import utcnow
from bastion.text import printable

if TYPE_CHECKING:
    from bastion.ssh.frontdoor import FrontDoor

__all__ = ["Identity", "Login", "wrong_key_reason"]

log = logging.getLogger("bastion.ssh.login")

ValidateFn = Callable[[str, bytes, bytes, bytes], Awaitable[bool]]

# A refused unauthenticated client costs the audit trail one bounded record per reason, and at
# most this many per connection; then it is disconnected. OpenSSH's MaxAuthTries is 6.
MAX_REFUSALS_PER_CONNECTION = 6


def wrong_key_reason(config: BastionConfig, target: str) -> str:
    """Why a certificate offered with a key other than the one it was issued for is refused."""
    return ("the certificate was not made with the key it was issued for; use that key, or get "
            f"your own: {policy.request_command(config, target)}")


@dataclass(frozen=True)
class Identity:
    """Who a connection authenticated as: the SSH user name and the key that signed for it.

    `user` is the registered user of a plain key (`access@`); `facts` the certificate's checked
    facts (a target).
    """

    username: str
    key: asyncssh.SSHKey
    user: str | None = None
    facts: policy.LoginFacts | None = None

    @property
    def person(self) -> str | None:
        """The bastion user behind this identity."""
        if self.facts is not None and self.facts.issued is not None:
            return self.facts.issued.user
        return self.user


@dataclass
class _Attempt:
    """One publickey request being validated; replaced by the next request, never shared."""

    username: str
    certificate_checked: policy.LoginFacts | None = None


class Login(asyncssh.SSHServer):
    """One client connection's authentication state."""

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer = "?"
        self._attempt: _Attempt | None = None
        self._signed: Identity | None = None
        self.identity: Identity | None = None  # set once, when authentication completes
        self.cert_refused: set[str] = set()
        # User names whose certificate passed a query but was never signed for: only to explain
        # a later refusal ("not made with the key it was issued for"), never an identity.
        self.cert_unsigned: set[str] = set()
        self.refusals: set[str] = set()
        self.control_channels = 0  # control commands running (sessions are the front door's)

    # asyncssh hooks ----------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        original: ValidateFn = conn.validate_public_key
        conn.validate_public_key = self._wrap_validate(original)  # type: ignore[method-assign,assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.door.connection_closed(self)

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Only the certificate of the attempt in progress, which just passed every check.
        attempt = self._attempt
        facts = attempt.certificate_checked if attempt is not None else None
        return (
            attempt is not None and facts is not None
            and attempt.username == username == facts.username
            and self.door.bastion.user_ca.is_signer_of(key)
        )

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """A plain key: registered keys may use `access@`; targets need a certificate."""
        config = self.door.bastion.config
        if username == CONTROL_USER:
            user = config.user_for_key(key)
            if user is None and config.identity is not None:
                return True  # any key may run `login` (and `help`); commands check its binding
            if user is None:
                await self._refuse(username, None, "this SSH key is not registered on the bastion; "
                                   "ask an administrator to add its public key to your user",
                                   key=key_fingerprint(key))
                return False
            if user.expired(utcnow()):
                await self._refuse(username, user.name, f"the account of {user.name} has expired")
                return False
            return True
        user = config.user_for_key(key)
        who = user.name if user else None
        if username in self.cert_refused:
            return False  # the refused certificate was already explained
        if username in self.cert_unsigned:
            await self._refuse(username, who, wrong_key_reason(config, username))
        elif config.target(username) is None:
            await self._refuse(username, who, f"there is no target named {printable(username)!r}; "
                               f"run: ssh -p {config.server.listen_port} access@"
                               f"{config.server.public_host} targets")
        else:
            # OpenSSH offers the plain key before its certificate: stay quiet when this key holds
            # a certificate that would pass, and explain the newest one's problem otherwise.
            reason = await self.door.stored_certificate_problem(username, key)
            if reason is None:
                return False
            await self._refuse(username, who, reason, key=key_fingerprint(key))
        return False

    def auth_completed(self) -> None:
        assert self.conn is not None
        signed = self._signed
        username = self.conn.get_extra_info("username")
        if signed is None or signed.username != username:
            # Cannot happen with asyncssh's flow; if it ever does, no identity is better than a
            # wrong one: every channel of this connection is then refused.
            log.error("authentication completed without a matching signed attempt; closing")
            self.conn.close()
            return
        self.identity = signed
        facts = signed.facts
        if facts is not None and facts.issued is not None:
            self.door.spawn(self.door.bastion.audit.record(
                "login.success", actor=facts.issued.user, target=facts.username,
                request_id=facts.issued.request_id, serial=str(facts.serial), client=self.peer,
            ))

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        """`ssh -L`, `-W`, `-D`: a forwarded channel, checked and run in the session lifecycle."""
        if self.identity is None or self.identity.facts is None:
            return False
        return self.door.forwards.open(self, self.identity, dest_host, dest_port)

    # certificate checks ------------------------------------------------------------------

    def _wrap_validate(self, original: ValidateFn) -> ValidateFn:
        async def validate(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            attempt = _Attempt(username)
            self._attempt = attempt
            try:
                return await self._validate(attempt, original, key_data, msg, signature)
            finally:
                if self._attempt is attempt:
                    self._attempt = None

        return validate

    async def _validate(self, attempt: _Attempt, original: ValidateFn, key_data: bytes,
                        msg: bytes, signature: bytes) -> bool:
        username = attempt.username
        try:
            cert = decode_ssh_certificate(key_data)
        except (asyncssh.KeyImportError, ValueError):
            cert = None
        facts: policy.LoginFacts | None = None
        if isinstance(cert, SSHOpenSSHCertificate):
            if username == CONTROL_USER:
                return False  # access@ takes the plain key that the client offers next
            facts = await self.door.login_facts(username, cert)
            reason = await self.door.sign_in_refusal(facts, cert.key, self.peer)
            reason = reason or policy.check_login(self.door.bastion.config, facts, utcnow())
            if reason is not None:
                self.cert_refused.add(username)
                actor = facts.issued.user if facts.issued else facts.key_id.partition("/")[0]
                await self._refuse(username, actor or None, reason, serial=str(facts.serial))
                return False
            attempt.certificate_checked = facts
        elif cert is not None:
            return False  # X.509 chains are not used here
        ok = await original(username, key_data, msg, signature)
        if ok and facts is not None and not msg:
            self.cert_unsigned.add(username)
        if ok and msg and signature:
            # Signed and verified: the identity is this key's, for this user name, and no other.
            if facts is not None and isinstance(cert, SSHOpenSSHCertificate):
                self._signed = Identity(username, cert.key, facts=facts)
            else:
                key = decode_ssh_public_key(key_data)
                user = self.door.bastion.config.user_for_key(key)
                self._signed = Identity(username, key, user=user.name if user else None)
        elif not ok and msg and facts is not None:
            # Every check passed but the signature did not: someone else's certificate.
            self.cert_refused.add(username)
            await self._refuse(username, facts.issued.user if facts.issued else None,
                               wrong_key_reason(self.door.bastion.config, username))
        return ok

    async def _refuse(self, username: str, actor: str | None, reason: str, **details: Any) -> None:
        if reason in self.refusals:
            return
        self.refusals.add(reason)
        assert self.conn is not None
        if len(self.refusals) > MAX_REFUSALS_PER_CONNECTION:
            self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                                 "bastion: too many refused login attempts on one connection")
            return
        shown = printable(username)
        self.conn.send_auth_banner(f"bastion: access to {shown} refused: {reason}\r\n")
        target = None if username == CONTROL_USER else shown
        await self.door.login_refused(
            actor=actor, target=target, reason=reason, client=self.peer, username=shown, **details)
