"""SSH packets written together: one socket write per turn of the event loop, not per packet.

asyncssh writes every SSH packet with its own `transport.write`, and before each encrypted
packet it sends an SSH_MSG_IGNORE (RFC 4251 §9.3.1's countermeasure): with TCP_NODELAY that is
two `send()` system calls per packet, 16 for one 256 KiB read relayed in 32 KiB packets. Here the
packets written while one callback runs are joined and handed to the transport once, right after
it (a `call_soon`), in the same order; a close writes what is pending first.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import asyncssh.connection

__all__ = ["install"]


class _CoalescingTransport:
    """Wraps an asyncio transport: writes made in one callback become one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)
        self._pending_bytes += len(data)

    def _flush(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._pending_bytes

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        # As asyncio's own write would have: what was written before the abort was sent.
        self._flush()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@functools.cache  # once per process
def install() -> None:
    """Make every asyncssh connection of this process coalesce its packet writes."""
    original = asyncssh.connection.SSHConnection.connection_made

    def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
        original(self, transport)
        if isinstance(transport, asyncio.Transport):
            self._transport = _CoalescingTransport(transport, self._loop)

    asyncssh.connection.SSHConnection.connection_made = connection_made  # type: ignore[method-assign]
