"""Access that changes under a running bastion: reloads, removed users, contractors, restarts."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    make_key,
    ssh,
    ssh_argv,
    start_target,
    wait_for,
)

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(root=tmp_path, port=free_port(), users=dict(USERS))
    target = start_target(w)
    w.write_config()
    yield w
    target.stop()


@pytest.fixture
def bastion(world: World) -> Iterator[BastionProcess]:
    proc = BastionProcess(world)
    proc.start()
    yield proc
    proc.stop()


def approved_cert(bastion: BastionProcess, user: str, target: str = "prod") -> Path:
    req = control_json(bastion, user, "request", target, "--reason", "INC-7: check")
    if req["status"] != "approved":
        control_json(bastion, "bob", "approve", str(req["id"]))
    result = control(bastion, user, "cert", str(req["id"]))
    assert result.returncode == 0, result.stderr
    path = bastion.world.root / f"{user}-{req['id']}-cert.pub"
    path.write_text(result.stdout)
    return path


def test_user_removed_from_config_is_refused_after_sighup(bastion: BastionProcess) -> None:
    cert = approved_cert(bastion, "alice")
    key = bastion.world.key("alice")
    assert ssh(bastion, key, "prod", ["true"], cert=cert).returncode == 0
    del bastion.world.users["alice"]
    bastion.world.write_config()
    bastion.sighup("config reloaded")
    result = ssh(bastion, key, "prod", ["true"], cert=cert)
    assert result.returncode == 255
    assert "refused" in result.stderr and "alice" in result.stderr
    control_plane = ssh(bastion, key, "access", ["requests"])
    assert control_plane.returncode == 255 and "not registered" in control_plane.stderr
    kinds = [e["kind"] for e in control_json(bastion, "carol", "audit")]
    assert "config.reloaded" in kinds


def test_removing_a_user_ends_their_live_sessions(bastion: BastionProcess) -> None:
    cert = approved_cert(bastion, "alice")
    live = subprocess.Popen(
        [*ssh_argv(bastion, bastion.world.key("alice"), "prod", cert=cert), "echo started; sleep 60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert live.stdout is not None and live.stdout.readline() == "started\n"
    del bastion.world.users["alice"]
    bastion.world.write_config()
    bastion.sighup("config reloaded")
    _, err = live.communicate(timeout=15)
    assert live.returncode == 255
    assert "your access was removed from the bastion" in err
    # The client is told first; the session's end reaches the audit trail right after.
    ended = wait_for(lambda: control_json(bastion, "carol", "audit", "--kind", "session.ended"))
    assert ended and ended[0]["actor"] == "alice"
    assert ended[0]["details"]["reason"] == "your access was removed from the bastion"


def test_pending_request_expires_and_cannot_be_approved(world: World) -> None:
    world.pending_ttl = "2s"
    world.write_config()
    bastion = BastionProcess(world)
    bastion.start()
    try:
        req = control_json(bastion, "alice", "request", "prod", "--reason", "INC-8: nobody looks")
        assert req["status"] == "pending"
        time.sleep(2.5)
        assert control_json(bastion, "alice", "requests", "--all")[0]["status"] == "expired"
        late = control(bastion, "bob", "approve", str(req["id"]))
        assert late.returncode != 0 and f"request {req['id']} is expired" in late.stderr
        cert = control(bastion, "alice", "cert", str(req["id"]))
        assert cert.returncode != 0 and "expired" in cert.stderr
        # The periodic sweep records the transition in the audit trail.
        deadline = time.monotonic() + 15
        while True:
            events = control_json(bastion, "carol", "audit", "--kind", "request.expired")
            if any(e["request_id"] == req["id"] for e in events):
                break
            assert time.monotonic() < deadline, events
            time.sleep(0.5)
    finally:
        bastion.stop()


def test_failed_reload_keeps_the_previous_config(bastion: BastionProcess) -> None:
    bastion.world.extra = '[[targets]]\nname = "broken"\nkind = "telnet"\naddress = "x"\nlogin = "x"\n'
    bastion.world.write_config()
    bastion.sighup("config reload failed")
    log = bastion.log.read_text()
    assert "keeping the previous config" in log and "targets[3].kind" in log
    # The old config still works.
    assert control_json(bastion, "alice", "whoami")["user"] == "alice"
    # The failure is logged first and audited right after: wait for the audit event.
    events = wait_for(lambda: control_json(bastion, "carol", "audit", "--kind", "config."))
    assert events and events[0]["kind"] == "config.reload_failed", events
    assert "telnet" in events[0]["details"]["error"]


def test_contractor_past_expires_is_refused(world: World) -> None:
    # carl must still be valid through the bastion's start and five SSH round trips below (on
    # a loaded machine the start alone can take seconds; the harness allows it 20 s).
    soon = (datetime.now(UTC) + timedelta(seconds=15)).replace(microsecond=0)
    make_key(world.key("carl"))
    world.extra_users = (
        f'[[users]]\nname = "carl"\nroles = ["contractor"]\n'
        f'expires = {soon.isoformat().replace("+00:00", "Z")}\n'
        f'public_keys = ["{Path(str(world.key("carl")) + ".pub").read_text().strip()}"]\n'
    )
    world.write_config()
    bastion = BastionProcess(world)
    bastion.start()
    try:
        cert = approved_cert(bastion, "carl")
        assert ssh(bastion, world.key("carl"), "prod", ["true"], cert=cert).returncode == 0
        info = control_json(bastion, "carl", "whoami")
        assert info["expires"].startswith(soon.strftime("%Y-%m-%dT%H:%M:%S"))
        time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 1)
        result = ssh(bastion, world.key("carl"), "prod", ["true"], cert=cert)
        assert result.returncode == 255
        assert "expired" in result.stderr
        denied = ssh(bastion, world.key("carl"), "access", ["requests"])
        assert denied.returncode == 255 and "account of carl has expired" in denied.stderr
    finally:
        bastion.stop()


def test_state_survives_a_restart(bastion: BastionProcess) -> None:
    cert = approved_cert(bastion, "alice")
    host_key = (bastion.world.root / "data" / "host_key.pub").read_text()
    bastion.stop()
    bastion.start()
    # The host key persists in the data dir: clients' known_hosts stay valid across restarts.
    assert (bastion.world.root / "data" / "host_key.pub").read_text() == host_key
    assert ssh(bastion, bastion.world.key("alice"), "prod", ["true"], cert=cert).returncode == 0
    assert control_json(bastion, "alice", "requests")[0]["status"] == "approved"


def test_bastion_with_postgresql_state_store(tmp_path: Path, pg_url: str) -> None:
    world = World(root=tmp_path, port=free_port(), users=dict(USERS), store_url=pg_url)
    target = start_target(world)
    world.write_config()
    bastion = BastionProcess(world)
    bastion.start()
    try:
        cert = approved_cert(bastion, "alice")
        assert ssh(bastion, world.key("alice"), "prod", ["true"], cert=cert).returncode == 0
        kinds = {e["kind"] for e in control_json(bastion, "carol", "audit")}
        assert {"request.created", "request.approved", "login.success"} <= kinds
    finally:
        bastion.stop()
        target.stop()


def test_bad_config_is_refused_at_start_with_file_and_key(world: World) -> None:
    world.users["mallory"] = ["hacker"]
    world.write_config()
    bastion = BastionProcess(world)
    with pytest.raises(RuntimeError) as exc:
        bastion.start()
    assert f"{world.config}: users[" in str(exc.value) and "unknown role 'hacker'" in str(exc.value)


def test_json_request_has_the_contract_fields(bastion: BastionProcess) -> None:
    req = control_json(bastion, "alice", "request", "prod", "--reason", "INC-1")
    assert {"id", "user", "target", "reason", "status", "expires_at"} <= set(req)
    listed = json.loads(control(bastion, "alice", "requests", "--json").stdout)
    assert listed[0]["id"] == req["id"]
