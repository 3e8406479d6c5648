"""The SSH front door: `access@` runs control commands, `TARGET@` opens a session on a target.

Logins are checked here with every rule of the security design; a refused login gets an SSH
authentication banner saying why and what to run next, never a bare "Permission denied".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.public_key import SSHOpenSSHCertificate

from bastion import policy
from bastion.access import key_fingerprint
from bastion.ca import CertificateInfo, certificate_info
from bastion.config import CONTROL_USER, BastionConfig, Target
from bastion.control import HELP, ControlPlane
from bastion.errors import BastionError
from bastion.models import AccessRequest, IssuedCertificate, SessionRecord, SessionStatus, utcnow
from bastion.sessions import LiveSession, run_target_session
from bastion.ssh.file_session import refusing_server, start_transfer
from bastion.ssh.forwarding import Forwards
from bastion.ssh.login import Identity, Login
from bastion.text import terminal_safe
from recorder import RECORDING_SUFFIX

if TYPE_CHECKING:
    from bastion.server import Bastion

__all__ = ["FrontDoor"]

log = logging.getLogger("bastion.ssh.frontdoor")

# OpenSSH's MaxSessions is 10 per connection; a user's live sessions are bounded on each bastion.
MAX_CHANNELS_PER_CONNECTION = 10
MAX_LIVE_SESSIONS_PER_USER = 32
# Refused logins audited per minute (bastion-wide, a token bucket); what is dropped past that is
# reported as a count in the next event that gets through.
REFUSALS_PER_MINUTE = 120
MAX_REASON = 300


class _AuditBudget:
    """A token bucket of audit records (`per_minute`, refilled steadily); counts what it dropped."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._tokens = self.capacity
        self._at = time.monotonic()
        self._suppressed = 0

    def take(self) -> tuple[bool, int]:
        """(whether to record this one, how many were dropped before it, to report now)."""
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            self._suppressed += 1
            return False, 0
        self._tokens -= 1
        reported, self._suppressed = self._suppressed, 0
        return True, reported




def _login_command(config: BastionConfig) -> str:
    """The command that signs a key in through the identity provider."""
    server = config.server
    port = "" if server.listen_port == 22 else f"-p {server.listen_port} "
    return f"ssh {port}access@{server.public_host} login"


class FrontDoor:
    """Accepts SSH connections for the bastion."""

    def __init__(self, bastion: Bastion) -> None:
        self.bastion = bastion
        self.live: dict[str, LiveSession] = {}
        self.forwards = Forwards(self)
        self._channels: dict[Login, set[LiveSession]] = {}
        self._opening: Counter[Login] = Counter()  # places held by sessions being opened
        self._opening_by: Counter[str] = Counter()
        self._server: asyncssh.SSHAcceptor | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refusals = _AuditBudget(REFUSALS_PER_MINUTE)
        # What `kill` calls, and what hears of each ended session: in a cluster, the cluster's.
        self.end_session: Callable[[str, str], Awaitable[bool]] = self.end_live_session
        self.session_ended: Callable[[], None] = lambda: None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background, keeping a reference until it finishes."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Listen on the configured address."""
        server = self.bastion.config.server
        self._server = await asyncssh.create_server(
            self._new_login,
            server.listen_host,
            server.listen_port,
            server_host_keys=[self.bastion.host_key],
            process_factory=self._process,
            # sftp (and scp, which speaks sftp since OpenSSH 9) is relayed to the target where
            # policy allows file transfer (bastion/ssh/file_transfer.py), refused with a message
            # otherwise; without a factory asyncssh would refuse the subsystem silently.
            sftp_factory=self._sftp_session,
            encoding=None,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            # The SQL console edits lines itself; shells get the target's own line discipline.
            line_editor=False,
            login_timeout=30,
            keepalive_interval=30,
            server_version="Bastion",
        )
        log.info("listening on %s:%d", server.listen_host, self.port)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and end live sessions."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for session in list(self.live.values()):
            session.end("the bastion is shutting down")
        # Let ended sessions write their last records before the store closes (a recording gets
        # RECORDING_GRACE to close, then is left behind).
        for _ in range(160):
            if not self.live:
                break
            await asyncio.sleep(0.05)

    def _new_login(self) -> Login:
        return Login(self)

    # the lifecycle's bookkeeping per connection and per user ------------------------------

    def channel_limit(self, login: Login, person: str | None) -> str | None:
        """Why one more session or forwarded channel is refused, if it is (opening ones count)."""
        server = self.bastion.config.server
        on_connection = (len(self._channels.get(login, ())) + login.control_channels
                         + self._opening[login])
        if on_connection >= MAX_CHANNELS_PER_CONNECTION:
            return (f"at most {MAX_CHANNELS_PER_CONNECTION} sessions and forwarded channels at once "
                    "on one SSH connection; close one, or open another connection")
        if person is not None:
            mine = sum(1 for live in self.live.values() if live.record.user == person)
            mine += self._opening_by[person]
            if mine >= MAX_LIVE_SESSIONS_PER_USER:
                return (f"{person} already has {mine} live sessions on bastion {server.bastion_id} "
                        f"(the limit is {MAX_LIVE_SESSIONS_PER_USER}); end some first")
        return None

    def reserve(self, login: Login, person: str) -> str | None:
        """Hold a place for a session being opened, or say why there is none. The check and the
        hold happen together, so channels opened at once cannot all pass the same count."""
        reason = self.channel_limit(login, person)
        if reason is None:
            self._opening[login] += 1
            self._opening_by[person] += 1
        return reason

    def release(self, login: Login, person: str) -> None:
        """Give back a place held by `reserve` (the session started, or failed to)."""
        self._opening[login] -= 1
        self._opening_by[person] -= 1
        if self._opening[login] <= 0:
            del self._opening[login]
        if self._opening_by[person] <= 0:
            del self._opening_by[person]

    def track(self, login: Login, live: LiveSession) -> None:
        """A session (or forwarded channel) of this connection started (its place was held)."""
        self.release(login, live.record.user)
        self.live[live.record.id] = live
        self._channels.setdefault(login, set()).add(live)

    def untrack(self, login: Login, live: LiveSession) -> None:
        """It ended."""
        self.live.pop(live.record.id, None)
        mine = self._channels.get(login)
        if mine is not None:
            mine.discard(live)
            if not mine:
                del self._channels[login]
        self.session_ended()

    def ended_by_bastion(self, login: Login, reason: str) -> None:
        """A forwarded channel was ended by the bastion: when nothing else is left on the
        connection, disconnect it with the reason, which the OpenSSH client prints (a forwarded
        channel has no stderr of its own)."""
        if not self._channels.get(login) and login.conn is not None:
            login.conn.disconnect(asyncssh.DISC_BY_APPLICATION, f"bastion: {reason}")

    def connection_closed(self, login: Login) -> None:
        """The client's connection is gone."""
        self.forwards.forget(login)

    async def login_refused(self, **details: Any) -> None:
        """Audit a refused login, within a budget so a flood cannot grow the trail without bound."""
        allowed, suppressed = self._refusals.take()
        if suppressed:
            await self.bastion.audit.record("login.refused_suppressed", count=suppressed,
                                            reason="more refused logins than the audit budget")
        if allowed:
            details["reason"] = str(details.get("reason", ""))[:MAX_REASON]
            await self.bastion.audit.record("login.refused", **details)

    async def login_facts(self, username: str, cert: SSHOpenSSHCertificate) -> policy.LoginFacts:
        """Gather what the store knows about a presented certificate."""
        info = certificate_info(cert)
        signed_here = self.bastion.user_ca.is_signer_of(cert.signing_key)
        return await self._facts(username, info, signed_here, key_fingerprint(cert.key))

    async def sign_in_refusal(self, facts: policy.LoginFacts, key: asyncssh.SSHKey | None,
                              peer: str) -> str | None:
        """Why a certificate may not be used now, if so: a config user's certificate whose key is
        no longer registered to them (a key removed from the config, or a name now in the config
        that a signed-in person's certificate was issued for); a signed-in person's whose sign-in
        ended, whose re-check failed or who lacks MFA."""
        issued = facts.issued
        if issued is None or key is None:
            return None
        file = self.bastion.file_config
        user = file.user(issued.user)
        if user is not None:
            # The config's keys are unique to one user: only this user's need looking at.
            if not user.holds(key):
                return (f"the key this certificate was issued for is no longer registered to "
                        f"{issued.user} on the bastion; use a key of yours and get a new "
                        "certificate, or ask an administrator")
            return None
        if file.identity is None:
            return None
        people = self.bastion.identities
        binding = await people.binding_for(key)
        if binding is None or binding.user != issued.user:
            return (f"the sign-in of {issued.user} with this key has ended (logout, unbind or "
                    f"key_ttl); sign in again: {_login_command(self.bastion.config)}")
        return await people.recheck(binding, peer) or people.target_refusal(binding,
                                                                             facts.username)

    async def _on_record(self, serial: int) -> tuple[
            IssuedCertificate | None, AccessRequest | None, bool]:
        """What the store says now of a certificate: as issued, its request, whether revoked."""
        store = self.bastion.store
        issued = await store.get_certificate(serial)
        if issued is None:
            return None, None, False
        return issued, await store.get_request(issued.request_id), await store.is_revoked(serial)

    async def refreshed(self, facts: policy.LoginFacts) -> policy.LoginFacts:
        """The same certificate's facts as the store has them now."""
        issued, request, revoked = await self._on_record(facts.serial)
        return dataclasses.replace(facts, issued=issued, request=request, serial_revoked=revoked)

    async def _facts(
        self, username: str, info: CertificateInfo, signed_here: bool, fingerprint: str
    ) -> policy.LoginFacts:
        issued, request, revoked = await self._on_record(info.serial)
        return policy.LoginFacts(
            username=username,
            key_id=info.key_id,
            serial=info.serial,
            principals=info.principals,
            valid_after=info.valid_after,
            valid_before=info.valid_before,
            signed_by_user_ca=signed_here,
            issued=issued,
            serial_revoked=revoked,
            request=request,
            key_fingerprint=fingerprint,
        )

    async def stored_certificate_problem(self, username: str, key: asyncssh.SSHKey) -> str | None:
        """Why the newest certificate issued to `key` for `username` would be refused, if it would.

        None means such a certificate would pass (the client will offer it next).
        """
        config = self.bastion.config
        fingerprint = key_fingerprint(key)
        issued = [c for c in await self.bastion.store.certificates_for_key(fingerprint)
                  if username in c.principals]
        if not issued:
            return (f"{username} needs a certificate from this bastion. Run: "
                    f"{policy.request_command(config, username)}, then once approved: "
                    "cert > ~/.ssh/YOUR_KEY-cert.pub")
        newest = issued[0]
        info = CertificateInfo(
            key_id=f"{newest.user}/{newest.request_id}", serial=newest.serial,
            principals=newest.principals, valid_after=newest.valid_after,
            valid_before=newest.valid_before,
        )
        facts = await self._facts(username, info, True, fingerprint)
        return policy.check_login(config, facts, utcnow())

    async def _process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        conn = process.channel.get_connection()
        assert isinstance(conn, asyncssh.SSHServerConnection)
        login = conn.get_owner()
        assert isinstance(login, Login)
        try:
            if process.get_extra_info("username") == CONTROL_USER:
                limit = self.channel_limit(login, None)
                if limit is not None:
                    process.stderr.write(f"error: {limit}\n".encode())
                    process.exit(1)
                    return
                login.control_channels += 1
                try:
                    await self._control(process, login)
                finally:
                    login.control_channels -= 1
            else:
                await self._target_session(process, login, conn)
        except Exception:
            log.exception("session failed")
            with contextlib.suppress(OSError):
                process.stderr.write(b"bastion: internal error; the session was ended\r\n")
                process.exit(255)

    async def _control(self, process: asyncssh.SSHServerProcess[bytes], login: Login) -> None:
        identity = login.identity
        if identity is None or identity.username != CONTROL_USER:
            process.stderr.write(b"error: this connection did not sign in as access@\n")
            process.exit(1)
            return
        command = process.command
        words = (command or "").split()
        binding = None
        name = identity.user
        if self.bastion.config.identity is not None and \
                self.bastion.file_config.user_for_key(identity.key) is None:
            # Not a key of the config: who it is comes from its binding, looked up per command.
            binding = await self.bastion.identities.binding_for(identity.key)
            if words[:1] == ["login"]:
                await self._sign_in(process, login, identity.key, "--json" in words)
                return
            refusal = None if binding else self._unbound_refusal(words)
            if refusal is None and binding is not None:
                refusal = await self.bastion.identities.recheck(binding, login.peer)
            if refusal == HELP:
                process.stdout.write(HELP.replace("\n", "\r\n").encode())
                process.exit(0)
                return
            if refusal is not None:
                process.stderr.write(f"error: {refusal}\n".encode())
                process.exit(1)
                return
            name = binding.user if binding else None
        elif words[:1] == ["login"]:
            why = (f"this key belongs to {identity.user}, a user of the bastion's config; login "
                   "is for keys that are not registered (use another key)"
                   if self.bastion.config.identity is not None else
                   "sign-in through an identity provider is not set up on this bastion")
            process.stderr.write(f"error: {why}\n".encode())
            process.exit(1)
            return
        # Checked per command too: the connection may outlive the user's place in the config.
        user = self.bastion.config.user(name) if name else None
        if user is None or user.expired(utcnow()) or self.bastion.config.user_for_key(
                identity.key) != user:
            process.stderr.write(f"error: {name} may no longer use this bastion "
                                 "(removed, expired or key changed)\n".encode())
            process.exit(1)
            return
        if command is None:
            process.stdout.write(HELP.replace("\n", "\r\n").encode())
            process.exit(0)
            return
        plane = ControlPlane(self.bastion.workflow, user.name, identity.key,
                             self.end_session, self.bastion.identities, binding)
        result = await plane.run(command)
        out = result.stdout
        if isinstance(out, str | bytes):
            if out:
                process.stdout.write(out.encode() if isinstance(out, str) else out)
        else:
            try:
                async for chunk in out:  # a recording file, streamed with flow control
                    process.stdout.write(chunk)
                    await process.stdout.drain()
            except (OSError, asyncssh.Error):
                return  # the client went away mid-file
            finally:
                aclose = getattr(out, "aclose", None)
                if aclose is not None:
                    await aclose()
        note = self.bastion.identities.withheld_note(binding) if binding else None
        if result.stderr:
            process.stderr.write(result.stderr.encode())
        if note and result.exit_status:
            process.stderr.write(note.encode())
        process.exit(result.exit_status)

    def _unbound_refusal(self, words: list[str]) -> str:
        """What an unbound key is told: help, or that it must sign in first."""
        if words[:1] in ([], ["help"]):
            return HELP
        return ("this SSH key is not signed in. Sign in through your identity provider first: "
                f"{_login_command(self.bastion.config)}")

    async def _sign_in(self, process: asyncssh.SSHServerProcess[bytes], login: Login,
                       key: asyncssh.SSHKey, as_json: bool) -> None:
        """`login`: the device flow, its prompts on stderr, the binding on stdout."""

        async def say(text: str) -> None:
            # The URL and the code come from the provider: shown, never interpreted.
            process.stderr.write(terminal_safe(text, keep_newlines=True).encode())
            await process.stderr.drain()

        try:
            binding = await self.bastion.identities.sign_in(
                key, say, process.channel.is_closing, login.peer)
        except BastionError as exc:
            with contextlib.suppress(OSError, asyncssh.Error):
                process.stderr.write(f"error: sign-in failed: {terminal_safe(str(exc))}\n".encode())
                process.exit(1)
            return
        if as_json:
            process.stdout.write((json.dumps(binding.to_json(), indent=2) + "\n").encode())
        else:
            note = self.bastion.identities.withheld_note(binding) or ""
            process.stdout.write(terminal_safe(
                f"signed in as {binding.user} (roles: {', '.join(binding.roles)}; groups: "
                f"{', '.join(binding.groups) or '-'}{'; MFA' if binding.mfa else ''}).\n"
                f"This key works for request, cert and targets until "
                f"{binding.expires_at:%Y-%m-%d %H:%M} UTC.\n{note}", keep_newlines=True).encode())
        process.exit(0)

    async def _target_session(
        self, process: asyncssh.SSHServerProcess[bytes], login: Login,
        conn: asyncssh.SSHServerConnection,
    ) -> None:
        newline = "\r\n" if process.term_type else "\n"

        def refuse(text: str) -> None:
            process.stderr.write(f"{text}{newline}".encode())
            process.exit(1)

        opened = await self._start_session(
            login, refuse, command=process.command, term=process.term_type)
        if opened is None:
            return
        live, target = opened
        status, reason = SessionStatus.ENDED_ABNORMALLY, "internal error"
        try:
            status, reason = await run_target_session(self.bastion, process, live, target)
        finally:
            await self._end_session(login, live, status, reason)

    async def _sftp_session(self, chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        """An sftp (or scp) client's session: relayed to the target's SFTP server when the target
        and one of the user's roles allow file transfer, refused with a message otherwise."""
        try:
            return await self._sftp_server(chan)
        except Exception:
            log.exception("sftp session failed")
            with contextlib.suppress(OSError, asyncssh.Error):
                chan.write_stderr(b"bastion: internal error; the session was ended\r\n")
                chan.exit(255)
            return refusing_server(chan, "internal error")

    async def _sftp_server(self, chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        login = chan.get_connection().get_owner()

        def refuse(text: str) -> None:
            chan.write_stderr(f"{text}\r\n".encode())
            chan.exit(1)

        identity = login.identity if isinstance(login, Login) else None
        if not isinstance(login, Login) or identity is None or identity.username == CONTROL_USER:
            reason = "file transfer goes to a target: sftp TARGET@bastion, with its certificate"
            refuse(f"bastion: {reason}")
            await self.bastion.audit.record(
                "transfer.refused", actor=identity.user if identity else None, subsystem="sftp",
                reason=reason)
            return refusing_server(chan, reason)
        opened = await self._start_session(login, refuse, command=None, term=None,
                                           subsystem="sftp")
        if opened is None:
            return refusing_server(chan, "the session was refused")
        live, target = opened

        async def end(status: SessionStatus, reason: str) -> None:
            await self._end_session(login, live, status, reason)

        try:
            return await start_transfer(self.bastion, chan, live, target, end)
        except BaseException:
            await end(SessionStatus.ENDED_ABNORMALLY, "internal error")
            raise

    async def _start_session(self, login: Login, refuse: Callable[[str], None], *,
                             command: str | None, term: str | None, subsystem: str | None = None
                             ) -> tuple[LiveSession, Target] | None:
        """Check the connection's certificate again and open a session on its target (store,
        live registry, audit); None when refused (`refuse` has told the user why)."""
        identity = login.identity
        facts = identity.facts if identity else None
        target = self.bastion.config.target(facts.username) if facts else None
        if facts is None or facts.issued is None or facts.request is None or target is None:
            # Fail closed: a target session exists only for a certificate that passed the checks.
            refuse("bastion: no checked certificate for this session")
            return None
        # Every session checks again: one SSH connection can open many channels (ControlMaster),
        # and the request may have been revoked or the user removed since the login.
        facts = await self.refreshed(facts)
        reason = await self.sign_in_refusal(facts, identity.key if identity else None, login.peer)
        reason = reason or policy.check_login(self.bastion.config, facts, utcnow())
        if reason is None and facts.request is not None and facts.issued is not None:
            reason = self.reserve(login, facts.issued.user)
        if reason is not None or facts.issued is None or facts.request is None:
            why = reason or "the certificate is no longer on record"
            await self.bastion.audit.record("session.refused", actor=facts.key_id.split("/")[0],
                                            target=target.name, reason=why, client=login.peer)
            refuse(f"bastion: access to {target.name} refused: {why}")
            return None
        session_id = uuid.uuid4().hex[:16]
        record = SessionRecord(
            id=session_id,
            user=facts.issued.user,
            target=target.name,
            kind="sftp" if subsystem == "sftp" else target.kind,
            request_id=facts.request.id,
            cert_serial=facts.serial,
            client=login.peer,
            bastion_id=self.bastion.config.server.bastion_id,
            started_at=utcnow(),
            recording=str(self.bastion.config.recordings.dir / f"{session_id}{RECORDING_SUFFIX}"),
        )
        try:
            await self.bastion.store.start_session(record)
        except BaseException:
            self.release(login, record.user)
            raise
        live = LiveSession(record, min(facts.valid_before, facts.issued.valid_before),
                           unmasked=facts.request.unmasked)
        self.track(login, live)
        await self.bastion.audit.record(
            "session.started", actor=record.user, target=record.target,
            request_id=record.request_id, session_id=record.id, client=record.client,
            # SQL text carries literals: it reaches the query log redacted, never the audit trail.
            command=command if target.kind == "ssh" else None, term=term, subsystem=subsystem,
        )
        return live, target

    async def _end_session(self, login: Login, live: LiveSession, status: SessionStatus,
                           reason: str) -> None:
        record = live.record
        self.untrack(login, live)
        await self.bastion.store.end_session(record.id, status=status, reason=reason, now=utcnow())
        await self.bastion.audit.record(
            "session.ended", actor=record.user, target=record.target,
            request_id=record.request_id, session_id=record.id, reason=reason,
        )

    async def end_live_session(self, session_id: str, reason: str) -> bool:
        """End one live session on this bastion; return whether it was live here."""
        live = self.live.get(session_id)
        if live is None:
            return False
        live.end(reason)
        return True

    def end_logins(self, refused: Callable[[Identity], bool], reason: str) -> int:
        """End every live session of the connections whose identity is `refused` now; return
        how many."""
        count = 0
        for login, sessions in list(self._channels.items()):
            if login.identity is None or not refused(login.identity):
                continue
            for session in list(sessions):
                session.end(reason)
                count += 1
        return count

    def end_sessions(self, predicate: Callable[[SessionRecord], bool], reason: str) -> int:
        """End every live session matching `predicate`; return how many."""
        count = 0
        for session in list(self.live.values()):
            if predicate(session.record):
                session.end(reason)
                count += 1
        return count
