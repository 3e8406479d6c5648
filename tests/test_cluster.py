"""Three `bastion serve` nodes on one PostgreSQL behind a real HAProxy, driven with stock `ssh`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import Cluster, running_cluster
from harness import REPO, BastionProcess, control, control_json, ssh, ssh_argv, wait_for

from recorder import OutputEvent, RecordingReader, load_auditor_private_key

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"],
         "eve": ["contractor"]}
NODE_TIMEOUT = 3  # seconds without a heartbeat before a node is dead (short, for the test)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), USERS, 3,
                         node_timeout=f"{NODE_TIMEOUT}s") as running:
        yield running


def grant(front: BastionProcess, user: str = "alice") -> tuple[Path, int]:
    """A fresh approved request of a user's for prod, and their certificate file."""
    req = control_json(front, user, "request", "prod", "--reason", "INC-12")
    control_json(front, "bob", "approve", str(req["id"]))
    result = control(front, user, "cert", str(req["id"]))
    assert result.returncode == 0, result.stderr
    cert = front.world.root / f"{user}-{req['id']}-cert.pub"
    cert.write_text(result.stdout)
    return cert, req["id"]


def open_session(front: BastionProcess, cert: Path, marker: str, user: str = "alice"
                 ) -> subprocess.Popen[str]:
    """A live shell session through HAProxy, once it has printed `marker`."""
    live = subprocess.Popen(
        [*ssh_argv(front, front.world.key(user), "prod", cert=cert), f"echo {marker}; sleep 60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert live.stdout is not None and live.stdout.readline() == f"{marker}\n"
    return live


def sessions(front: BastionProcess) -> dict[str, dict[str, Any]]:
    """Every session, as the auditor lists it through whichever node HAProxy picks."""
    return {s["id"]: s for s in control_json(front, "carol", "sessions", "--limit", "1000")}


def session_of(front: BastionProcess, marker: str) -> dict[str, Any]:
    events = control_json(front, "carol", "audit", "--kind", "session.started", "--limit", "1000")
    ids = [e["session_id"] for e in events if marker in (e["details"].get("command") or "")]
    assert len(ids) == 1, f"sessions running {marker!r}: {ids}"
    return sessions(front)[ids[0]]


def test_sessions_spread_over_nodes_and_a_revoke_ends_them_everywhere(cluster: Cluster) -> None:
    front = cluster.front
    cert, request_id = grant(front)
    lives = [open_session(front, cert, f"spread-{i}") for i in range(3)]
    on = {session_of(front, f"spread-{i}")["bastion_id"] for i in range(3)}
    assert on == {"node1", "node2", "node3"}
    revoked = control_json(front, "bob", "revoke", str(request_id), "--reason", "incident over")
    assert revoked["status"] == "revoked"
    after_revoke = time.monotonic()
    for live in lives:
        _, err = live.communicate(timeout=10)
        assert live.returncode == 255 and f"request {request_id} was revoked" in err
    # Two of the three ran on nodes other than the one that took the revoke.
    assert time.monotonic() - after_revoke < 2.0


def test_auditor_kill_ends_a_session_on_another_node(cluster: Cluster) -> None:
    front = cluster.front
    cert, _ = grant(front)
    lives = [open_session(front, cert, f"kill-{i}") for i in range(3)]
    victim = session_of(front, "kill-1")
    # Each kill goes through HAProxy to whichever node; one session per node, so some kill
    # is always taken by a node the session does not run on.
    ended = control_json(front, "carol", "kill", victim["id"], "--reason", "suspicious")
    assert ended["ended"] is True
    _, err = lives[1].communicate(timeout=5)
    assert lives[1].returncode == 255 and "ended by carol: suspicious" in err
    for i in (0, 2):
        session = session_of(front, f"kill-{i}")
        control_json(front, "carol", "kill", session["id"])
        lives[i].communicate(timeout=5)
    assert all(live.returncode == 255 for live in lives)


def test_auditor_lists_every_session_and_replays_any_from_any_node(cluster: Cluster,
                                                                     tmp_path: Path) -> None:
    front = cluster.front
    spread = [session_of(front, f"spread-{i}") for i in range(3)]
    assert {s["bastion_id"] for s in spread} == {"node1", "node2", "node3"}

    def landed() -> bool:
        listed = sessions(front)
        return all(listed[s["id"]]["recording"].startswith(str(cluster.shared)) for s in spread)

    assert wait_for(landed, 10), "recordings did not land in the shared store"
    identity = load_auditor_private_key(front.world.root / "keys" / "auditor")
    # Three fetches through HAProxy, of recordings made on three nodes: at least two are served
    # by a node other than the one that recorded them.
    for i, session in enumerate(spread):
        fetched = subprocess.run(
            [*ssh_argv(front, front.world.key("carol"), "access"), f"recording {session['id']}"],
            capture_output=True, timeout=30)
        assert fetched.returncode == 0, fetched.stderr
        copy = tmp_path / f"{session['id']}.rec"
        copy.write_bytes(fetched.stdout)
        with RecordingReader(copy, identity) as reader:
            output = b"".join(e.data for e in reader if isinstance(e, OutputEvent))
        assert f"spread-{i}".encode() in output
    # `bastion recordings` on any node sees every node's recordings.
    listed = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "recordings", "list", "--json", "--config",
         str(cluster.nodes[0].config)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert listed.returncode == 0, listed.stderr
    ids = {r["id"]: r for r in json.loads(listed.stdout)}
    assert all(ids[s["id"]]["status"] == "intact" for s in spread)


def test_concurrent_approvals_on_two_nodes_count_once(cluster: Cluster) -> None:
    front = cluster.front
    req = control_json(front, "alice", "request", "critical", "--reason", "INC-12 two approvals")
    # One command line for both (building it rewrites known_hosts, which must not race).
    approve = [*ssh_argv(front, front.world.key("bob"), "access"), f"approve {req['id']} --json"]
    with ThreadPoolExecutor(2) as pool:
        twice = list(pool.map(lambda _: subprocess.run(approve, capture_output=True, text=True,
                                                       timeout=30), range(2)))
    assert all(r.returncode == 0 for r in twice), [r.stderr for r in twice]
    after = control_json(front, "alice", "requests")
    mine = next(r for r in after if r["id"] == req["id"])
    assert mine["status"] == "pending"  # bob's two approvals, on two nodes, are one
    control_json(front, "dave", "approve", str(req["id"]))
    mine = next(r for r in control_json(front, "alice", "requests") if r["id"] == req["id"])
    assert mine["status"] == "approved"


def test_a_user_removed_on_one_node_loses_sessions_on_every_node(cluster: Cluster) -> None:
    front = cluster.front
    cert, _ = grant(front, "eve")
    lives = [open_session(front, cert, f"eve-{i}", "eve") for i in range(3)]
    assert {session_of(front, f"eve-{i}")["bastion_id"] for i in range(3)} == {
        "node1", "node2", "node3"}
    for node in cluster.nodes:  # the operator rolls the new config out to every node's file …
        text = node.config.read_text()
        start = text.index('[[users]]\nname = "eve"')
        end = text.index("\n\n", start)
        node.config.write_text(text[:start] + text[end:])
    first = cluster.nodes[0]
    assert first.proc is not None
    first.proc.send_signal(signal.SIGHUP)  # … and reloads one node; the others follow
    sent = time.monotonic()
    for live in lives:
        _, err = live.communicate(timeout=10)
        assert live.returncode == 255 and "your access was removed from the bastion" in err
    assert time.monotonic() - sent < 2.0


def test_a_killed_node_has_its_sessions_ended_and_users_reconnect(cluster: Cluster) -> None:
    front = cluster.front
    cert, _ = grant(front)
    lives = [open_session(front, cert, f"dies-{i}") for i in range(3)]
    placed = [session_of(front, f"dies-{i}") for i in range(3)]
    doomed = cluster.nodes[2]
    assert doomed.proc is not None
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.proc.wait()
    killed_at = time.monotonic()
    orphan = next(s for s in placed if s["bastion_id"] == doomed.bastion_id)

    def marked_ended() -> dict[str, Any] | None:
        now = sessions(front)[orphan["id"]]
        return now if now["status"] == "ended_abnormally" else None

    ended = wait_for(marked_ended, NODE_TIMEOUT + 5)
    assert ended, "the dead node's session is still live in the store"
    assert time.monotonic() - killed_at < NODE_TIMEOUT + 3  # timeout plus a heartbeat or two
    assert "bastion node3 stopped answering" in ended["end_reason"]
    assert "recording is cut off" in ended["end_reason"]
    dead = control_json(front, "carol", "audit", "--kind", "node.dead")
    assert [e["details"]["node"] for e in dead] == ["node3"]
    # The other nodes' sessions go on, and alice reconnects through HAProxy as often as she likes.
    survivors = [lives[i] for i, s in enumerate(placed) if s["bastion_id"] != doomed.bastion_id]
    assert len(survivors) == 2 and all(live.poll() is None for live in survivors)
    for i in range(3):
        again = ssh(front, front.world.key("alice"), "prod", ["echo", f"back-{i}"], cert=cert)
        assert again.returncode == 0 and again.stdout == f"back-{i}\n", again.stderr
    for live in lives:
        live.kill()
        live.communicate()
    # Back again, the node lands what its killed run left: the recording, reported cut off.
    doomed.start()
    doomed.wait_listening()

    def landed() -> bool:
        return str(sessions(front)[orphan["id"]]["recording"]).startswith(str(cluster.shared))

    assert wait_for(landed, 10)
    verify = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "recordings", "verify", orphan["id"], "--config",
         str(cluster.nodes[0].config)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert verify.returncode == 3 and "cut off" in verify.stdout, verify.stdout + verify.stderr
