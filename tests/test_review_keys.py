"""Separation of duties follows keys as well as names (finding 11)."""

from __future__ import annotations

from pathlib import Path

from harness import BastionProcess, World, control, control_json, free_port


def _rename(world: World, old: str, new: str, roles: list[str]) -> None:
    """The same person (same key file) under a new name and roles."""
    (world.root / "keys").mkdir(exist_ok=True)
    for suffix in ("", ".pub"):
        src = world.key(old).with_name(old + suffix)
        dst = world.key(new).with_name(new + suffix)
        dst.write_bytes(src.read_bytes())
        dst.chmod(0o600)
    del world.users[old]
    world.users[new] = roles


def test_a_renamed_requester_cannot_approve_their_own_request(tmp_path: Path) -> None:
    world = World(root=tmp_path / "w", port=free_port(), users={
        "alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]})
    world.write_config()
    bastion = BastionProcess(world)
    bastion.start()
    try:
        req = control_json(bastion, "alice", "request", "prod", "--reason", "INC-11: mine")
        _rename(world, "alice", "alice2", ["developer", "approver"])
        world.write_config()
        bastion.sighup("config reloaded")
        result = control(bastion, "alice2", "approve", str(req["id"]))
        assert result.returncode == 1
        assert "cannot review your own request" in result.stderr
        status = control_json(bastion, "bob", "requests", "--all")
        assert next(r for r in status if r["id"] == req["id"])["status"] == "pending"
        # Two approvals needed: bob approves, is renamed, and cannot approve again.
        crit = control_json(bastion, "alice2", "request", "critical", "--reason", "INC-12: two")
        assert control(bastion, "bob", "approve", str(crit["id"])).returncode == 0
        _rename(world, "bob", "robert", ["approver"])
        world.write_config()
        bastion.sighup("config reloaded")
        again = control(bastion, "robert", "approve", str(crit["id"]))
        assert again.returncode == 1 and "already reviewed with one of your keys" in again.stderr
        assert control(bastion, "dave", "approve", str(crit["id"])).returncode == 0
        listed = control_json(bastion, "dave", "requests", "--all")
        assert next(r for r in listed if r["id"] == crit["id"])["status"] == "approved"
    finally:
        bastion.stop()
