"""Connections from the bastion to target hosts, with a fresh upstream-CA certificate per session."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta

import asyncssh

from bastion.ca import CertificateAuthority, Forwarding, new_serial
from bastion.config import Target
from bastion.errors import BastionError
from bastion.models import utcnow

__all__ = ["UpstreamError", "connect_upstream", "upstream_credentials"]

# AES-GCM first: asyncssh's chacha20-poly1305 costs about twice the CPU per byte.
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
           "aes128-ctr", "aes256-ctr"]
CONNECT_TIMEOUT = 15.0
NO_FORWARDING = Forwarding()


class UpstreamError(BastionError):
    """The bastion could not open the session on the target."""


def upstream_credentials(
    ca: CertificateAuthority, target: Target, user: str, session_id: str, not_after: datetime,
    forwarding: Forwarding = NO_FORWARDING,
) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
    """A fresh key and a certificate for the target's login, valid no longer than `not_after`."""
    now = utcnow()
    key = asyncssh.generate_private_key("ssh-ed25519")
    cert = ca.sign_user(
        key,
        principals=(target.login,),
        key_id=f"{user}/{session_id}",
        serial=new_serial(),
        valid_after=now - timedelta(minutes=1),  # tolerate a target clock slightly behind
        valid_before=not_after,
        forwarding=forwarding,
    )
    return key, cert


KeyLists = tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]


def _known_hosts(target: Target) -> asyncssh.SSHKnownHosts | KeyLists:
    if target.host_key:
        return ([asyncssh.import_public_key(target.host_key)], [], [])
    assert target.known_hosts is not None
    try:
        return asyncssh.read_known_hosts(str(target.known_hosts))
    except (OSError, ValueError) as exc:
        raise UpstreamError(f"cannot read the known_hosts file for {target.name}: {exc}") from None


async def connect_upstream(
    ca: CertificateAuthority, target: Target, user: str, session_id: str, not_after: datetime,
    forwarding: Forwarding = NO_FORWARDING,
) -> asyncssh.SSHClientConnection:
    """Log into `target` as its configured login; explain every failure in the user's words."""
    key, cert = upstream_credentials(ca, target, user, session_id, not_after, forwarding)
    where = f"{target.name} ({target.host}:{target.port})"
    try:
        return await asyncio.wait_for(
            asyncssh.connect(
                target.host,
                target.port,
                username=target.login,
                client_keys=[(key, cert)],
                known_hosts=_known_hosts(target),
                agent_path=None,
                agent_forwarding=False,
                x11_forwarding=False,
                config=None,
                encryption_algs=CIPHERS,
                preferred_auth="publickey",
            ),
            CONNECT_TIMEOUT,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise UpstreamError(
            f"the host key of {where} is not the one configured for it: refusing to connect "
            "(if the host was rebuilt, an administrator must update its host_key)"
        ) from None
    except asyncssh.PermissionDenied:
        raise UpstreamError(
            f"{where} refused the bastion's certificate for {target.login!r}: its sshd must trust "
            "the upstream CA (TrustedUserCAKeys) and allow that login"
        ) from None
    except TimeoutError:
        raise UpstreamError(f"{where} did not answer within {CONNECT_TIMEOUT:.0f} s") from None
    except (OSError, asyncssh.Error) as exc:
        if isinstance(exc, OSError) and exc.errno:
            reason = os.strerror(exc.errno)  # asyncio's "Connect call failed (…)" says less
        else:
            reason = str(exc)
        raise UpstreamError(f"cannot reach {where}: {reason}") from None
