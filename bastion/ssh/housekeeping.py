"""asyncssh's per-packet housekeeping, done only when it has something to do.

Two things asyncssh does for every packet or read cost a relayed database statement more than
they are worth (py-spy, pgbench through the bastion: ~2.5 % of the event loop each):

- The packet log: each packet sent or received has its log line built (a type name, a byte
  count, an f-string) before the logger looks at whether packet logging is on (asyncssh's debug
  level 3, which the bastion never sets). Here the line is built only when it is on.
- The keepalive timer: every read from the socket cancels the timer and schedules a new one
  (two heap operations and a TimerHandle). Here a read only notes the time; when the timer
  fires and something was heard within the interval, it is set again for the rest of the
  interval. A keepalive request still goes out after `keepalive_interval` seconds in which
  nothing was heard, as before.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import asyncssh.connection
import asyncssh.packet

__all__ = ["install"]

PACKET_LOG_LEVEL = 3  # asyncssh's debug level at which packets are logged


@functools.cache  # once per process
def install() -> None:
    """Make the packet log and the keepalive timer cheap for this process's connections."""
    logger = asyncssh.packet.SSHPacketLogger
    log_packet = logger._log_packet

    def _log_packet(self: Any, msg: str, pkttype: int, pktid: int | None, packet: Any,
                    note: str) -> None:
        if self.logger._debug_level >= PACKET_LOG_LEVEL:
            log_packet(self, msg, pkttype, pktid, packet, note)

    logger._log_packet = _log_packet  # type: ignore[method-assign]

    connection = asyncssh.connection.SSHConnection
    timer_fired = connection._keepalive_timer_callback
    set_keepalive = connection.set_keepalive

    def _reset_keepalive_timer(self: Any) -> None:
        if self._auth_complete:
            self._keepalive_heard = time.monotonic()
            if self._keepalive_timer is None:
                self._set_keepalive_timer()

    def _keepalive_timer_callback(self: Any) -> None:
        heard: float | None = getattr(self, "_keepalive_heard", None)
        interval = self._keepalive_interval
        if heard is not None and interval:
            quiet = time.monotonic() - heard
            if quiet < interval:
                self._keepalive_timer = self._loop.call_later(interval - quiet,
                                                              self._keepalive_timer_callback)
                return
        timer_fired(self)

    def set_keepalive_(self: Any, *args: Any, **kwargs: Any) -> None:
        self._cancel_keepalive_timer()  # a new interval takes effect now, not at the next firing
        set_keepalive(self, *args, **kwargs)

    connection._reset_keepalive_timer = _reset_keepalive_timer  # type: ignore[method-assign]
    connection._keepalive_timer_callback = _keepalive_timer_callback  # type: ignore[method-assign]
    connection.set_keepalive = set_keepalive_  # type: ignore[method-assign]
