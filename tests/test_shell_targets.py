"""Target connections and session limits: host key checks, the upstream CA, unreachable targets,
the idle timeout. The real `bastion serve`, a real sshd as the target, the real OpenSSH client.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    REPO,
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    ssh,
    start_target,
    wait_for,
)

USERS = {"alice": ["developer", "tester"], "bob": ["approver"], "dave": ["approver"],
         "carol": ["auditor"]}
IDLE = 2


def extra_targets(world: World) -> str:
    """Targets beyond the harness's three: by known_hosts file, unknown host key, unreachable."""
    assert world.target is not None
    known = world.root / "known_hosts_target"
    known.write_text(f"[127.0.0.1]:{world.target.port} {world.target.host_key_line}\n")
    empty = world.root / "known_hosts_empty"
    empty.write_text("")
    dead_port = free_port()  # nothing listens there
    entries = [("by-file", f"127.0.0.1:{world.target.port}", f'known_hosts = "{known}"'),
               ("stranger", f"127.0.0.1:{world.target.port}", f'known_hosts = "{empty}"'),
               ("down", f"127.0.0.1:{dead_port}", f'host_key = "{world.target.host_key_line}"')]
    roles = '[[roles]]\nname = "tester"\nrequest = ["by-file", "stranger", "down"]\n\n'
    return roles + "".join(
        f'[[targets]]\nname = "{name}"\nkind = "ssh"\naddress = "{address}"\nlogin = "root"\n'
        f"{check}\napprovals_required = 0\n\n" for name, address, check in entries)


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("targets"), port=free_port(), users=dict(USERS))
    world.server_extra = f'idle_timeout = "{IDLE}s"'
    target = start_target(world)
    world.extra = extra_targets(world)
    world.write_config()
    proc = BastionProcess(world)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        target.stop()


def cert_for(bastion: BastionProcess, target: str) -> Path:
    req = control_json(bastion, "alice", "request", target, "--reason", "INC-21: check")
    if req["status"] != "approved":
        control_json(bastion, "bob", "approve", str(req["id"]))
    result = control(bastion, "alice", "cert", str(req["id"]))
    assert result.returncode == 0, result.stderr
    path = bastion.world.root / f"alice-{req['id']}-cert.pub"
    path.write_text(result.stdout)
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli", *args], capture_output=True,
                          text=True, cwd=REPO)


def test_ca_key_prints_the_upstream_ca_that_targets_trust(bastion: BastionProcess) -> None:
    assert bastion.world.target is not None
    config = str(bastion.world.config)
    upstream = cli("ca-key", "upstream", "--config", config)
    assert upstream.returncode == 0, upstream.stderr
    trusted = (bastion.world.target.dir / "trusted_user_ca.pub").read_text().strip()
    assert upstream.stdout.strip() == trusted
    user = cli("ca-key", "user", "--config", config)
    assert user.returncode == 0 and user.stdout.strip().startswith("ssh-ed25519 ")
    assert user.stdout.strip() != trusted  # two CAs, never one


def test_target_checked_against_a_known_hosts_file(bastion: BastionProcess) -> None:
    result = ssh(bastion, bastion.world.key("alice"), "by-file", ["echo", "pinned-by-file"],
                 cert=cert_for(bastion, "by-file"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pinned-by-file\n"


def test_unknown_host_key_refuses_the_session(bastion: BastionProcess) -> None:
    result = ssh(bastion, bastion.world.key("alice"), "stranger", ["echo", "should-not-run"],
                 cert=cert_for(bastion, "stranger"))
    assert result.returncode == 1 and "should-not-run" not in result.stdout
    assert "the host key of stranger" in result.stderr and "refusing to connect" in result.stderr
    # The client is told first; the session's end is written to the store right after.
    assert wait_for(lambda: any(s["target"] == "stranger" and "host key" in (s["end_reason"] or "")
                                for s in control_json(bastion, "carol", "sessions"))), \
        control_json(bastion, "carol", "sessions")


def test_unreachable_target_gives_a_clear_message(bastion: BastionProcess) -> None:
    started = time.monotonic()
    result = ssh(bastion, bastion.world.key("alice"), "down", ["echo", "x"],
                 cert=cert_for(bastion, "down"))
    assert result.returncode == 1
    assert "bastion: cannot open down: cannot reach down (127.0.0.1:" in result.stderr
    assert "connection refused" in result.stderr.lower()
    assert time.monotonic() - started < 20  # a refused connection is not waited out
    # The client is told first; the session's end is written to the store right after.
    down = wait_for(lambda: next((s for s in control_json(bastion, "carol", "sessions")
                                  if s["target"] == "down" and s["status"] != "live"), None))
    assert down is not None, control_json(bastion, "carol", "sessions")
    assert down["status"] == "ended" and down["end_reason"].startswith("upstream failed")


def test_idle_session_is_ended(bastion: BastionProcess) -> None:
    cert = cert_for(bastion, "prod")
    started = time.monotonic()
    idle = ssh(bastion, bastion.world.key("alice"), "prod", ["sh", "-c", "echo idle-start; sleep 60"],
               cert=cert, timeout=30)
    assert idle.returncode == 255 and idle.stdout == "idle-start\n"
    assert f"session ended: idle for {IDLE}s" in idle.stderr
    assert time.monotonic() - started < 20
    # Typing keeps a session alive past the idle timeout.
    busy = subprocess.Popen(
        [*_argv(bastion, cert), "while read line; do echo got-$line; done"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert busy.stdin is not None and busy.stdout is not None
    for i in range(4):
        busy.stdin.write(f"{i}\n")
        busy.stdin.flush()
        assert busy.stdout.readline() == f"got-{i}\n"
        time.sleep(IDLE * 0.6)
    busy.communicate(timeout=15)  # closes stdin: the loop ends
    assert busy.returncode == 0


def _argv(bastion: BastionProcess, cert: Path) -> list[str]:
    from harness import ssh_argv

    return ssh_argv(bastion, bastion.world.key("alice"), "prod", cert=cert)
