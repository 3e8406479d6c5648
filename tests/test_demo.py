"""`bastion demo`: starts from nothing and the printed walkthrough works with plain OpenSSH."""

from __future__ import annotations

import json
import signal
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
        trail = demo_ssh(manifest, "carol", "access", "audit", "--json")
        kinds = {e["kind"] for e in json.loads(trail.stdout)}
        assert {"request.created", "request.approved", "certificate.issued", "login.success"} <= kinds
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "stopping the demo" in out and "Traceback" not in out
