"""Login to first command output through the bastion vs a plain OpenSSH login, and certificate
issuance time, measured in one run with the stock OpenSSH client.

    .venv/bin/python bench/bench_login.py [--runs 30] [--root]

Both logins end on the same OpenSSH sshd (the target, trusting the bastion's upstream CA) and run
`true` there: the bastion path is `ssh prod@bastion true` with the user's certificate (every access
check, a session record, a recording, a fresh upstream certificate, the upstream login); the
direct path is `ssh LOGIN@sshd true` with a plain public key. Runs alternate between the two paths.

LOGIN is a throwaway user whose shell is /bin/sh with an empty home (no rc files; created when run
as root with `useradd`, removed at the end), so the figure is not dominated by shell start-up;
`--root` uses root instead (root's rc files cost ~150 ms per login on these machines, on both
paths alike).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_shell import Login, drop_login, make_login, stop_all
from harness import BastionProcess, World, control, control_json, free_port, make_key
from sshd import Sshd

from bastion.ca import CertificateAuthority

Run = Callable[[], subprocess.CompletedProcess[str]]


def timed(fns: dict[str, Run], runs: int) -> dict[str, list[float]]:
    """Run each of `fns` `runs` times, alternating (after one warm-up each); wall times in ms."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            result = fn()
            times[name].append((time.perf_counter() - start) * 1000)
            if result.returncode != 0:
                raise SystemExit(f"{name} failed: {result.stderr}")
    return times


def describe(name: str, times: list[float]) -> str:
    q = statistics.quantiles(times, n=10)
    return f"{name:<52} p50 {statistics.median(times):7.1f} ms   p90 {q[8]:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--root", action="store_true", help="log into the target as root")
    args = parser.parse_args()
    login = Login("root", Path(tempfile.mkdtemp()), False, "root (rc files included)") \
        if args.root else make_login()
    procs: list[Any] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stops:
            # Stopped before the directory goes: the bastion writes into it until it stops.
            stops.callback(stop_all, procs)
            root = Path(tmp)
            root.chmod(0o711)  # sshd reads the authorized_keys file as the target login
            world = World(root=root / "bastion", port=free_port(),
                          users={"alice": ["developer"], "bob": ["approver"], "dave": ["approver"]})
            alice = world.key("alice")
            alice_pub = make_key(alice, "alice@test")
            upstream_ca = CertificateAuthority.load(world.root / "data" / "upstream_ca",
                                                    "upstream CA")
            sshd = Sshd(root / "sshd", trusted_ca=upstream_ca.public_key_line(),
                        authorized_keys=(alice_pub,))
            sshd.start()
            procs.append(sshd)
            world.target = sshd
            config = world.write_config()
            config.write_text(config.read_text().replace('login = "root"',
                                                         f'login = "{login.name}"'))
            bastion = BastionProcess(world)
            bastion.start()
            procs.append(bastion)
            req = control_json(bastion, "alice", "request", "prod", "--reason", "bench")
            control_json(bastion, "bob", "approve", str(req["id"]))
            cert = root / "alice-cert.pub"
            cert.write_text(control(bastion, "alice", "cert", str(req["id"])).stdout)
            base = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                    "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-i", str(alice)]

            def direct() -> subprocess.CompletedProcess[str]:
                return subprocess.run([*base, "-p", str(sshd.port), f"{login.name}@127.0.0.1",
                                       "true"], capture_output=True, text=True)

            def through() -> subprocess.CompletedProcess[str]:
                return subprocess.run([*base, "-o", f"CertificateFile={cert}", "-p",
                                       str(world.port), "prod@127.0.0.1", "true"],
                                      capture_output=True, text=True)

            def whoami() -> subprocess.CompletedProcess[str]:
                return control(bastion, "alice", "whoami")

            def issue() -> subprocess.CompletedProcess[str]:
                return control(bastion, "alice", "cert", str(req["id"]))

            logins = timed({"direct": direct, "through": through}, args.runs)
            controls = timed({"whoami": whoami, "cert": issue}, args.runs)
    finally:
        drop_login(login)
    print(f"target login: {login.note}; {args.runs} runs per path, alternating")
    print(describe(f"direct OpenSSH login as {login.name} + `true`", logins["direct"]))
    print(describe("bastion login with certificate + checks + upstream", logins["through"]))
    ratio = statistics.median(logins["through"]) / statistics.median(logins["direct"])
    print(f"ratio bastion/direct (p50): {ratio:.2f}x   (goal <= 1.0x)")
    print(describe("control command `whoami`", controls["whoami"]))
    print(describe("control command `cert` (sign + store)", controls["cert"]))
    print(f"certificate issuance cost over a control round trip (p50): "
          f"{statistics.median(controls['cert']) - statistics.median(controls['whoami']):.1f} ms")


if __name__ == "__main__":
    main()
