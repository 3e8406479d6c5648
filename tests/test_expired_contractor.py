"""A contractor whose `expires` passes never blocks a reload or a restart (finding 10)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness import BastionProcess, World, control, free_port, make_key

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]}


def test_reload_and_restart_work_after_a_contractor_expires(tmp_path: Path) -> None:
    world = World(root=tmp_path / "w", port=free_port(), users=dict(USERS))
    pub = make_key(world.key("cora"), "cora@test")
    # cora must still be valid through the bastion's start and her first login (on a loaded
    # machine the start alone can take seconds; the harness allows it 20 s).
    expires = (datetime.now(UTC) + timedelta(seconds=15)).replace(microsecond=0)
    world.extra_users = (f'[[users]]\nname = "cora"\nroles = ["contractor"]\n'
                         f'public_keys = ["{pub}"]\nexpires = "{expires.isoformat()}"\n')
    world.write_config()
    bastion = BastionProcess(world)
    bastion.start()
    try:
        assert control(bastion, "cora", "whoami").returncode == 0
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
        # A compromised user must still be removable: the reload that removes mallory works.
        mallory = make_key(world.key("mallory"), "mallory@test")
        world.extra_users += (f'[[users]]\nname = "mallory"\nroles = ["developer"]\n'
                              f'public_keys = ["{mallory}"]\n')
        world.write_config()
        bastion.sighup("config reloaded")
        assert control(bastion, "mallory", "whoami").returncode == 0
        world.extra_users = world.extra_users.split("[[users]]\nname = \"mallory\"")[0]
        world.write_config()
        bastion.sighup("config reloaded")
        assert control(bastion, "mallory", "whoami").returncode != 0
        refused = control(bastion, "cora", "whoami")
        assert refused.returncode != 0 and "expired" in refused.stderr
        # And a restart with the expired contractor still in the file starts.
        bastion.stop()
        bastion.start()
        assert control(bastion, "alice", "whoami").returncode == 0
        assert "cora cannot log in" in bastion.log.read_text()
    finally:
        bastion.stop()
