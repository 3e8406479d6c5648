"""`bastion demo`: starts from nothing and the printed walkthrough works with plain OpenSSH."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import REPO


def demo_ssh(
    manifest: dict[str, Any], user: str, login: str, *command: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(manifest["port"]), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={manifest['known_hosts']}", "-o", "StrictHostKeyChecking=yes",
         "-o", "IdentitiesOnly=yes", "-i", manifest["users"][user]["key"], f"{login}@{manifest['host']}",
         *command],
        capture_output=True, text=True, timeout=30,
    )


def test_demo_walkthrough(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "bastion.cli", "demo", "--dir", str(directory),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=REPO, text=True)
    try:
        manifest_path = directory / "demo.json"
        deadline = time.monotonic() + 30
        while not manifest_path.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "demo did not start"
            time.sleep(0.1)
        manifest = json.loads(manifest_path.read_text())
        assert manifest["targets"][0] == "demo-shell"
        assert set(manifest["users"]) == {"alice", "bob", "carol"}
        assert Path(manifest["auditor_key"]).exists() and Path(manifest["config"]).exists()
        check = subprocess.run([sys.executable, "-m", "bastion.cli", "check-config", manifest["config"]],
                               capture_output=True, text=True, cwd=REPO)
        assert check.returncode == 0, check.stderr

        req = demo_ssh(manifest, "alice", "access", "request", "demo-shell", "--reason",
                       "INC-42: look at logs", "--json")
        assert req.returncode == 0, req.stderr
        request_id = json.loads(req.stdout)["id"]
        own = demo_ssh(manifest, "alice", "access", "approve", str(request_id))
        assert own.returncode == 1 and "your own request" in own.stderr
        ok = demo_ssh(manifest, "bob", "access", "approve", str(request_id), "--comment", "ok")
        assert ok.returncode == 0, ok.stderr
        cert = demo_ssh(manifest, "alice", "access", "cert")
        assert cert.returncode == 0, cert.stderr
        Path(manifest["users"]["alice"]["key"] + "-cert.pub").write_text(cert.stdout)
        login = demo_ssh(manifest, "alice", "demo-shell", "echo", "hello-from-demo")
        assert login.returncode == 0, login.stderr
        assert login.stdout == "hello-from-demo\n"
        # Without a PTY, stderr and the exit status come through every time (issue 11).
        for _ in range(50):
            run = demo_ssh(manifest, "alice", "demo-shell", "echo out; echo err >&2; exit 3")
            assert (run.stdout, run.stderr, run.returncode) == ("out\n", "err\n", 3), run
        # CI has PostgreSQL and MariaDB running, so the demo adds its database targets.
        assert {"demo-pg", "demo-mysql"} <= set(manifest["targets"])
        for db in ("demo-pg", "demo-mysql"):
            req = demo_ssh(manifest, "alice", "access", "request", db, "--reason", "INC-7", "--json")
            assert req.returncode == 0, req.stderr
            ok = demo_ssh(manifest, "bob", "access", "approve", str(json.loads(req.stdout)["id"]))
            assert ok.returncode == 0, ok.stderr
            cert = demo_ssh(manifest, "alice", "access", "cert", str(json.loads(req.stdout)["id"]))
            Path(manifest["users"]["alice"]["key"] + "-cert.pub").write_text(cert.stdout)
            rows = demo_ssh(manifest, "alice", db,
                            "SELECT name, ssn, card_number FROM customers WHERE id = 1")
            assert rows.returncode == 0, rows.stderr
            assert "Ada Lovelace" in rows.stdout and "*****6789" in rows.stdout
            assert "123-45-6789" not in rows.stdout and "4111111111111111" not in rows.stdout
        trail = demo_ssh(manifest, "carol", "access", "audit", "--json")
        kinds = {e["kind"] for e in json.loads(trail.stdout)}
        assert {"request.created", "request.approved", "certificate.issued", "login.success"} <= kinds
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "stopping the demo" in out and "Traceback" not in out


def test_printed_walkthrough_works_verbatim(tmp_path: Path) -> None:
    """The shell-target commands the demo prints, pasted as they are, walk the whole workflow."""
    directory = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "bastion.cli", "demo", "--dir", str(directory),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=REPO, text=True)
    assert proc.stdout is not None
    try:
        printed: list[str] = []
        deadline = time.monotonic() + 30
        while not any(line.startswith("Machine-readable") for line in printed):
            assert time.monotonic() < deadline and proc.poll() is None, printed
            printed.append(proc.stdout.readline())
        commands = [line.strip() for line in printed if line.startswith("   ")]
        assert len(commands) == 9, commands

        def run(command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, text=True,
                                  timeout=30)

        request, listing, approve, cert, show, login, fetch, audit, sessions = commands
        assert run(request).returncode == 0
        assert "INC-42: look at logs" in run(listing).stdout
        assert run(approve).returncode == 0
        assert run(cert).returncode == 0
        assert 'Key ID: "alice/1"' in run(show).stdout
        # Step 4 is an interactive shell: give it a terminal (script(1)) and type into it.
        assert "walked-42" in type_into(f"script -q -e -c {shlex.quote(login)} /dev/null",
                                        "echo walked-$((6*7))\n", "walked-42")
        fetched = run(fetch)
        assert fetched.returncode == 0, fetched.stderr
        log_file = (directory / "app.log").read_bytes()
        assert log_file == (directory / "demo-shell" / "files" / "app.log").read_bytes()
        kinds = run(audit).stdout
        assert "request.approved" in kinds and "login.success" in kinds
        assert "transfer.download" in kinds and hashlib.sha256(log_file).hexdigest() in kinds
        assert "demo-shell" in run(sessions).stdout
        # The SQL part of the walkthrough (CI has PostgreSQL), pasted as printed too.
        while not any("access@127.0.0.1 queries" in line for line in printed):
            assert time.monotonic() < deadline + 30 and proc.poll() is None, printed
            printed.append(proc.stdout.readline())
        sql = [line.strip() for line in printed[printed.index(next(
            line for line in printed if line.startswith("SQL targets"))):] if line.startswith("   ")]
        request, approve, cert, _console, select, csv, queries = sql
        for command in (request, approve, cert):
            assert run(command).returncode == 0, command
        rows = run(select)
        assert rows.returncode == 0 and "Ada Lovelace" in rows.stdout and "*****6789" in rows.stdout
        assert "123-45-6789" not in rows.stdout
        as_csv = run(csv)
        assert as_csv.returncode == 0, as_csv.stderr
        assert as_csv.stdout.splitlines()[:2] == ["name,ssn", "Ada Lovelace,*****6789"]
        assert "SELECT name, ssn FROM customers" in run(queries).stdout
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out


def type_into(command: str, typed: str, expected: str, timeout: float = 30) -> str:
    """Run an interactive command, type once it has printed something, return what it showed."""
    shell = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    assert shell.stdin is not None and shell.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while expected.encode() not in seen:
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([shell.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(shell.stdout.fileno(), 4096)
                assert chunk, seen
                if not seen:  # the remote shell is up: type
                    shell.stdin.write(typed.encode())
                    shell.stdin.flush()
                seen += chunk
        shell.stdin.write(b"exit\n")
        shell.stdin.flush()
        assert shell.wait(timeout=15) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        shell.stdin.close()
        shell.stdout.close()
    return seen.decode(errors="replace")


def test_demo_on_a_taken_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "bastion.cli", "demo", "--dir",
                                 str(tmp_path / "demo"), "--port", str(port)],
                                capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert str(port) in result.stderr and "in use" in result.stderr, result.stderr
