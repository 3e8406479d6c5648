"""The bastion's changes to asyncssh's SSH transport, installed once for the whole process
(docs/ssh-transport.md): chacha20-poly1305 through libsodium, packet writes coalesced per turn
of the event loop, no SSH_MSG_IGNORE before each packet but under CBC, channel data held back
while the socket is full."""

from __future__ import annotations

from bastion.ssh import backpressure, chacha, coalescing, ignore_packets

__all__ = ["install"]


def install() -> None:
    """Tune every asyncssh connection of this process (idempotent)."""
    coalescing.install()
    chacha.install()
    ignore_packets.install()
    backpressure.install()
