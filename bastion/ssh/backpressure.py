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

A key exchange in progress holds channel data the same way: asyncssh defers every packet but
the key exchange's own until it ends, in a list without limit, and a client that starts a rekey
and never finishes it would otherwise make the bastion defer what its window allows (its socket
never fills, so `pause_writing` never comes). When the exchange ends, channels send what they held.

asyncssh's SFTP server writes each reply without waiting on `drain()`: it now waits after each
request, so a client that asks for reads and never reads the replies gets no more served.
"""

from __future__ import annotations

import functools
from typing import Any

import asyncssh.channel
import asyncssh.connection
import asyncssh.sftp

__all__ = ["install"]

_PAUSED = "_bastion_socket_full"  # set on an SSHConnection while its transport is paused


def socket_full(conn: Any) -> bool:
    """Whether this connection's transport asked its writers to pause."""
    return bool(getattr(conn, _PAUSED, False))


def _holding(conn: Any) -> bool:
    """Whether channel data must wait: the socket is full or a key exchange is under way."""
    return socket_full(conn) or not getattr(conn, "_kex_complete", True)


def _flush_held(conn: Any) -> None:
    """Every channel sends what it held (each at most its high-water mark and one write more,
    since its writer was paused): none waits behind a busier one."""
    for chan in list(conn._channels.values()):
        if chan._send_buf:
            chan._flush_send_buf()


@functools.cache  # once per process
def install() -> None:
    """Make every asyncssh connection of this process respect its transport's back-pressure."""
    connection = asyncssh.connection.SSHConnection
    channel = asyncssh.channel.SSHChannel
    flush = channel._flush_send_buf
    send_deferred = connection._send_deferred_packets

    def pause_writing(self: asyncssh.connection.SSHConnection) -> None:
        setattr(self, _PAUSED, True)

    def resume_writing(self: asyncssh.connection.SSHConnection) -> None:
        setattr(self, _PAUSED, False)
        _flush_held(self)

    def send_deferred_packets(self: asyncssh.connection.SSHConnection) -> None:
        send_deferred(self)  # a key exchange ended (or auth did): what it deferred goes first
        if self._kex_complete:
            _flush_held(self)

    def flush_send_buf(self: asyncssh.channel.SSHChannel[Any]) -> None:
        if self._send_buf and _holding(self._conn):
            self._pause_resume_writing()  # past its high-water mark, the channel's writer waits
            return
        flush(self)

    sftp_server = asyncssh.sftp.SFTPServerHandler
    process_sftp = sftp_server._process_packet

    async def process_sftp_packet(self: asyncssh.sftp.SFTPServerHandler, pkttype: int,
                                  pktid: int, packet: Any) -> None:
        await process_sftp(self, pkttype, pktid, packet)
        if self._writer is not None:
            await self._writer.drain()  # the reply is taken before the next request is served

    sftp_server._process_packet = process_sftp_packet  # type: ignore[method-assign]
    connection.pause_writing = pause_writing  # type: ignore[method-assign]
    connection.resume_writing = resume_writing  # type: ignore[method-assign]
    connection._send_deferred_packets = send_deferred_packets  # type: ignore[method-assign]
    channel._flush_send_buf = flush_send_buf  # type: ignore[method-assign]
