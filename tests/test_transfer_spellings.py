"""File-transfer refusal does not depend on spelling (finding 6): the command net sees through
wrappers and paths, and the wire net catches the protocols however the command was written."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    running_bastion,
    ssh_argv,
)

from bastion.ssh.transfer import command_refusal, wire_refusal

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]}
SECRET = "/etc/hostname"


# Decisions, without sockets -------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    "scp -f /etc/hostname", "command scp -f x", "/usr//bin/scp -t /tmp", "env scp -t /tmp",
    "exec scp -t /tmp", "scp\t-t /tmp", "env -i FOO=1 nice -n 5 scp -t /tmp",
    "/usr/lib/openssh/sftp-server", "sudo -u root /usr/lib/openssh/sftp-server",
    "sh -c 'scp -t /tmp'", "bash -lc \"cd /; exec rsync --server -e.Lsfx . /tmp\"",
    "true; scp -t /tmp", "echo x | scp -t /tmp", "rsync --server --sender -e.LsfxC . /etc",
    "find /etc -name hostname -exec scp {} h: ;", "\"/usr/bin/scp\" -t /tmp", "SCP -t /tmp",
])
def test_commands_that_transfer_files_are_refused(command: str) -> None:
    assert command_refusal(command, None) is not None


@pytest.mark.parametrize("command", [
    "ls -l /tmp", "cat /var/log/syslog", "grep -r scp-notes /srv", "journalctl -u sshd",
    "systemctl restart app", "echo rsync is great",
])
def test_ordinary_commands_pass(command: str) -> None:
    assert command_refusal(command, None) is None


@pytest.mark.parametrize("data, from_client", [
    (b"\x00\x00\x00\x05\x01\x00\x00\x00\x03", True),   # SSH_FXP_INIT, version 3
    (b"\x00", True),                                    # scp -f: the client's go-ahead
    (b"C0644 12 hostname\n", True),                     # scp -t: a file header
    (b"D0755 0 dir\n", True),
    (b"T1700000000 0 1700000000 0\n", True),
    (b"\x1f\x00\x00\x00", True),                        # rsync protocol 31
    (b"\x00", False),                                   # scp -t answers NUL first
    (b"\x1f\x00\x00\x00\x81", False),
])
def test_transfer_protocols_are_recognised_on_the_wire(data: bytes, from_client: bool) -> None:
    assert wire_refusal(data, from_client=from_client) is not None


@pytest.mark.parametrize("data", [b"hello\n", b"SELECT 1;\n", b"\x1b[A", b"{}", b"\x00\x01binary"])
def test_ordinary_first_bytes_pass(data: bytes) -> None:
    assert wire_refusal(data, from_client=True) is None


# Through the real front door, with the real clients --------------------------------------------

@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("transfer"), port=free_port(), users=dict(USERS))
    with running_bastion(world) as proc:
        yield proc


@pytest.fixture(scope="module")
def cert(bastion: BastionProcess) -> Path:
    req = control_json(bastion, "alice", "request", "prod", "--reason", "INC-6: files")
    control_json(bastion, "bob", "approve", str(req["id"]))
    path = bastion.world.root / "alice-cert.pub"
    path.write_text(control(bastion, "alice", "cert").stdout)
    return path


@pytest.mark.parametrize("command", [
    "command scp -f /etc/hostname", "/usr//bin/scp -f /etc/hostname", "env scp -f /etc/hostname",
    "exec scp -f /etc/hostname", "scp\t-f /etc/hostname",
    # Neither the word scp nor a known wrapper: only the wire net can see it.
    "sh -c \"$(printf 's%sp' c) -f /etc/hostname\"",
    "x=sc; y=p; $x$y -f /etc/hostname",
])
def test_hand_driven_scp_downloads_get_no_file_byte(bastion: BastionProcess, cert: Path,
                                                     command: str) -> None:
    secret = Path(SECRET).read_bytes()
    result = subprocess.run(
        [*ssh_argv(bastion, bastion.world.key("alice"), "prod", cert=cert), command],
        input=b"\x00" * 4, capture_output=True, timeout=30)
    assert result.returncode == 1, result.stderr
    assert b"file transfer by a command" in result.stderr and b"scp (without -O)" in result.stderr
    assert secret.strip() not in result.stdout and b"C0644" not in result.stdout


def test_sftp_with_a_server_path_is_refused(bastion: BastionProcess, cert: Path,
                                            tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.write_text(f"get {SECRET} {tmp_path}/got\n")
    result = subprocess.run(
        ["sftp", "-F", "/dev/null", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={bastion.known_hosts()}", "-o", "IdentitiesOnly=yes",
         "-i", str(bastion.world.key("alice")), "-o", f"CertificateFile={cert}",
         "-s", "/usr/lib/openssh/sftp-server", "-b", str(batch), "-P", str(bastion.world.port),
         "prod@127.0.0.1"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert not (tmp_path / "got").exists()


def test_rsync_through_a_wrapper_is_refused(bastion: BastionProcess, cert: Path,
                                            tmp_path: Path) -> None:
    ssh = " ".join(ssh_argv(bastion, bastion.world.key("alice"), "prod", cert=cert)[:-1])
    result = subprocess.run(
        ["rsync", "-e", ssh, "--rsync-path", "env rsync", f"prod@127.0.0.1:{SECRET}",
         str(tmp_path / "got")], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert not (tmp_path / "got").exists()
    events = control_json(bastion, "carol", "audit", "--kind", "transfer.refused")
    assert events and events[0]["actor"] == "alice"
