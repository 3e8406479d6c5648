"""The running bastion: config, store, CAs, audit trail, workflow and the SSH front door."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import asyncssh

from bastion.access import AccessWorkflow
from bastion.audit import AuditTrail
from bastion.ca import CertificateAuthority, load_or_create_key, load_or_create_secret
from bastion.cluster.node import ClusterNode
from bastion.cluster.recordings import RecordingLander, SharedDirectory
from bastion.config import BastionConfig, load_config
from bastion.console.history import ConsoleHistories
from bastion.db.accounts import AccountNames, new_installation_tag
from bastion.db.grants import DatabaseGrants, setup_target
from bastion.errors import BastionError
from bastion.identity.bindings import Identities
from bastion.identity.sealing import TokenSeal
from bastion.models import AccessRequest, SessionRecord, utcnow
from bastion.notify import WebhookNotifier
from bastion.recording import RecordingSetup
from bastion.ssh import transport
from bastion.ssh.frontdoor import FrontDoor
from bastion.ssh.login import Identity
from bastion.store import Store, open_store

__all__ = ["Bastion", "serve"]

log = logging.getLogger("bastion")

SWEEP_INTERVAL = 5.0
ACCOUNT_SWEEP_INTERVAL = 2.0


class Bastion:
    """Everything one bastion process runs, wired together."""

    def __init__(self, config: BastionConfig, store: Store, installation: str) -> None:
        self.file_config = config
        self.store = store
        data_dir = config.server.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.host_key = load_or_create_key(config.server.host_key, "bastion host key")
        self.user_ca = CertificateAuthority.load(config.certificates.user_ca_key, "user CA")
        self.upstream_ca = CertificateAuthority.load(
            config.certificates.upstream_ca_key, "upstream CA"
        )
        self.recordings = RecordingSetup(config.recordings)
        # Keys the deterministic "hash" masking strategy: stable across restarts and bastions
        # that share the data dir, never shown.
        self.masking_key = load_or_create_secret(data_dir / "masking_key")
        self.notifier = WebhookNotifier(config.webhooks, logger=logging.getLogger("bastion.notify"))
        self.audit = AuditTrail(store, config.server.audit_log, self.notifier)
        # People signed in through the identity provider join the config's users (§11).
        self.identities = Identities(
            lambda: self.file_config, store, self.audit,
            TokenSeal(load_or_create_secret(data_dir / "identity_key")),
            self._end_person)
        self.workflow = AccessWorkflow(lambda: self.config, store, self.audit, self.user_ca)
        self.workflow.revoke_listeners.append(self._on_revoked)
        # One database account per approved grant on SQL targets, ended when the grant ends.
        self.db_grants = DatabaseGrants(lambda: self.config, store, self.audit, self.masking_key,
                                        AccountNames(installation))
        self.workflow.revoke_listeners.append(self.db_grants.end_request)
        # SQL console history per user and target, in memory only (see bastion.console.history).
        self.console_histories = ConsoleHistories()
        self.frontdoor = FrontDoor(self)
        self.cluster = self._join_cluster(config)
        self._sweeper: asyncio.Task[None] | None = None
        self._account_sweeper: asyncio.Task[None] | None = None

    @property
    def config(self) -> BastionConfig:
        """The config in force, with a user for every person signed in through the provider."""
        return self.identities.config()

    def _join_cluster(self, config: BastionConfig) -> ClusterNode | None:
        """This bastion as a node of a cluster, when the config has a [cluster] table."""
        if config.cluster is None:
            return None
        lander = RecordingLander(self.store, SharedDirectory(config.cluster.recordings_store),
                                 lambda: self.config.recordings.dir, lambda: self.frontdoor.live)
        cluster = ClusterNode(
            config.cluster, self.store, self.audit, store_url=config.server.state_store,
            bastion_id=config.server.bastion_id, live=lambda: self.frontdoor.live,
            reload=lambda: self.reload(announce=False), lander=lander,
            recheck_people=self._recheck_people)
        self.frontdoor.end_session = cluster.end_session
        self.frontdoor.session_ended = cluster.session_ended
        self.workflow.revoke_listeners.append(lambda _request: cluster.announce("recheck"))
        return cluster

    @classmethod
    async def open(cls, config: BastionConfig) -> Bastion:
        """Open the store and build the bastion."""
        transport.install()  # asyncssh's SSH transport, tuned (bastion/ssh/transport.py)
        store = await open_store(config.server.state_store)
        try:
            return cls(config, store, await store.installation_tag(new_installation_tag()))
        except BaseException:
            await store.close()
            raise

    async def start(self) -> None:
        """Recover from a previous crash, then accept connections."""
        self.notifier.start()
        abandoned = await self.store.end_abandoned_sessions(self.config.server.bastion_id, utcnow())
        for session in abandoned:
            await self.audit.record(
                "session.ended_abnormally", actor=session.user, target=session.target,
                session_id=session.id, request_id=session.request_id,
                reason="the bastion stopped while the session was live",
            )
        await self.identities.refresh()
        await self.frontdoor.start()
        if self.cluster is not None:
            await self.cluster.start(f"{self.config.server.listen_host}:{self.frontdoor.port}")
        await self.audit.record("bastion.started", port=self.frontdoor.port,
                                bastion_id=self.config.server.bastion_id)
        self._sweeper = asyncio.create_task(self._sweep())
        self._account_sweeper = asyncio.create_task(self._sweep_accounts())

    async def stop(self) -> None:
        """Stop accepting, end sessions, flush notifications, close the store."""
        for task in (self._sweeper, self._account_sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.frontdoor.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.notifier.stop()
        await self.store.close()

    async def reload(self, *, announce: bool = True) -> bool:
        """Load the config file again; on any error keep the old one and log why. `announce`
        tells the other nodes of a cluster to reload theirs too."""
        path = self.config.path
        try:
            new = await asyncio.to_thread(load_config, path)
        except BastionError as exc:
            log.error("config reload failed, keeping the previous config: %s", exc)
            await self.audit.record("config.reload_failed", error=str(exc))
            return False
        if new.server != self.file_config.server or \
                new.certificates != self.file_config.certificates:
            log.warning("config reload: [server] and [certificates] changes need a restart")
        try:
            recordings = RecordingSetup(new.recordings)
        except BastionError as exc:
            log.error("config reload failed, keeping the previous config: %s", exc)
            await self.audit.record("config.reload_failed", error=str(exc))
            return False
        old = self.file_config
        self.file_config = new
        self.recordings = recordings
        self.notifier.replace(new.webhooks)
        await self._reprovision(old, new)
        await self.audit.record(
            "config.reloaded", users=len(new.users), roles=len(new.roles), targets=len(new.targets)
        )
        log.info("config reloaded from %s", path)
        await self._end_disallowed_sessions()
        if announce and self.cluster is not None:
            await self.cluster.announce("config_reloaded")
        return True

    async def _reprovision(self, old: BastionConfig, new: BastionConfig) -> None:
        """Bring the masked views of SQL targets whose masking rules changed up to date; their
        live sessions end (they were opened under the old rules)."""
        for target in new.targets:
            before = old.target(target.name)
            if target.kind == "ssh" or (before is not None and before.masking == target.masking):
                continue
            try:
                await asyncio.to_thread(setup_target, target, self.masking_key, apply=True)
            except BastionError as exc:
                log.error("config reload: masked views of %s not updated: %s", target.name, exc)
                await self.audit.record("db.setup_failed", target=target.name, error=str(exc))
            else:
                await self.audit.record("db.setup", target=target.name, reason="config reload")
            changed = target.name
            self.frontdoor.end_sessions(lambda r: r.target == changed,  # noqa: B023 (used now)
                                        "the target's masking rules changed; connect again")

    async def _recheck_people(self) -> None:
        """Sign-ins ended on another node (unbind, logout) end their sessions here too."""
        await self.identities.refresh()
        await self._end_disallowed_sessions()

    def _end_person(self, which: Callable[[SessionRecord], bool], reason: str) -> int:
        """End signed-in people's live sessions here, and have the other nodes of a cluster check."""
        ended = self.frontdoor.end_sessions(which, reason)
        if self.cluster is not None:
            self.frontdoor.spawn(self.cluster.announce("recheck"))
        return ended

    async def _end_disallowed_sessions(self) -> None:
        now = utcnow()

        def gone(record: SessionRecord) -> bool:
            user = self.config.user(record.user)
            return user is None or user.expired(now) or self.config.target(record.target) is None

        ended = self.frontdoor.end_sessions(gone, "your access was removed from the bastion")
        file = self.file_config

        def key_replaced(identity: Identity) -> bool:
            # A config user's certificate whose key is no longer theirs (replaced after a leak):
            # new logins with it are refused (FrontDoor.sign_in_refusal), live ones end here.
            issued = identity.facts.issued if identity.facts is not None else None
            user = file.user(issued.user) if issued is not None else None
            return user is not None and not user.holds(identity.key)

        ended += self.frontdoor.end_logins(
            key_replaced, "the key of this session is no longer registered to you on the bastion")
        if ended:
            log.info("ended %d session(s) after the config reload", ended)

    async def _on_revoked(self, request: AccessRequest) -> None:
        self._end_requests({request.id}, f"request {request.id} was revoked")

    def _end_requests(self, request_ids: set[int], reason: str) -> None:
        self.frontdoor.end_sessions(lambda r: r.request_id in request_ids, reason)

    async def _sweep(self) -> None:
        """Expire lapsed requests and end sessions whose window or user has gone."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                expired = await self.workflow.expire()
                if expired:
                    self._end_requests({r.id for r in expired}, "your access window has ended")
                    if self.cluster is not None:
                        await self.cluster.announce("recheck")
                await self.identities.refresh()
                await self._end_disallowed_sessions()
            except Exception:
                log.exception("periodic sweep failed; will retry")

    async def _sweep_accounts(self) -> None:
        """End database accounts whose grant is over (a slow database delays only this loop)."""
        while True:
            await asyncio.sleep(ACCOUNT_SWEEP_INTERVAL)
            await self.db_grants.sweep()


GC_YOUNG_THRESHOLD = 10_000  # allocations between collections of the youngest generation


def tune_gc() -> None:
    """Once set up, before serving: what was built so far (modules, config, the parsers' tables)
    mostly lives as long as the process, so after one last full collection the cyclic collector
    stops walking it (`gc.freeze`; what a SIGHUP reload replaces later stays, its cycles
    included), and it runs after 10,000 allocations instead of 700. During pgbench through the
    bastion it had taken 0.48 CPU s of 14.4 (940 collections); 0.11 s after this (40)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def serve(config_path: Path) -> None:
    """Run the bastion until SIGINT or SIGTERM; SIGHUP reloads the config."""
    config = load_config(config_path)
    logging.getLogger().setLevel(config.server.log_level.upper())
    if config.server.log_level == "debug":
        logging.getLogger("asyncssh").setLevel(logging.DEBUG)
    bastion = await Bastion.open(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(bastion.reload()))
    try:
        tune_gc()  # before the front door opens: no session's objects get frozen
        await bastion.start()
        print(f"bastion listening on {config.server.listen_host}:{bastion.frontdoor.port}",
              flush=True)
        await stop.wait()
    except (OSError, asyncssh.Error) as exc:
        raise BastionError(f"cannot start: {exc}") from exc
    finally:
        log.info("stopping")
        await bastion.stop()

