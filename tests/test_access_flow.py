"""The access workflow end to end: the real `bastion serve`, the real OpenSSH client."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    make_key,
    running_bastion,
    ssh,
    wait_for,
)

USERS = {
    "alice": ["developer"],
    "bob": ["approver"],
    "dave": ["approver"],
    "carol": ["auditor"],
    "erin": ["contractor"],
}


class Receiver:
    """A real HTTP server on loopback that records webhook POSTs."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, event: str, request_id: int, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in self.bodies:
                if body.get("event") == event and body.get("request_id") == request_id:
                    return body
            time.sleep(0.05)
        raise AssertionError(f"no {event} for request {request_id}; got {self.bodies}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Blackhole:
    """A dead webhook: accepts TCP connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(100)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/dead"
        self.held: list[socket.socket] = []

    def connections(self) -> int:
        """How many connections the bastion opened to it so far (held open, never answered)."""
        self.sock.setblocking(False)
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except BlockingIOError:
                return len(self.held)

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def dead() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver,
            dead: Blackhole) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("bastion"), port=free_port(), users=dict(USERS))
    world.webhook_url = receiver.url
    world.extra = f'[[webhooks]]\nurl = "{dead.url}"\ntimeout = 30\n'
    with running_bastion(world) as proc:
        yield proc


def request(bastion: BastionProcess, user: str, target: str, *extra: str) -> dict[str, Any]:
    result: dict[str, Any] = control_json(bastion, user, "request", target, "--reason",
                                          f"INC-{target}: investigate", *extra)
    return result


def fetch_cert(bastion: BastionProcess, user: str, request_id: int, name: str = "") -> Path:
    result = control(bastion, user, "cert", str(request_id))
    assert result.returncode == 0, result.stderr
    path = bastion.world.root / "certs" / (name or f"{user}-{request_id}-cert.pub")
    path.parent.mkdir(exist_ok=True)
    path.write_text(result.stdout)
    return path


def audit(bastion: BastionProcess, **filters: str) -> list[dict[str, Any]]:
    args = [arg for k, v in filters.items() for arg in (f"--{k}", v)]
    events: list[dict[str, Any]] = control_json(bastion, "carol", "audit", *args, "--limit", "1000")
    return events


def keygen_list(cert: Path) -> str:
    return subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True,
                          check=True).stdout


def test_request_approve_certificate_and_login(bastion: BastionProcess, receiver: Receiver) -> None:
    req = request(bastion, "alice", "prod", "--duration", "30m")
    assert req["status"] == "pending" and req["user"] == "alice" and req["target"] == "prod"
    assert req["reason"] == "INC-prod: investigate" and req["expires_at"] is None
    receiver.wait_for("request.created", req["id"])

    approved = control_json(bastion, "bob", "approve", str(req["id"]), "--comment", "go ahead")
    assert approved["status"] == "approved" and approved["approvers"] == ["bob"]
    assert approved["expires_at"] is not None
    body = receiver.wait_for("request.approved", req["id"])
    assert "alice" in body["text"] and "prod" in body["text"]

    cert = fetch_cert(bastion, "alice", req["id"])
    listing = keygen_list(cert)
    assert f'Key ID: "alice/{req["id"]}"' in listing
    principals = listing.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == ["prod"]
    assert "permit-port-forwarding" not in listing
    assert "permit-agent-forwarding" not in listing
    assert "permit-X11-forwarding" not in listing
    valid = listing.split("Valid: from ")[1].split("\n")[0]
    start, end = valid.split(" to ")
    window = time.mktime(time.strptime(end, "%Y-%m-%dT%H:%M:%S")) - time.mktime(
        time.strptime(start, "%Y-%m-%dT%H:%M:%S"))
    assert 29 * 60 <= window <= 30 * 60 + 1

    login = ssh(bastion, bastion.world.key("alice"), "prod", ["echo", "hello from prod"], cert=cert)
    assert login.returncode == 0, login.stderr
    assert login.stdout == "hello from prod\n"
    assert "refused" not in login.stderr  # the plain key OpenSSH offers first is not complained about

    # The client hears the exit status first; the session's end is written to the store (and
    # the audit trail) right after.
    sessions = wait_for(lambda: [s for s in control_json(bastion, "alice", "sessions")
                                 if s["request_id"] == req["id"] and s["status"] == "ended"])
    assert sessions, control_json(bastion, "alice", "sessions")
    assert wait_for(lambda: any(e["kind"] == "session.ended"
                                for e in audit(bastion, request=str(req["id"]))))
    kinds = [e["kind"] for e in audit(bastion, request=str(req["id"]))]
    for kind in ("request.created", "review.approve", "request.approved", "certificate.issued",
                 "login.success", "session.started", "session.ended"):
        assert kind in kinds, kinds


def test_requester_cannot_approve_own_request(bastion: BastionProcess) -> None:
    req = request(bastion, "alice", "prod")
    result = control(bastion, "alice", "approve", str(req["id"]))
    assert result.returncode == 1
    assert "cannot review your own request" in result.stderr
    assert control_json(bastion, "bob", "requests", "--all")
    events = audit(bastion, request=str(req["id"]), kind="review.")
    assert [e["kind"] for e in events] == ["review.refused"]
    assert events[0]["actor"] == "alice"


def test_auditor_cannot_approve(bastion: BastionProcess) -> None:
    req = request(bastion, "alice", "prod")
    result = control(bastion, "carol", "approve", str(req["id"]))
    assert result.returncode == 1
    assert "may approve" in result.stderr and "auditor" in result.stderr
    assert control_json(bastion, "alice", "requests")[0]["status"] == "pending"


def test_role_that_does_not_allow_the_target_cannot_request_it(bastion: BastionProcess) -> None:
    result = control(bastion, "erin", "request", "critical", "--reason", "curious")
    assert result.returncode == 1
    assert "none of your roles (contractor) may request critical" in result.stderr


def test_unknown_target_and_empty_reason_are_refused_clearly(bastion: BastionProcess) -> None:
    unknown = control(bastion, "alice", "request", "nope", "--reason", "x")
    assert unknown.returncode == 1
    assert "unknown target 'nope'" in unknown.stderr and "prod" in unknown.stderr
    empty = control(bastion, "alice", "request", "prod", "--reason", "  ")
    assert empty.returncode == 2
    assert "a reason is required" in empty.stderr
    missing = control(bastion, "alice", "request", "prod")
    assert missing.returncode == 2 and "--reason" in missing.stderr
    too_long = control(bastion, "alice", "request", "prod", "--reason", "x", "--duration", "9h")
    assert too_long.returncode == 2 and "longer than your roles allow" in too_long.stderr
    bad = control(bastion, "alice", "request", "prod", "--reason", "x", "--duration", "soon")
    assert bad.returncode == 2 and "bad duration" in bad.stderr
    as_json = control(bastion, "alice", "request", "nope", "--reason", "x", "--json")
    assert json.loads(as_json.stderr)["kind"] == "NotFound"
    garbage = control(bastion, "alice", "frobnicate")
    assert garbage.returncode == 2 and "help" in garbage.stderr


def test_deny_needs_a_reason_and_is_notified(bastion: BastionProcess, receiver: Receiver) -> None:
    req = request(bastion, "alice", "prod")
    no_reason = control(bastion, "bob", "deny", str(req["id"]), "--reason", "")
    assert no_reason.returncode == 2 and "needs a reason" in no_reason.stderr
    denied = control_json(bastion, "bob", "deny", str(req["id"]), "--reason", "use staging")
    assert denied["status"] == "denied"
    assert "use staging" in receiver.wait_for("request.denied", req["id"])["text"]
    cert = control(bastion, "alice", "cert", str(req["id"]))
    assert cert.returncode == 2 and "is denied" in cert.stderr


def test_login_without_certificate_names_the_request_command(bastion: BastionProcess) -> None:
    result = ssh(bastion, bastion.world.key("dave"), "prod", ["true"])
    assert result.returncode == 255
    assert "access to prod refused" in result.stderr
    assert "access@127.0.0.1 request prod --reason" in result.stderr
    events = audit(bastion, kind="login.refused")
    assert any(e["actor"] == "dave" and e["target"] == "prod" for e in events)


def test_certificate_for_another_target_is_refused(bastion: BastionProcess) -> None:
    req = request(bastion, "alice", "staging")  # staging needs no approval
    assert req["status"] == "approved"
    cert = fetch_cert(bastion, "alice", req["id"])
    result = ssh(bastion, bastion.world.key("alice"), "critical", ["true"], cert=cert)
    assert result.returncode == 255
    assert "access to critical refused" in result.stderr
    assert "request critical" in result.stderr
    ok = ssh(bastion, bastion.world.key("alice"), "staging", ["true"], cert=cert)
    assert ok.returncode == 0, ok.stderr


def test_expired_certificate_is_refused(bastion: BastionProcess) -> None:
    req = request(bastion, "alice", "staging", "--duration", "2s")
    cert = fetch_cert(bastion, "alice", req["id"], "short-cert.pub")
    time.sleep(2.5)
    result = ssh(bastion, bastion.world.key("alice"), "staging", ["true"], cert=cert)
    assert result.returncode == 255
    assert "expired" in result.stderr and "request staging" in result.stderr


def test_revoked_request_refuses_login(bastion: BastionProcess, receiver: Receiver) -> None:
    req = request(bastion, "alice", "prod")
    control_json(bastion, "bob", "approve", str(req["id"]))
    cert = fetch_cert(bastion, "alice", req["id"])
    assert ssh(bastion, bastion.world.key("alice"), "prod", ["true"], cert=cert).returncode == 0
    revoked = control_json(bastion, "alice", "revoke", str(req["id"]), "--reason", "done early")
    assert revoked["status"] == "revoked"
    receiver.wait_for("request.revoked", req["id"])
    result = ssh(bastion, bastion.world.key("alice"), "prod", ["true"], cert=cert)
    assert result.returncode == 255
    assert f"request {req['id']} for prod was revoked" in result.stderr
    again = control(bastion, "alice", "revoke", str(req["id"]))
    assert again.returncode == 2 and "already revoked" in again.stderr
    kinds = [e["kind"] for e in audit(bastion, request=str(req["id"]))]
    assert "request.revoked" in kinds


def test_certificate_from_another_ca_is_refused(bastion: BastionProcess, tmp_path: Path) -> None:
    rogue = tmp_path / "rogue_ca"
    make_key(rogue)
    mallory = tmp_path / "mallory"
    make_key(mallory)
    subprocess.run(["ssh-keygen", "-q", "-s", str(rogue), "-I", "mallory/1", "-n", "prod",
                    "-V", "-5m:+1h", "-z", "7", f"{mallory}.pub"], check=True)
    cert = Path(f"{mallory}-cert.pub")
    result = ssh(bastion, mallory, "prod", ["true"], cert=cert)
    assert result.returncode == 255
    assert "not signed by this bastion's user CA" in result.stderr
    # The same with a registered user's own key, signed by the rogue CA.
    alice_copy = tmp_path / "alice"
    alice_copy.write_bytes(bastion.world.key("alice").read_bytes())
    alice_copy.chmod(0o600)
    Path(f"{alice_copy}.pub").write_text(Path(f"{bastion.world.key('alice')}.pub").read_text())
    subprocess.run(["ssh-keygen", "-q", "-s", str(rogue), "-I", "alice/1", "-n", "prod",
                    "-V", "-5m:+1h", f"{alice_copy}.pub"], check=True)
    result = ssh(bastion, alice_copy, "prod", ["true"], cert=Path(f"{alice_copy}-cert.pub"))
    assert result.returncode == 255 and "access to prod refused" in result.stderr
    events = audit(bastion, kind="login.refused")
    assert any("not signed by this bastion's user CA" in e["details"]["reason"] for e in events)


def test_right_certificate_with_the_wrong_key_is_refused(bastion: BastionProcess) -> None:
    req = request(bastion, "alice", "staging")
    cert = fetch_cert(bastion, "alice", req["id"], "stolen-cert.pub")
    result = ssh(bastion, bastion.world.key("dave"), "staging", ["true"], cert=cert)
    assert result.returncode == 255
    assert "access to staging refused" in result.stderr
    assert "not made with the key it was issued for" in result.stderr
    assert "request staging --reason" in result.stderr


def test_two_approvals_need_two_distinct_approvers(bastion: BastionProcess) -> None:
    req = request(bastion, "alice", "critical")
    assert req["approvals_required"] == 2
    first = control_json(bastion, "bob", "approve", str(req["id"]))
    assert first["status"] == "pending" and first["approvers"] == ["bob"]
    twice = control_json(bastion, "bob", "approve", str(req["id"]))
    assert twice["status"] == "pending" and twice["approvers"] == ["bob"]
    early = control(bastion, "alice", "cert", str(req["id"]))
    assert early.returncode == 2 and "pending" in early.stderr
    final = control_json(bastion, "dave", "approve", str(req["id"]))
    assert final["status"] == "approved" and final["approvers"] == ["bob", "dave"]
    cert = fetch_cert(bastion, "alice", req["id"])
    login = ssh(bastion, bastion.world.key("alice"), "critical", ["true"], cert=cert)
    assert login.returncode == 0, login.stderr
    approvals = [e for e in audit(bastion, request=str(req["id"]), kind="review.approve")]
    assert sorted(e["actor"] for e in approvals) == ["bob", "dave"]


def test_developer_sees_only_own_requests_auditor_sees_all(bastion: BastionProcess) -> None:
    request(bastion, "erin", "prod")
    alice_view = control_json(bastion, "alice", "requests", "--all")
    assert alice_view and all(r["user"] == "alice" for r in alice_view)
    carol_view = control_json(bastion, "carol", "requests", "--all")
    assert {"alice", "erin"} <= {r["user"] for r in carol_view}
    denied = control(bastion, "alice", "audit")
    assert denied.returncode == 1 and "for auditors" in denied.stderr
    who = control_json(bastion, "erin", "whoami")
    assert who["user"] == "erin" and who["roles"] == ["contractor"] and who["key"].startswith("SHA256:")
    targets = control_json(bastion, "erin", "targets")
    assert [t["name"] for t in targets] == ["prod"]


def test_unregistered_key_cannot_use_the_control_plane(bastion: BastionProcess, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    make_key(stranger)
    result = ssh(bastion, stranger, "access", ["requests"])
    assert result.returncode == 255
    assert "not registered" in result.stderr


def test_audit_trail_is_also_a_json_lines_file(bastion: BastionProcess) -> None:
    lines = (bastion.world.root / "data" / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert {"request.created", "request.approved", "certificate.issued", "login.refused"} <= {
        e["kind"] for e in events}
    assert all(e["at"] and e["id"] for e in events)


def test_dead_webhook_does_not_slow_the_workflow(bastion: BastionProcess, receiver: Receiver,
                                                dead: Blackhole) -> None:
    # A blackhole webhook (accepts, never answers, 30 s timeout) is configured next to the live
    # receiver: every command still completes and the live receiver still gets every event.
    # Were any command to wait for the dead webhook, five of them would take at least one 30 s
    # attempt timeout; the bound below is half of one such timeout, not a speed measurement.
    started = time.monotonic()
    ids = [request(bastion, "alice", "prod")["id"] for _ in range(5)]
    approved = control_json(bastion, "bob", "approve", str(ids[0]))
    assert approved["status"] == "approved"
    assert time.monotonic() - started < 15
    for request_id in ids:
        receiver.wait_for("request.created", request_id)
    receiver.wait_for("request.approved", ids[0])
    deadline = time.monotonic() + 10
    while dead.connections() == 0:  # the dead webhook was really tried
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_every_read_command_answers_json(bastion: BastionProcess) -> None:
    for user, command in [("alice", "help"), ("alice", "targets"), ("alice", "whoami"),
                          ("alice", "requests"), ("alice", "sessions"), ("carol", "audit"),
                          ("carol", "queries")]:
        result = control(bastion, user, command, "--json")
        assert result.returncode == 0, (command, result.stderr)
        json.loads(result.stdout)
    refused = control(bastion, "alice", "approve", "999999", "--json")
    assert refused.returncode != 0 and json.loads(refused.stderr)["kind"] == "NotFound"
