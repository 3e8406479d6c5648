"""The SSH front door: `access@` runs control commands, `TARGET@` opens a session on a target.

Logins are checked here with every rule of the security design; a refused login gets an SSH
authentication banner saying why and what to run next, never a bare "Permission denied".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import asyncssh
from asyncssh.public_key import SSHOpenSSHCertificate, decode_ssh_certificate

from bastion import policy
from bastion.access import key_fingerprint
from bastion.ca import CertificateInfo, Forwarding, certificate_info
from bastion.config import CONTROL_USER, BastionConfig, Target
from bastion.control import HELP, ControlPlane
from bastion.models import AccessRequest, IssuedCertificate, SessionRecord, SessionStatus, utcnow
from bastion.sessions import LiveSession, run_target_session
from bastion.upstream import connect_upstream
from recorder import RECORDING_SUFFIX

if TYPE_CHECKING:
    from bastion.server import Bastion

__all__ = ["FrontDoor"]

log = logging.getLogger("bastion.frontdoor")

ValidateFn = Callable[[str, bytes, bytes, bytes], Awaitable[bool]]
SFTP_REFUSAL = ("file transfer (sftp, scp) is disabled through the bastion: copy files by the "
                "target's own deployment means")


def wrong_key_reason(config: BastionConfig, target: str) -> str:
    """Why a certificate offered with a key other than the one it was issued for is refused."""
    return ("the certificate was not made with the key it was issued for; use that key, or get "
            f"your own: {policy.request_command(config, target)}")


class _Login(asyncssh.SSHServer):
    """One client connection's authentication state."""

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer = "?"
        self.access_user: str | None = None
        self.access_key: asyncssh.SSHKey | None = None
        self.facts: policy.LoginFacts | None = None
        self.checked: policy.LoginFacts | None = None
        self.cert_refused = False
        self.upstream: asyncssh.SSHClientConnection | None = None
        self.refusals: set[str] = set()

    # asyncssh hooks ----------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        # asyncssh checks a certificate's principal and window itself and, when they fail,
        # refuses silently; checking the whole certificate first lets us say why.
        original: ValidateFn = conn.validate_public_key
        conn.validate_public_key = self._wrap_validate(original)  # type: ignore[method-assign,assignment]

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Only a certificate that just passed every check in the wrapper below gets this far.
        facts = self.checked
        return (
            facts is not None
            and facts.username == username
            and self.door.bastion.user_ca.is_signer_of(key)
        )

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        config = self.door.bastion.config
        if username == CONTROL_USER:
            user = config.user_for_key(key)
            if user is None:
                await self._refuse(username, None, "this SSH key is not registered on the bastion; "
                                   "ask an administrator to add its public key to your user",
                                   key=key_fingerprint(key))
                return False
            if user.expired(utcnow()):
                await self._refuse(username, user.name, f"the account of {user.name} has expired")
                return False
            self.access_user, self.access_key = user.name, key
            return True
        user = config.user_for_key(key)
        who = user.name if user else None
        if self.cert_refused:
            return False  # the refused certificate was already explained
        if self.facts is not None:
            await self._refuse(username, who, wrong_key_reason(config, username))
        elif config.target(username) is None:
            await self._refuse(username, who, f"there is no target named {username!r}; run: "
                               f"ssh -p {config.server.listen_port} access@"
                               f"{config.server.public_host} targets")
        else:
            # OpenSSH offers the plain key before its certificate: stay quiet when this key holds
            # a certificate that would pass, and explain the newest one's problem otherwise.
            reason = await self.door.stored_certificate_problem(username, key)
            if reason is None:
                return False
            await self._refuse(username, who, reason, key=key_fingerprint(key))
        return False

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]] | bool:
        """`ssh -L`: refused unless a role grants port forwarding; then tunnelled via the target."""
        facts = self.facts
        config = self.door.bastion.config
        target = config.target(facts.username) if facts else None
        if facts is None or facts.issued is None or target is None or target.kind != "ssh":
            return False
        if not policy.forwarding_for(config, facts.issued.user, target.name).port:
            self.door.spawn(self.door.bastion.audit.record(
                "forward.refused", actor=facts.issued.user, target=target.name,
                destination=f"{dest_host}:{dest_port}",
            ))
            return False
        return self._tunnel(target, facts, dest_host, dest_port)

    async def _tunnel(self, target: Target, facts: policy.LoginFacts, host: str,
                      port: int) -> asyncssh.SSHTCPSession[bytes]:
        assert self.conn is not None and facts.issued is not None
        bastion = self.door.bastion
        if self.upstream is None:
            self.upstream = await connect_upstream(
                bastion.upstream_ca, target, facts.issued.user, f"fwd-{uuid.uuid4().hex[:12]}",
                min(facts.valid_before, facts.issued.valid_before), Forwarding(port=True))
        await bastion.audit.record(
            "forward.opened", actor=facts.issued.user, target=target.name,
            request_id=facts.issued.request_id, destination=f"{host}:{port}", client=self.peer,
        )
        forwarder = await self.conn.forward_tunneled_connection(self.upstream, host, port)
        return cast(asyncssh.SSHTCPSession[bytes], forwarder)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()

    def auth_completed(self) -> None:
        facts = self.facts
        if facts is not None and facts.issued is not None:
            self.door.spawn(self.door.bastion.audit.record(
                "login.success", actor=facts.issued.user, target=facts.username,
                request_id=facts.issued.request_id, serial=str(facts.serial), client=self.peer,
            ))

    # certificate checks ------------------------------------------------------------------

    def _wrap_validate(self, original: ValidateFn) -> ValidateFn:
        async def validate(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            try:
                cert = decode_ssh_certificate(key_data)
            except (asyncssh.KeyImportError, ValueError):
                cert = None
            if isinstance(cert, SSHOpenSSHCertificate):
                if username == CONTROL_USER:
                    return False  # access@ takes the plain key that the client offers next
                self.checked = None
                facts = await self.door.login_facts(username, cert)
                reason = policy.check_login(self.door.bastion.config, facts, utcnow())
                if reason is not None:
                    self.cert_refused = True
                    actor = facts.issued.user if facts.issued else facts.key_id.partition("/")[0]
                    await self._refuse(username, actor or None, reason, serial=str(facts.serial))
                    return False
                self.checked = facts
            ok = await original(username, key_data, msg, signature)
            if ok and isinstance(cert, SSHOpenSSHCertificate):
                self.facts = facts
            elif msg and isinstance(cert, SSHOpenSSHCertificate) and self.checked is not None:
                # Every check passed but the signature did not: someone else's certificate.
                holder = self.checked.issued.user if self.checked.issued else None
                self.cert_refused = True
                await self._refuse(username, holder, wrong_key_reason(self.door.bastion.config,
                                                                      username))
            return ok

        return validate

    async def _refuse(self, username: str, actor: str | None, reason: str, **details: Any) -> None:
        if reason in self.refusals:
            return
        self.refusals.add(reason)
        assert self.conn is not None
        self.conn.send_auth_banner(f"bastion: access to {username} refused: {reason}\r\n")
        target = None if username == CONTROL_USER else username
        await self.door.bastion.audit.record(
            "login.refused", actor=actor, target=target, reason=reason, client=self.peer,
            username=username, **details,
        )


class FrontDoor:
    """Accepts SSH connections for the bastion."""

    def __init__(self, bastion: Bastion) -> None:
        self.bastion = bastion
        self.live: dict[str, LiveSession] = {}
        self._server: asyncssh.SSHAcceptor | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

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
            # sftp (and scp, which speaks sftp since OpenSSH 9) is refused with a message; without
            # a factory asyncssh would refuse the subsystem silently.
            sftp_factory=self._refuse_sftp,
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
        # Let ended sessions write their last records before the store closes.
        for _ in range(100):
            if not self.live:
                break
            await asyncio.sleep(0.05)

    async def _refuse_sftp(self, chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        """Tell an sftp or scp client that file transfer is disabled, audit it, close."""
        login = chan.get_connection().get_owner()
        facts = login.facts if isinstance(login, _Login) else None
        user = facts.issued.user if facts and facts.issued else getattr(login, "access_user", None)
        target = facts.username if facts else None
        chan.write_stderr(f"bastion: {SFTP_REFUSAL}\r\n".encode())
        chan.exit(1)
        await self.bastion.audit.record("transfer.refused", actor=user, target=target,
                                        subsystem="sftp", reason=SFTP_REFUSAL)
        return asyncssh.SFTPServer(chan)  # its handler sees the closed channel and ends

    def _new_login(self) -> _Login:
        return _Login(self)

    async def login_facts(self, username: str, cert: SSHOpenSSHCertificate) -> policy.LoginFacts:
        """Gather what the store knows about a presented certificate."""
        info = certificate_info(cert)
        signed_here = self.bastion.user_ca.is_signer_of(cert.signing_key)
        return await self._facts(username, info, signed_here, key_fingerprint(cert.key))

    async def _on_record(self, serial: int) -> tuple[
            IssuedCertificate | None, AccessRequest | None, bool]:
        """What the store says now of a certificate: as issued, its request, whether revoked."""
        store = self.bastion.store
        issued = await store.get_certificate(serial)
        if issued is None:
            return None, None, False
        return issued, await store.get_request(issued.request_id), await store.is_revoked(serial)

    async def _refreshed(self, facts: policy.LoginFacts) -> policy.LoginFacts:
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
        assert isinstance(login, _Login)
        try:
            if process.get_extra_info("username") == CONTROL_USER:
                await self._control(process, login)
            else:
                await self._target_session(process, login, conn)
        except Exception:
            log.exception("session failed")
            with contextlib.suppress(OSError):
                process.stderr.write(b"bastion: internal error; the session was ended\r\n")
                process.exit(255)

    async def _control(self, process: asyncssh.SSHServerProcess[bytes], login: _Login) -> None:
        assert login.access_user is not None and login.access_key is not None
        # Checked per command too: the connection may outlive the user's place in the config.
        user = self.bastion.config.user(login.access_user)
        if user is None or user.expired(utcnow()) or self.bastion.config.user_for_key(
                login.access_key) != user:
            process.stderr.write(f"error: {login.access_user} may no longer use this bastion "
                                 "(removed, expired or key changed)\n".encode())
            process.exit(1)
            return
        command = process.command
        if command is None:
            process.stdout.write(HELP.replace("\n", "\r\n").encode())
            process.exit(0)
            return
        plane = ControlPlane(self.bastion.workflow, login.access_user, login.access_key,
                             self.end_live_session)
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
        if result.stderr:
            process.stderr.write(result.stderr.encode())
        process.exit(result.exit_status)

    async def _target_session(
        self, process: asyncssh.SSHServerProcess[bytes], login: _Login,
        conn: asyncssh.SSHServerConnection,
    ) -> None:
        facts = login.facts
        target = self.bastion.config.target(facts.username) if facts else None
        if facts is None or facts.issued is None or facts.request is None or target is None:
            # Fail closed: a target session exists only for a certificate that passed the checks.
            process.stderr.write(b"bastion: no checked certificate for this session\r\n")
            process.exit(1)
            return
        # Every session checks again: one SSH connection can open many channels (ControlMaster),
        # and the request may have been revoked or the user removed since the login.
        facts = await self._refreshed(facts)
        login.facts = facts
        reason = policy.check_login(self.bastion.config, facts, utcnow())
        if reason is not None or facts.issued is None or facts.request is None:
            why = reason or "the certificate is no longer on record"
            await self.bastion.audit.record("session.refused", actor=facts.key_id.split("/")[0],
                                            target=target.name, reason=why, client=login.peer)
            newline = "\r\n" if process.term_type else "\n"
            process.stderr.write(f"bastion: access to {target.name} refused: {why}{newline}".encode())
            process.exit(1)
            return
        session_id = uuid.uuid4().hex[:16]
        record = SessionRecord(
            id=session_id,
            user=facts.issued.user,
            target=target.name,
            kind=target.kind,
            request_id=facts.request.id,
            cert_serial=facts.serial,
            client=login.peer,
            bastion_id=self.bastion.config.server.bastion_id,
            started_at=utcnow(),
            recording=str(self.bastion.config.recordings.dir / f"{session_id}{RECORDING_SUFFIX}"),
        )
        await self.bastion.store.start_session(record)
        live = LiveSession(record, min(facts.valid_before, facts.issued.valid_before),
                           unmasked=facts.request.unmasked)
        self.live[record.id] = live
        await self.bastion.audit.record(
            "session.started", actor=record.user, target=record.target,
            request_id=record.request_id, session_id=record.id, client=record.client,
            # SQL text carries literals: it reaches the query log redacted, never the audit trail.
            command=process.command if target.kind == "ssh" else None, term=process.term_type,
        )
        status, reason = SessionStatus.ENDED_ABNORMALLY, "internal error"
        try:
            status, reason = await run_target_session(self.bastion, process, live, target)
        finally:
            self.live.pop(record.id, None)
            await self.bastion.store.end_session(record.id, status=status, reason=reason,
                                                 now=utcnow())
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

    def end_sessions(self, predicate: Callable[[SessionRecord], bool], reason: str) -> int:
        """End every live session matching `predicate`; return how many."""
        count = 0
        for session in list(self.live.values()):
            if predicate(session.record):
                session.end(reason)
                count += 1
        return count
