"""Trying to get past the target login checks as an attacker would, with the real bastion.

Certificates the bastion never issued are forged here with the bastion's own user CA key (read
from its data dir): even a leaked CA key must not open a target, because every login is checked
against what the store says was issued (serial, key, principals, window, key id, request).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from harness import BastionProcess, World, control, control_json, free_port, make_key, ssh, start_target

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"],
         "mallory": ["developer"]}


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("attacks"), port=free_port(), users=dict(USERS))
    target = start_target(world)
    world.write_config()
    proc = BastionProcess(world)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        target.stop()


def approved(bastion: BastionProcess, user: str, target: str) -> tuple[int, Path]:
    """An approved request of `user` for `target` and the certificate the bastion issued for it."""
    req = control_json(bastion, user, "request", target, "--reason", "INC-13: attack drill")
    if req["status"] != "approved":
        control_json(bastion, "bob", "approve", str(req["id"]))
    result = control(bastion, user, "cert", str(req["id"]))
    assert result.returncode == 0, result.stderr
    path = bastion.world.root / "certs" / f"{user}-{req['id']}-cert.pub"
    path.parent.mkdir(exist_ok=True)
    path.write_text(result.stdout)
    return req["id"], path


def serial_of(cert: Path) -> int:
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True,
                             check=True).stdout
    return int(listing.split("Serial: ")[1].split()[0])


def window_of(cert: Path) -> str:
    """The certificate's validity window as an `ssh-keygen -V` argument."""
    listing = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True,
                             check=True).stdout
    start, _, end = listing.split("Valid: from ")[1].split()[:3]
    return ":".join(re.sub(r"\D", "", t) for t in (start, end))


def forge(bastion: BastionProcess, user: str, name: str, *, key_id: str, serial: int,
          principals: str | None, validity: str = "-5m:+1h") -> tuple[Path, Path]:
    """Sign a copy of `user`'s key with the bastion's real user CA, with fields of our choosing."""
    directory = bastion.world.root / "forged" / name
    directory.mkdir(parents=True)
    key = directory / "id"
    key.write_bytes(bastion.world.key(user).read_bytes())
    key.chmod(0o600)
    Path(f"{key}.pub").write_text(Path(f"{bastion.world.key(user)}.pub").read_text())
    ca = bastion.world.root / "data" / "user_ca"
    args = ["ssh-keygen", "-q", "-s", str(ca), "-I", key_id, "-z", str(serial), "-V", validity]
    if principals is not None:
        args += ["-n", principals]
    subprocess.run([*args, f"{key}.pub"], check=True, capture_output=True)
    return key, Path(f"{key}-cert.pub")


def refused_logins(bastion: BastionProcess) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = control_json(bastion, "carol", "audit", "--kind", "login.refused",
                                                "--limit", "1000")
    return events


def assert_refused(bastion: BastionProcess, key: Path, cert: Path, target: str, why: str) -> None:
    result = ssh(bastion, key, target, ["echo", "got-in"], cert=cert)
    assert result.returncode == 255, result
    assert "got-in" not in result.stdout
    assert f"access to {target} refused" in result.stderr and why in result.stderr, result.stderr
    assert any(why in e["details"]["reason"] for e in refused_logins(bastion))


def test_forged_certificates_are_accepted_only_as_issued(bastion: BastionProcess) -> None:
    # The control case: a certificate re-signed with exactly the issued fields gets in, so the
    # refusals below are caused by the one field each of them changes.
    request_id, cert = approved(bastion, "alice", "prod")
    serial = serial_of(cert)
    key, same = forge(bastion, "alice", "control", key_id=f"alice/{request_id}", serial=serial,
                      principals="prod", validity=window_of(cert))
    ok = ssh(bastion, key, "prod", ["echo", "as-issued"], cert=same)
    assert ok.returncode == 0 and ok.stdout == "as-issued\n", ok.stderr

    # The key id names another user (the audit trail would blame bob).
    key, cert2 = forge(bastion, "alice", "other-user", key_id=f"bob/{request_id}", serial=serial,
                       principals="prod")
    assert_refused(bastion, key, cert2, "prod", "does not match what the bastion issued")
    assert_refused(bastion, key, cert2, "prod", "request prod --reason")
    # The key id names another request.
    key, cert3 = forge(bastion, "alice", "other-request", key_id=f"alice/{request_id + 1000}",
                       serial=serial, principals="prod")
    assert_refused(bastion, key, cert3, "prod", "does not match what the bastion issued")
    # A longer window than the one issued.
    key, cert4 = forge(bastion, "alice", "longer", key_id=f"alice/{request_id}", serial=serial,
                       principals="prod", validity="-5m:+30d")
    assert_refused(bastion, key, cert4, "prod", "does not match what the bastion issued")


def test_every_certificate_has_its_own_serial(bastion: BastionProcess) -> None:
    serials = {serial_of(approved(bastion, "alice", "staging")[1]) for _ in range(4)}
    assert len(serials) == 4 and 0 not in serials


def test_certificate_signed_for_a_different_request(bastion: BastionProcess) -> None:
    # alice holds an approved staging grant; her prod request is still pending. A certificate for
    # prod carrying the staging grant's serial (or the prod request's id) does not open prod.
    staging_id, staging_cert = approved(bastion, "alice", "staging")
    pending = control_json(bastion, "alice", "request", "prod", "--reason", "INC-14: later")
    assert pending["status"] == "pending"
    key, cert = forge(bastion, "alice", "cross-request", key_id=f"alice/{staging_id}",
                      serial=serial_of(staging_cert), principals="prod")
    assert_refused(bastion, key, cert, "prod", "does not match what the bastion issued")
    key, cert = forge(bastion, "alice", "pending-request", key_id=f"alice/{pending['id']}",
                      serial=123456789, principals="prod")
    assert_refused(bastion, key, cert, "prod", "no record of issuing certificate serial 123456789")


def test_revoked_serial_cannot_be_replayed_in_a_fresh_certificate(bastion: BastionProcess) -> None:
    request_id, cert = approved(bastion, "alice", "staging")
    control_json(bastion, "alice", "revoke", str(request_id), "--reason", "done")
    key, replay = forge(bastion, "alice", "replay", key_id=f"alice/{request_id}",
                        serial=serial_of(cert), principals="staging", validity="-1m:+2h")
    assert_refused(bastion, key, replay, "staging", "was revoked")
    assert_refused(bastion, bastion.world.key("alice"), cert, "staging", "was revoked")


def test_empty_or_several_principals_are_refused(bastion: BastionProcess) -> None:
    request_id, cert = approved(bastion, "alice", "staging")
    serial = serial_of(cert)
    # No principals means "any user" to OpenSSH: it must never open anything here.
    key, anyone = forge(bastion, "alice", "no-principals", key_id=f"alice/{request_id}",
                        serial=serial, principals=None)
    assert_refused(bastion, key, anyone, "staging", "your certificate is for none, not staging")
    key, several = forge(bastion, "alice", "two-principals", key_id=f"alice/{request_id}",
                         serial=serial, principals="staging,prod")
    assert_refused(bastion, key, several, "staging", "exactly one target")
    assert_refused(bastion, key, several, "prod", "exactly one target")
    assert_refused(bastion, key, several, "prod", "request prod --reason")


def test_another_users_certificate_with_a_copied_public_key_is_refused(bastion: BastionProcess) -> None:
    # mallory (a registered user) presents alice's certificate with her own private key: the
    # real OpenSSH client offers it, cannot sign with it, and is told to get her own.
    _, cert = approved(bastion, "alice", "staging")
    result = ssh(bastion, bastion.world.key("mallory"), "staging", ["echo", "got-in"], cert=cert)
    assert result.returncode == 255 and "got-in" not in result.stdout
    assert "access to staging refused" in result.stderr
    assert "not made with the key it was issued for" in result.stderr
    assert "request staging --reason" in result.stderr


async def test_right_certificate_signed_by_the_wrong_key_is_refused(bastion: BastionProcess) -> None:
    # An attacker client that does offer alice's (valid) certificate but signs the login with
    # mallory's key: the certificate passes every store check, the signature does not.
    _, cert_path = approved(bastion, "alice", "staging")
    alice = asyncssh.read_private_key(str(bastion.world.key("alice")))
    mallory = asyncssh.read_private_key(str(bastion.world.key("mallory")))
    pair = asyncssh.load_keypairs([(alice, asyncssh.read_certificate(str(cert_path)))])[0]
    pair._key = mallory  # type: ignore[attr-defined]  # sign with the wrong private key
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1", bastion.world.port, username="staging", client_keys=[pair],
            known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
        )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any("not made with the key it was issued for" in e["details"]["reason"]
               for e in refused_logins(bastion)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no refusal audited: {refused_logins(bastion)[:3]}")


def test_target_certificate_does_not_open_the_control_plane(
        bastion: BastionProcess, tmp_path: Path) -> None:
    # A valid target certificate is no way into access@: the control plane takes plain keys only.
    stranger = tmp_path / "stranger"
    make_key(stranger)
    _, cert = approved(bastion, "alice", "staging")
    result = ssh(bastion, stranger, "access", ["whoami"], cert=cert)
    assert result.returncode == 255 and "not registered" in result.stderr
