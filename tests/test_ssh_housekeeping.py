"""asyncssh's keepalive timer and packet log, as the bastion's transport changes them
(bastion/ssh/housekeeping.py): a read only notes the time, and the log line of a packet is built
only when packet logging is on. What a user sees must not change: a peer that stops answering is
dropped after the keepalive interval, one that keeps talking is not, and the packet log still
logs packets when asked to."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncssh
import pytest

from bastion.ssh import transport

INTERVAL = 0.2  # seconds between keepalive requests
COUNT_MAX = 1  # unanswered requests tolerated


class _Server(asyncssh.SSHServer):
    """No authentication; notes when the connection is gone."""

    def __init__(self, lost: asyncio.Event) -> None:
        self.lost = lost

    def begin_auth(self, username: str) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """An asyncssh server with the bastion's transport, keepalive every INTERVAL seconds."""
    transport.install()
    lost = asyncio.Event()
    listener = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        server_factory=lambda: _Server(lost), keepalive_interval=INTERVAL,
        keepalive_count_max=COUNT_MAX)
    try:
        yield listener.sockets[0].getsockname()[1], lost
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_talking_peer_is_kept_and_a_silent_one_dropped_after_the_interval(
        server: tuple[int, asyncio.Event]) -> None:
    port, lost = server
    async with asyncssh.connect("127.0.0.1", port, known_hosts=None, username="u",
                                client_keys=None) as conn:
        # The client reads nothing from now on, so it answers no keepalive request; it still
        # sends. For ten intervals it talks every quarter interval: the server hears it and
        # keeps it (a timer that ignored what it heard would drop it after two intervals).
        conn._transport.pause_reading()  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        for _ in range(40):
            await asyncio.sleep(INTERVAL / 4)
            conn.send_debug("still here")
        quiet_since = loop.time()
        assert not lost.is_set()
        # Then silence: dropped after COUNT_MAX + 1 intervals without an answer.
        async with asyncio.timeout(10 * INTERVAL):
            await lost.wait()
        assert loop.time() - quiet_since >= (COUNT_MAX + 1) * INTERVAL * 0.9


async def test_packets_are_still_logged_when_packet_logging_is_on(
        server: tuple[int, asyncio.Event], caplog: pytest.LogCaptureFixture) -> None:
    port, _ = server
    asyncssh.set_debug_level(3)
    try:
        with caplog.at_level(logging.DEBUG, logger="asyncssh"):
            async with asyncssh.connect("127.0.0.1", port, known_hosts=None, username="u",
                                        client_keys=None):
                pass
    finally:
        asyncssh.set_debug_level(1)
    logged = [r.getMessage() for r in caplog.records]
    assert any("] Sent MSG_KEXINIT (20)" in m for m in logged), logged[:20]
    assert any("] Received MSG_NEWKEYS (21)" in m for m in logged), logged[:20]
