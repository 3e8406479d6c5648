"""The bastion's changes to asyncssh's SSH transport, installed once for the whole process
(docs/ssh-transport.md): chacha20-poly1305 through libsodium, AES-GCM with one key schedule per
direction, packet writes coalesced per turn
of the event loop, no SSH_MSG_IGNORE before each packet but under CBC, channel data held back
while the socket is full, the packet log and keepalive timer touched only when
they have work, and the GIL handed back to the event loop's thread sooner."""

from __future__ import annotations

import sys

from bastion.ssh import backpressure, chacha, coalescing, gcm, housekeeping, ignore_packets

__all__ = ["GIL_SWITCH_INTERVAL", "install"]

GIL_SWITCH_INTERVAL = 0.0005  # seconds (sys.setswitchinterval)


def install() -> None:
    """Tune every asyncssh connection of this process (idempotent)."""
    coalescing.install()
    chacha.install()
    gcm.install()
    ignore_packets.install()
    backpressure.install()
    housekeeping.install()
    # The event loop's thread gets the GIL back within 0.5 ms (not Python's 5 ms) of asking
    # when a store or recorder thread holds it: each relayed message waits on that hand-off.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
