"""Channel data held back while the connection's socket is full: memory bounded by the bastion,
not by the window a client grants.

asyncssh sends channel data as far as the peer's SSH window allows and ignores the transport's
`pause_writing`; a client that grants a 1 GiB window and stops reading its socket makes the
server buffer up to that much per channel (asyncio's write buffer has no limit). Here, while the
transport is paused, channels keep their data in their own send buffers instead of turning it
into packets; past a channel's high-water mark asyncssh pauses the channel's writer, so the
relays' `drain()` waits and they stop reading from the target. When the transport resumes, every
channel sends what it held. Only channel data waits: key exchange, window adjustments,
keepalives, EOF and close still go out.
"""

from __future__ import annotations

import functools
from typing import Any

import asyncssh.channel
import asyncssh.connection

__all__ = ["install"]

_PAUSED = "_bastion_socket_full"  # set on an SSHConnection while its transport is paused


def socket_full(conn: Any) -> bool:
    """Whether this connection's transport asked its writers to pause."""
    return bool(getattr(conn, _PAUSED, False))


@functools.cache  # once per process
def install() -> None:
    """Make every asyncssh connection of this process respect its transport's back-pressure."""
    connection = asyncssh.connection.SSHConnection
    channel = asyncssh.channel.SSHChannel
    flush = channel._flush_send_buf

    def pause_writing(self: asyncssh.connection.SSHConnection) -> None:
        setattr(self, _PAUSED, True)

    def resume_writing(self: asyncssh.connection.SSHConnection) -> None:
        setattr(self, _PAUSED, False)
        # Every channel sends what it held (each at most its high-water mark and one write
        # more, since its writer was paused): none waits behind a busier one.
        for chan in list(self._channels.values()):
            if chan._send_buf:
                chan._flush_send_buf()

    def flush_send_buf(self: asyncssh.channel.SSHChannel[Any]) -> None:
        if self._send_buf and socket_full(self._conn):
            self._pause_resume_writing()  # past its high-water mark, the channel's writer waits
            return
        flush(self)

    connection.pause_writing = pause_writing  # type: ignore[method-assign]
    connection.resume_writing = resume_writing  # type: ignore[method-assign]
    channel._flush_send_buf = flush_send_buf  # type: ignore[method-assign]
