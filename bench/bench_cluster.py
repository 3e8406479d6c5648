"""Several bastions as one, through a real HAProxy: logins per second and concurrent sessions with
1, 2 and 3 nodes, and the time from a revoke to the end of sessions on the other nodes.

    .venv/bin/python bench/bench_cluster.py [--nodes 1,2,3] [--seconds 15] [--workers 6]
                                            [--sessions 90] [--revokes 10]

Every node, HAProxy, PostgreSQL, the target sshd and the clients share this machine's cores, so
more nodes cannot add CPU: the figures show what the cluster costs (heartbeats, notifications,
landing recordings), not how it scales on separate machines.

- logins/s: `workers` stock `ssh prod@HAProxy true` clients in a loop for `seconds` (each one a
  full session: certificate checks, session record, recording, upstream login to sshd, landing).
- concurrent sessions: `sessions` idle shells opened through HAProxy at once with asyncssh (spread
  over users, since a node holds at most 32 live sessions per user); time until all are live and
  the nodes' summed RSS.
- revoke to end: one session on each node, a revoke sent straight to node1 (not through HAProxy),
  and the time to each session's end on the other nodes (the client's exit), counted from the
  start of the revoke command (its own ssh login included) and from its return.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncssh
from cluster_harness import Cluster, running_cluster
from harness import BastionProcess, control, control_json, ssh, ssh_argv

CROWD = 6  # users the concurrent sessions are spread over


def grant(front: BastionProcess, user: str) -> Path:
    req = control_json(front, user, "request", "prod", "--reason", "bench")
    control_json(front, "bob", "approve", str(req["id"]))
    cert = front.world.root / f"{user}-{req['id']}-cert.pub"
    result = control(front, user, "cert", str(req["id"]))
    assert result.returncode == 0, result.stderr
    cert.write_text(result.stdout)
    return cert


def logins_per_second(cluster: Cluster, cert: Path, seconds: float, workers: int) -> float:
    front = cluster.front
    # Built once: ssh_argv rewrites the known_hosts file, which threads must not do at once.
    argv = [*ssh_argv(front, front.world.key("alice"), "prod", cert=cert), "true"]
    done, failed = [0], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < deadline:
            ok = subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
            with lock:
                done[0] += ok
                failed[0] += not ok

    started = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed[0]:
        print(f"  {failed[0]} logins failed", flush=True)
    return done[0] / (time.monotonic() - started)


def rss_kib(cluster: Cluster) -> int:
    total = 0
    for node in cluster.nodes:
        assert node.proc is not None
        for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


async def concurrent_sessions(cluster: Cluster, certs: dict[str, Path], count: int
                              ) -> tuple[float, int, int]:
    """(seconds until `count` idle shells are live, how many opened, summed node RSS in KiB)."""
    world = cluster.front.world
    keys = [(asyncssh.read_private_key(str(world.key(u))), asyncssh.read_certificate(str(c)))
            for u, c in certs.items()]
    gate = asyncio.Semaphore(16)
    live: list[asyncssh.SSHClientConnection] = []

    async def one(i: int) -> None:
        async with gate:
            conn = await asyncssh.connect("127.0.0.1", world.port, username="prod",
                                          client_keys=[keys[i % len(keys)]], known_hosts=None,
                                          agent_path=None, config=None)
            live.append(conn)
            proc = await conn.create_process("echo ready; sleep 600", encoding=None)
            await asyncio.wait_for(proc.stdout.readline(), 60)

    started = time.monotonic()
    outcomes = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    seconds = time.monotonic() - started
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if errors:
        print(f"  {len(errors)} sessions failed, e.g. {errors[0]!r}", flush=True)
    await asyncio.sleep(1)
    rss = rss_kib(cluster)
    for conn in live:
        conn.close()
    await asyncio.gather(*(c.wait_closed() for c in live), return_exceptions=True)
    return seconds, count - len(errors), rss


def revoke_to_end(cluster: Cluster, rounds: int) -> tuple[list[float], list[float]]:
    """Milliseconds to the end of sessions on the other nodes, from the start of a revoke on
    node1 (its ssh login included) and from the revoke command's return."""
    front = cluster.front
    first = BastionProcess(replace(front.world, port=cluster.nodes[0].port))
    from_start: list[float] = []
    from_return: list[float] = []
    for _ in range(rounds):
        req = control_json(front, "alice", "request", "prod", "--reason", "bench revoke")
        control_json(front, "bob", "approve", str(req["id"]))
        cert = front.world.root / f"revoke-{req['id']}-cert.pub"
        cert.write_text(control(front, "alice", "cert", str(req["id"])).stdout)
        lives = []
        for i in range(len(cluster.nodes)):
            live = subprocess.Popen(
                [*ssh_argv(front, front.world.key("alice"), "prod", cert=cert),
                 f"echo r{i}; sleep 60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert live.stdout is not None and live.stdout.readline() == f"r{i}\n"
            lives.append(live)
        sessions = control_json(front, "carol", "sessions", "--live", "--limit", "100")
        elsewhere = {s["id"] for s in sessions
                     if s["request_id"] == req["id"] and s["bastion_id"] != "node1"}
        ended: list[float] = []

        waiters = [threading.Thread(target=_wait_into, args=(live, ended)) for live in lives]
        for w in waiters:
            w.start()
        start = time.perf_counter()
        revoked = ssh(first, front.world.key("bob"), "access", ["revoke", str(req["id"])])
        at = time.perf_counter()
        assert revoked.returncode == 0, revoked.stderr
        for w in waiters:
            w.join(30)
        # The last sessions to end are counted as the cross-node ones (node1's own ends first).
        last = sorted(ended)[-len(elsewhere):] if elsewhere else []
        from_start += [(t - start) * 1000 for t in last]
        from_return += [(t - at) * 1000 for t in last]
    return from_start, from_return


def _wait_into(live: subprocess.Popen[str], ended: list[float]) -> None:
    live.communicate()
    ended.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--sessions", type=int, default=90)
    parser.add_argument("--revokes", type=int, default=10)
    args = parser.parse_args()
    users = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]}
    users.update({f"load{n}": ["developer"] for n in range(CROWD)})
    rows = []
    for count in (int(n) for n in args.nodes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, \
                running_cluster(Path(tmp), users, count, heartbeat="1s", node_timeout="3s",
                                recheck="5s") as cluster:
            print(f"{count} node(s):", flush=True)
            cert = grant(cluster.front, "alice")
            rate = logins_per_second(cluster, cert, args.seconds, args.workers)
            print(f"  logins/s through HAProxy: {rate:.1f}", flush=True)
            certs = {f"load{n}": grant(cluster.front, f"load{n}") for n in range(CROWD)}
            seconds, opened, rss = asyncio.run(concurrent_sessions(cluster, certs, args.sessions))
            print(f"  {opened} concurrent sessions live in {seconds:.1f} s; nodes' RSS "
                  f"{rss / 1024:.0f} MiB in all", flush=True)
            revokes, after = revoke_to_end(cluster, args.revokes) if count > 1 else ([], [])
            if revokes:
                print(f"  revoke on node1 to session end on another node: median "
                      f"{statistics.median(revokes):.0f} ms, max {max(revokes):.0f} ms from the "
                      f"revoke's start; {statistics.median(after):.0f} / {max(after):.0f} ms "
                      f"after the command returned ({len(revokes)} sessions)", flush=True)
            rows.append((count, rate, opened, seconds, rss, revokes))
    print("\n| nodes | logins/s | concurrent sessions (time to open) | nodes' RSS | "
          "revoke start → end elsewhere, median · max |")
    print("|---|---|---|---|---|")
    for count, rate, opened, seconds, rss, revokes in rows:
        revoke = (f"{statistics.median(revokes):.0f} ms · {max(revokes):.0f} ms"
                  if revokes else "—")
        print(f"| {count} | {rate:.1f} | {opened} ({seconds:.1f} s) | {rss / 1024:.0f} MiB | "
              f"{revoke} |")


if __name__ == "__main__":
    main()
