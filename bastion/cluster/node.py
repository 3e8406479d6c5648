"""This bastion as one node of a cluster: heartbeats, dead nodes, re-checks, notifications, landing.

What ends a session is always written in the shared store first (a revoked request, an expired
window, a session marked ended by an auditor's `kill` or by the survivor of a dead node); a
notification only makes every node look now instead of at its next periodic re-check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any

from bastion.audit import AuditTrail
from bastion.cluster.notifications import ClusterMessage, MessageKind, Notifications
from bastion.cluster.recordings import RecordingLander
from bastion.cluster.settings import ClusterConfig
from bastion.errors import BastionError
from bastion.models import SessionStatus, utcnow
from bastion.sessions import LiveSession
from bastion.store import Store

__all__ = ["ClusterNode"]

log = logging.getLogger("bastion.cluster")


class ClusterNode:
    """Keeps this node's sessions in step with the store the whole cluster shares."""

    def __init__(
        self, settings: ClusterConfig, store: Store, audit: AuditTrail, *, store_url: str,
        bastion_id: str, live: Callable[[], Mapping[str, LiveSession]],
        reload: Callable[[], Awaitable[bool]], lander: RecordingLander,
        recheck_people: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.bastion_id = bastion_id
        self._live = live
        self._reload = reload
        self._recheck_people = recheck_people
        self.lander = lander
        self.notifications = Notifications(store_url, bastion_id, self._on_message,
                                           self.recheck_soon)
        self._recheck = asyncio.Event()
        self._land = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.address = ""

    async def start(self, address: str) -> None:
        """Join the cluster: heartbeat, listen, and land what a previous run left behind."""
        self.address = address
        await self.store.heartbeat(self.bastion_id, address, utcnow(), starting=True)
        await self.notifications.start()
        self._land.set()
        for loop in (self._beat(), self._rechecks(), self._landings()):
            self._tasks.append(asyncio.create_task(loop))

    async def stop(self) -> None:
        """Leave the cluster (a clean stop is not a death), then land what the last sessions
        left behind."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.notifications.stop()
        for last_step in (self.lander.land_finished, lambda: self.store.forget_node(self.bastion_id)):
            try:
                await last_step()
            except BastionError as exc:
                log.error("cluster: stopping: %s", exc)

    def session_ended(self) -> None:
        """A session of this node ended: land its recording now."""
        self._land.set()

    async def recheck_soon(self) -> None:
        """Wake the re-check loop."""
        self._recheck.set()

    async def announce(self, kind: MessageKind) -> None:
        """Tell the other nodes (a lost notification is caught by their periodic re-check)."""
        await self.notifications.publish(kind)

    async def end_session(self, session_id: str, reason: str) -> bool:
        """End a live session wherever it runs; return whether it was live."""
        live = self._live().get(session_id)
        if live is not None:
            live.end(reason)
            return True
        record = await self.store.get_session(session_id)
        if record is None or record.status is not SessionStatus.LIVE:
            return False
        # Written first, so the node running it ends it even if the notification is lost.
        await self.store.end_session(session_id, status=SessionStatus.ENDED, reason=reason,
                                     now=utcnow())
        await self.announce("recheck")
        return True

    async def recheck(self) -> int:
        """End the live sessions here that the store says must end; return how many (those of
        people no longer signed in, an unbind on another node, end by `recheck_people`)."""
        live = dict(self._live())
        if not live:
            return 0
        await self._recheck_people()
        reasons = await self.store.sessions_to_end(list(live), utcnow())
        for session_id, reason in reasons.items():
            session = live.get(session_id)
            if session is not None:
                session.end(reason)
        return len(reasons)

    async def reap(self) -> int:
        """End the sessions of nodes that stopped heartbeating; return how many nodes."""
        now = utcnow()
        silent_since = now - timedelta(seconds=self.settings.node_timeout)
        dead = await self.store.reap_dead_nodes(silent_since, now, by=self.bastion_id)
        for node, sessions in dead:
            await self.audit.record(
                "node.dead", node=node.bastion_id, address=node.address,
                last_heartbeat=node.heartbeat_at.isoformat(), sessions=len(sessions),
                by=self.bastion_id, text=f"bastion {node.bastion_id} stopped answering; "
                f"{len(sessions)} of its sessions were marked ended")
            for session in sessions:
                await self.audit.record(
                    "session.ended_abnormally", actor=session.user, target=session.target,
                    session_id=session.id, request_id=session.request_id,
                    reason=session.end_reason, bastion_id=node.bastion_id, recording="cut off")
        return len(dead)

    async def _on_message(self, message: ClusterMessage) -> None:
        if message.kind == "config_reloaded":
            log.info("cluster: %s reloaded its config; reloading ours", message.sender)
            await self._reload()
        self._recheck.set()

    async def _beat(self) -> None:
        await self._every(self.settings.heartbeat_interval, None, self._beat_once, "heartbeat")

    async def _beat_once(self) -> None:
        await self.store.heartbeat(self.bastion_id, self.address, utcnow())
        await self.reap()

    async def _rechecks(self) -> None:
        await self._every(self.settings.recheck_interval, self._recheck, self.recheck, "re-check")

    async def _landings(self) -> None:
        await self._every(self.settings.recheck_interval, self._land,
                          self.lander.land_finished, "landing recordings")

    async def _every(self, interval: float, wake: asyncio.Event | None,
                     step: Callable[[], Coroutine[Any, Any, Any]], what: str) -> None:
        """Run `step` every `interval` seconds, or sooner when `wake` is set; errors are logged
        and the loop goes on (a store that is down for a while must not stop the cluster)."""
        while True:
            if wake is None:
                await asyncio.sleep(interval)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
                wake.clear()
            try:
                await step()
            except BastionError as exc:
                log.error("cluster: %s failed (will retry): %s", what, exc)
            except Exception:
                log.exception("cluster: %s failed (will retry)", what)
