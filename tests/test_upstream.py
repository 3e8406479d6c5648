"""The bastion's own certificates for target hosts, read back with the real `ssh-keygen -L`."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import asyncssh

from bastion.ca import CertificateAuthority
from bastion.config import Target
from bastion.models import utcnow
from bastion.ssh.upstream import upstream_credentials


def test_upstream_certificate_fields(tmp_path: Path) -> None:
    ca = CertificateAuthority.load(tmp_path / "upstream_ca", "upstream CA")
    target = Target(name="prod", kind="ssh", address="127.0.0.1:22", login="deploy", approvals_required=1,
                    host_key=asyncssh.generate_private_key("ssh-ed25519").export_public_key()
                    .decode().strip())
    window_end = (utcnow() + timedelta(minutes=20)).replace(microsecond=0)
    key, cert = upstream_credentials(ca, target, "alice", "0123456789abcdef", window_end)
    path = tmp_path / "upstream-cert.pub"
    cert.write_certificate(str(path))
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True,
                             check=True).stdout
    assert 'Key ID: "alice/0123456789abcdef"' in listing
    assert listing.split("Principals:")[1].split("Critical Options:")[0].split() == ["deploy"]
    assert "permit-port-forwarding" not in listing and "permit-agent-forwarding" not in listing
    assert ca.is_signer_of(cert.signing_key)
    valid_before = int(cert._valid_before)  # type: ignore[attr-defined]
    assert valid_before == int(window_end.timestamp())  # never past the user's own window
    assert cert.key.public_data == key.convert_to_public().public_data  # a fresh key per session
    _, again = upstream_credentials(ca, target, "alice", "fedcba9876543210", window_end)
    assert again.key.public_data != cert.key.public_data
