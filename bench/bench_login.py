"""Login to first command output through the bastion vs a plain OpenSSH login, and certificate
issuance time, measured in one run with the stock OpenSSH client.

    .venv/bin/python bench/bench_login.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import BastionProcess, World, control, control_json, free_port
from sshd import Sshd


def timed(fn: Callable[[], subprocess.CompletedProcess[str]], runs: int) -> list[float]:
    """Run `fn` `runs` times (after one warm-up); return wall times in ms."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
        if result.returncode != 0:
            raise SystemExit(f"command failed: {result.stderr}")
    return times


def describe(name: str, times: list[float]) -> str:
    q = statistics.quantiles(times, n=10)
    return f"{name:<44} p50 {statistics.median(times):7.1f} ms   p90 {q[8]:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = World(root=root / "bastion", port=free_port(),
                      users={"alice": ["developer"], "bob": ["approver"], "dave": ["approver"]})
        world.write_config()
        bastion = BastionProcess(world)
        bastion.start()
        alice = world.key("alice")
        sshd = Sshd(root / "sshd", authorized_keys=(Path(f"{alice}.pub").read_text().strip(),))
        sshd.start()
        try:
            req = control_json(bastion, "alice", "request", "prod", "--reason", "bench")
            control_json(bastion, "bob", "approve", str(req["id"]))
            cert = root / "alice-cert.pub"
            cert.write_text(control(bastion, "alice", "cert", str(req["id"])).stdout)
            base = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "LogLevel=ERROR", "-i", str(alice)]

            def direct() -> subprocess.CompletedProcess[str]:
                return subprocess.run([*base, "-p", str(sshd.port), "root@127.0.0.1", "true"],
                                      capture_output=True, text=True)

            def through() -> subprocess.CompletedProcess[str]:
                return subprocess.run([*base, "-o", f"CertificateFile={cert}", "-p",
                                       str(world.port), "prod@127.0.0.1", "true"],
                                      capture_output=True, text=True)

            def whoami() -> subprocess.CompletedProcess[str]:
                return control(bastion, "alice", "whoami")

            def issue() -> subprocess.CompletedProcess[str]:
                return control(bastion, "alice", "cert", str(req["id"]))

            t_direct = timed(direct, args.runs)
            t_through = timed(through, args.runs)
            t_whoami = timed(whoami, args.runs)
            t_issue = timed(issue, args.runs)
        finally:
            sshd.stop()
            bastion.stop()
    print(describe("direct OpenSSH login + `true` (sshd 9.2)", t_direct))
    print(describe("bastion login with certificate + checks", t_through))
    print(f"ratio bastion/direct (p50): {statistics.median(t_through) / statistics.median(t_direct):.2f}x"
          "   (goal <= 1.0x)")
    print(describe("control command `whoami`", t_whoami))
    print(describe("control command `cert` (sign + store)", t_issue))
    print(f"certificate issuance cost over a control round trip (p50): "
          f"{statistics.median(t_issue) - statistics.median(t_whoami):.1f} ms")


if __name__ == "__main__":
    main()
