"""Telling the other nodes, through PostgreSQL LISTEN/NOTIFY, that something may end their sessions.

A notification carries no authority: it names its kind and sender and nothing else, and a node
that hears "recheck" asks the store which of its live sessions must end. So a forged or replayed
notification costs one query, a lost one is caught by the periodic re-check, and what ends a
session is always the store's word.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import psycopg

from bastion.store.postgres import _secrets_of, redact_url

__all__ = ["CHANNEL", "ClusterMessage", "Notifications", "decode", "encode"]

log = logging.getLogger("bastion.cluster")

CHANNEL = "bastion_cluster"
MessageKind = Literal["recheck", "config_reloaded"]
_KINDS: tuple[MessageKind, ...] = ("recheck", "config_reloaded")
_MAX_PAYLOAD = 1000
_RECONNECT_AFTER = 1.0
_CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class ClusterMessage:
    """One notification between nodes: what to do, and which node said so."""

    kind: MessageKind
    sender: str


def encode(message: ClusterMessage) -> str:
    """The NOTIFY payload of a message."""
    return json.dumps({"kind": message.kind, "from": message.sender}, separators=(",", ":"))


def decode(payload: str) -> ClusterMessage | None:
    """A message from a NOTIFY payload, or None for anything that is not one of ours."""
    if len(payload) > _MAX_PAYLOAD:
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    kind, sender = data.get("kind"), data.get("from")
    if not isinstance(sender, str) or not sender:
        return None
    for known in _KINDS:
        if kind == known:
            return ClusterMessage(known, sender)
    return None


Handler = Callable[[ClusterMessage], Awaitable[None]]


class Notifications:
    """A listening connection (reconnected when lost) and a publishing one, to one channel."""

    def __init__(self, url: str, bastion_id: str, on_message: Handler,
                 on_connected: Callable[[], Awaitable[None]]) -> None:
        self._url = url
        self._where = redact_url(url)
        self._bastion_id = bastion_id
        self._on_message = on_message
        self._on_connected = on_connected
        self._listener: asyncio.Task[None] | None = None
        self._publisher: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._publishing = asyncio.Lock()
        self._secrets = _secrets_of(url)
        self._tried = asyncio.Event()  # the first LISTEN is in place, or has failed once

    async def start(self) -> None:
        """Start listening; returns once the first LISTEN is in place (or has failed once)."""
        self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tried.wait(), _CONNECT_TIMEOUT_S)

    async def stop(self) -> None:
        """Stop listening and close both connections."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        async with self._publishing:
            if self._publisher is not None:
                with contextlib.suppress(psycopg.Error):
                    await self._publisher.close()
                self._publisher = None

    async def publish(self, kind: MessageKind) -> bool:
        """Notify every node (this one ignores its own); whether PostgreSQL took it."""
        payload = encode(ClusterMessage(kind, self._bastion_id))
        async with self._publishing:
            for attempt in (1, 2):  # a connection lost since the last use gets one fresh retry
                try:
                    if self._publisher is None or self._publisher.closed:
                        self._publisher = await self._connect()
                    await self._publisher.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                    return True
                except psycopg.Error as exc:
                    if self._publisher is not None:
                        with contextlib.suppress(psycopg.Error):
                            await self._publisher.close()
                    self._publisher = None
                    if attempt == 2:
                        log.error("cluster: cannot notify the other nodes through %s (%s); they "
                                  "will notice at their next re-check", self._where, self._plain(exc))
        return False

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        return await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)

    async def _listen(self) -> None:
        """Listen for ever: on a lost connection, reconnect and re-check (something may have been
        missed meanwhile)."""
        while True:
            try:
                conn = await self._connect()
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._tried.set()
                    await self._on_connected()
                    async for notify in conn.notifies():
                        message = decode(notify.payload)
                        if message is None:
                            log.warning("cluster: ignored a notification that is not ours")
                        elif message.sender != self._bastion_id:
                            await self._on_message(message)
                finally:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
            except psycopg.Error as exc:
                log.error("cluster: listening on %s failed (%s); reconnecting", self._where,
                          self._plain(exc))
            except Exception:
                log.exception("cluster: handling a notification failed; listening again")
            self._tried.set()  # start() must not wait for a store that is down
            await asyncio.sleep(_RECONNECT_AFTER)

    def _plain(self, exc: BaseException) -> str:
        """A driver error's first line, the URL's password scrubbed out."""
        text = (str(exc).splitlines() or [type(exc).__name__])[0]
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
