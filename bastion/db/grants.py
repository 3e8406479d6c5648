"""Grant accounts as the running bastion uses them: a login for each SQL session, checked first,
and accounts ended when their grant ends.

`login` runs before every SQL session: it checks that the target's masked views match the config,
creates (or refreshes) the grant's own account, and checks through the database's catalog that the
account cannot read a masked column. Any problem refuses the session with a message naming the
target and `bastion db setup`; the admin account is never handed to a session. `sweep` (every few
seconds, and at once on revoke) ends accounts whose grant is over: revoked, window ended, user
removed, target gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from bastion.audit import AuditTrail
from bastion.config import BastionConfig, Target
from bastion.db.accounts import AccountNames, Grant
from bastion.db.admin import DatabaseError, admin_session, first_line, logs_in
from bastion.db.layout import MASKED_SUFFIX, Layout
from bastion.errors import BastionError
from bastion.models import AccessRequest, RequestStatus, utcnow
from bastion.secrets import Secret
from bastion.sql.engine import LOOKUP_BUDGET
from bastion.sql.lookups import Lookups
from bastion.store import Store

__all__ = ["DatabaseGrants", "GrantLogin", "MaskingNotReady", "StoreLookupBudget", "target_key"]

log = logging.getLogger("bastion.db")


class MaskingNotReady(BastionError):
    """The target's masking is missing, out of date, or the grant account could read raw data."""


@dataclass(frozen=True)
class GrantLogin:
    """How one SQL session logs in: the grant's own account."""

    account: str
    password: Secret = field(repr=False)
    database: str
    lookups: Lookups | None  # None: nothing is masked for this grant


def target_key(masking_key: bytes, target: Target) -> bytes:
    """The key of a database's keyed hashes, derived from the bastion's masking key. Targets
    that name the same database share it (and must share their masking rules)."""
    place = f"{target.kind}:{target.host}:{target.port}/{target.database or target.login}"
    return hmac.new(masking_key, b"bastion-db-masking:" + place.encode(), hashlib.sha256).digest()


def setup_target(target: Target, masking_key: bytes, *, apply: bool) -> tuple[Layout, list[str]]:
    """Plan (and with `apply`, run) a target's provisioning; blocking. Returns the layout and
    the problems left after it (empty when up to date)."""
    with admin_session(target) as admin:
        layout = admin.layout()
        if apply and layout.masked:  # a target without masked columns leaves the database as is
            try:
                admin.apply(layout, target_key(masking_key, target))
            except DatabaseError as exc:
                raise MaskingNotReady(f"{target.name}: setting up the masked views failed: "
                                      f"{first_line(exc)}") from None
        return layout, admin.layout_problems(layout)


@dataclass
class StoreLookupBudget:
    """A grant's lookups, counted in the state store: a restart or another bastion does not
    give a grant its budget back."""

    store: Store
    request_id: int
    limit: int = LOOKUP_BUDGET

    async def spend(self, count: int) -> tuple[bool, int]:
        """Count `count` more lookups if the grant stays within its limit."""
        return await self.store.spend_lookups(self.request_id, count, self.limit)


class DatabaseGrants:
    """The bastion's grant accounts on every SQL target."""

    def __init__(self, config: Callable[[], BastionConfig], store: Store, audit: AuditTrail,
                 masking_key: bytes, names: AccountNames) -> None:
        self._config = config
        self.names = names
        self.store = store
        self.audit = audit
        self.masking_key = masking_key
        self._locks: dict[int, asyncio.Lock] = {}
        self._unswept: dict[str, str] = {}  # target → why its last sweep failed
        # (target, account) → the password last set, and its stored verifier where the admin
        # may read it: a grant account may change its own password (PostgreSQL and MariaDB let
        # it), and then log in past the bastion.
        self._passwords: dict[tuple[str, str], tuple[str, str | None]] = {}

    async def login(self, target: Target, request: AccessRequest) -> GrantLogin:
        """The grant's account for a new session, checked; raise MaskingNotReady otherwise."""
        grant = Grant(request_id=request.id, user=request.user, unmasked=request.unmasked,
                      read_only=target.read_only, expires_at=request.expires_at)
        lock = self._locks.setdefault(request.id, asyncio.Lock())
        async with lock:  # the sweep checks this grant's password under the same lock
            login, verifier = await asyncio.to_thread(self._login, target, grant)
            self._passwords[(target.name, login.account)] = (login.password.reveal(), verifier)
        return login

    def _login(self, target: Target, grant: Grant) -> tuple[GrantLogin, str | None]:
        with admin_session(target) as admin:
            layout = admin.layout()
            masking = bool(layout.masked) and not grant.unmasked
            if masking:
                problems = admin.layout_problems(layout)
                if problems:
                    raise MaskingNotReady(
                        f"{target.name}: {problems[0]}; masked sessions are refused until an "
                        f"operator runs `bastion db setup {target.name} --config FILE`")
            account = self.names.account(grant.user, grant.request_id)
            password = admin.ensure_account(layout, grant, account)
            verifier = admin.verifier(account)
            if masking:
                problems = admin.account_problems(layout, account)
                if problems:
                    admin.end_account(account)
                    raise MaskingNotReady(f"{target.name}: {problems[0]}; the session is refused "
                                          "(fix the privileges, then run `bastion db setup "
                                          f"{target.name} --config FILE`)")
        database = layout.database
        if masking and layout.dialect == "mysql":
            database += MASKED_SUFFIX
        lookups = None
        if masking:
            strategies = {
                (layout.view_schema(m.table.schema).lower(), m.table.name.lower(), c.lower()): s
                for m in layout.masked
                for c, s in zip(m.table.columns, m.strategies, strict=True) if s}
            lookups = Lookups(frozenset(c for _, _, c in strategies),
                              target_key(self.masking_key, target), strategies)
        return GrantLogin(account, Secret(password), database, lookups), verifier

    async def end_request(self, request: AccessRequest) -> None:
        """End a grant's account now (revoke); the sweep retries if the database is away."""
        target = self._config().target(request.target)
        if target is None or target.kind == "ssh":
            return
        self._locks.pop(request.id, None)
        try:
            await asyncio.to_thread(self._end, target, {request.id})
        except Exception as exc:
            log.warning("%s: could not end the account of request %d yet: %s", target.name,
                        request.id, exc)

    def _end(self, target: Target, request_ids: set[int]) -> list[str]:
        ended = []
        with admin_session(target) as admin:
            for account in admin.accounts(self.names.prefix):
                if self.names.request_of(account) in request_ids:
                    admin.end_account(account)
                    ended.append(account)
        return ended

    async def sweep(self) -> None:
        """End the accounts of grants that are over, on every SQL target."""
        config = self._config()
        now = utcnow()
        for target in config.targets:
            if target.kind == "ssh":
                continue
            try:
                accounts = await asyncio.to_thread(self._accounts, target)
                over: set[int] = set()
                active: set[int] = set()
                for account in accounts:
                    request_id = self.names.request_of(account)
                    if request_id is None:
                        continue
                    request = await self.store.get_request(request_id)
                    if request is None or request.target != target.name:
                        continue  # another target's account on the same server
                    user = config.user(request.user)
                    if (request.status_at(now) is not RequestStatus.APPROVED or user is None
                            or user.expired(now)):
                        over.add(request_id)
                    else:
                        active.add(request_id)
                if over:
                    for request_id in over:
                        self._locks.pop(request_id, None)
                    for account in await asyncio.to_thread(self._end, target, over):
                        self._passwords.pop((target.name, account), None)
                        await self.audit.record("db.account_ended", target=target.name,
                                                request_id=self.names.request_of(account), account=account)
                live = [a for a in accounts if self.names.request_of(a) in active]
                await self._check_passwords(target, live)
            except Exception as exc:
                # Once per change, not every two seconds while a database is away.
                if self._unswept.get(target.name) != str(exc):
                    log.warning("%s: grant accounts not swept: %s", target.name, exc)
                self._unswept[target.name] = str(exc)
            else:
                if self._unswept.pop(target.name, None) is not None:
                    log.info("%s: grant accounts swept again", target.name)

    async def _check_passwords(self, target: Target, accounts: list[str]) -> None:
        """An account whose password is not the one the bastion set was changed by someone
        else (the account itself can): it ends, with its connections. An account whose password
        this bastion does not know (it restarted) gets a new one, its connections ended. One
        admin session for all of a target's accounts; their grants' sessions wait meanwhile."""
        if not accounts:
            return
        async with contextlib.AsyncExitStack() as held:
            for request_id in sorted({self.names.request_of(a) or 0 for a in accounts}):
                await held.enter_async_context(self._locks.setdefault(request_id, asyncio.Lock()))
            known = {a: self._passwords.get((target.name, a)) for a in accounts}
            reset, tampered = await asyncio.to_thread(self._audit_passwords, target, known)
            for account, password in reset.items():
                self._passwords[(target.name, account)] = password
            for account in tampered:
                self._passwords.pop((target.name, account), None)
        for account in tampered:
            log.warning("%s: account %s changed its password: ended", target.name, account)
            await self.audit.record("db.account_tampered", target=target.name,
                                    request_id=self.names.request_of(account), account=account,
                                    reason="its password was changed outside the bastion")

    @staticmethod
    def _audit_passwords(target: Target, known: dict[str, tuple[str, str | None] | None]
                         ) -> tuple[dict[str, tuple[str, str | None]], list[str]]:
        """Reset the passwords this bastion does not know; end the accounts whose password is
        not the one it set (by the stored verifier where the admin may read it: a server that
        trusts every login tells nothing by a login; else by logging in)."""
        reset: dict[str, tuple[str, str | None]] = {}
        tampered: list[str] = []
        with admin_session(target) as admin:
            for account, last in known.items():
                if last is None:
                    password = admin.reset_password(account)
                    reset[account] = (password, admin.verifier(account))
                    continue
                password, verifier = last
                unchanged = (admin.verifier(account) == verifier if verifier is not None
                             else logs_in(target, account, password))
                if not unchanged:
                    admin.end_account(account)
                    tampered.append(account)
        return reset, tampered

    def _accounts(self, target: Target) -> list[str]:
        with admin_session(target) as admin:
            return admin.accounts(self.names.prefix)
