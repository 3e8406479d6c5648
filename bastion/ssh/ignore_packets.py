"""No SSH_MSG_IGNORE before every packet, except under CBC ciphers, where it is a defence.

asyncssh sends an empty SSH_MSG_IGNORE ahead of every packet it encrypts after the key
exchange: RFC 4251 §9.3.1's countermeasure against the chosen-plaintext attack on CBC mode's
predictable IVs. The ciphers the bastion negotiates (chacha20-poly1305, AES-GCM, AES-CTR) have
no IV chaining for it to defend, and OpenSSH sends no such packet with them; each one costs a
whole packet's padding, encryption and MAC on the sender and a decryption on the receiver, which
doubles the packets of a relayed database session. With CBC (asyncssh offers it only when asked
to), and any cipher not named here as without IV chaining, the packet is still sent.
"""

from __future__ import annotations

import functools
from typing import Any

import asyncssh.connection
from asyncssh.constants import MSG_IGNORE

__all__ = ["install", "sends_ignore_before_packets"]


def sends_ignore_before_packets(send_cipher: bytes) -> bool:
    """Whether an SSH_MSG_IGNORE must still go before each packet sealed with `send_cipher`: yes
    unless it is one of the modes without IV chaining (fail closed: CBC under any name, such as
    seed-cbc@ssh.com, or a cipher added later, keeps the countermeasure)."""
    base = send_cipher.partition(b"@")[0]
    return not (base == b"chacha20-poly1305" or base.endswith((b"-ctr", b"-gcm")))


_EMPTY = (b"\0\0\0\0",)  # the empty string asyncssh puts in its per-packet SSH_MSG_IGNORE


@functools.cache  # once per process
def install() -> None:
    """Drop asyncssh's per-packet SSH_MSG_IGNORE for this process's connections, but under CBC."""
    connection = asyncssh.connection.SSHConnection
    original = connection.send_packet

    def send_packet(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == _EMPTY and self._send_encryption is not None:
            cipher = self._enc_alg_sc if self.is_server() else self._enc_alg_cs
            if not sends_ignore_before_packets(cipher):
                return
        original(self, pkttype, *args, handler=handler)

    connection.send_packet = send_packet  # type: ignore[method-assign]
