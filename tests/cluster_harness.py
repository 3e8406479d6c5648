"""Several `bastion serve` nodes on one PostgreSQL behind a real HAProxy (tests and bench/)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from conftest import PG_ADMIN_URL, _pg_url_for
from harness import REPO, BastionProcess, World, free_port, ssh, start_target, stop_process, wait_for

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@dataclass
class Node:
    """One `bastion serve` of the cluster, with its own config file, log and local recordings."""

    bastion_id: str
    port: int
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bastion.cli", "serve", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_listening(self) -> None:
        started = wait_for(lambda: self.proc is not None and (
            self.proc.poll() is not None or "bastion listening on" in self.log.read_text()), 30)
        assert started and self.proc is not None and self.proc.poll() is None, self.log.read_text()

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class Cluster:
    """The nodes, and `front`: ssh helpers aimed at HAProxy (its port is the world's)."""

    front: BastionProcess  # never started itself: its port is HAProxy's, its keys the nodes'
    nodes: list[Node]
    shared: Path


def haproxy_config(front_port: int, nodes: list[Node]) -> str:
    """TCP mode, round robin, health checks; a refused connection is sent to another node."""
    servers = "\n".join(f"  server {n.bastion_id} 127.0.0.1:{n.port} check inter 500ms fall 2 rise 1"
                        for n in nodes)
    return f"""
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  retries 2
  option redispatch
frontend ssh
  bind 127.0.0.1:{front_port}
  default_backend bastions
backend bastions
  balance roundrobin
{servers}
"""


@contextlib.contextmanager
def running_cluster(root: Path, users: dict[str, list[str]], count: int, *, heartbeat: str = "1s",
                    node_timeout: str = "3s", recheck: str = "30s") -> Iterator[Cluster]:
    """`count` nodes on a fresh PostgreSQL database, the same config but for listen address,
    bastion_id, audit log and local recordings dir, and HAProxy in front; all gone afterwards."""
    name = f"bastion_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    shared = root / "shared-recordings"
    world = World(root=root, port=free_port(), users=dict(users), store_url=_pg_url_for(name))
    world.extra = f"""
[cluster]
recordings_store = "{shared}"
heartbeat_interval = "{heartbeat}"
node_timeout = "{node_timeout}"
recheck_interval = "{recheck}"
"""
    target = start_target(world)
    nodes: list[Node] = []
    haproxy: subprocess.Popen[bytes] | None = None
    try:
        template = world.write_config().read_text()
        for i in range(1, count + 1):
            node_dir = root / f"node{i}"
            node_dir.mkdir()
            node = Node(f"node{i}", free_port(), node_dir / "bastion.toml", node_dir / "bastion.log")
            node.config.write_text(
                template.replace(f'listen = "127.0.0.1:{world.port}"',
                                 f'listen = "127.0.0.1:{node.port}"')
                .replace('bastion_id = "test"',
                         f'bastion_id = "node{i}"\naudit_log = "{node_dir}/audit.jsonl"')
                .replace(f'dir = "{root / "recordings"}"', f'dir = "{node_dir / "recordings"}"'))
            nodes.append(node)
        nodes[0].start()  # the first one creates the schema and the keys the others share
        nodes[0].wait_listening()
        for node in nodes[1:]:
            node.start()
        for node in nodes[1:]:
            node.wait_listening()
        haproxy_cfg = root / "haproxy.cfg"
        haproxy_cfg.write_text(haproxy_config(world.port, nodes))
        with (root / "haproxy.log").open("wb") as haproxy_log:
            haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(haproxy_cfg)],
                                       stdout=subprocess.DEVNULL, stderr=haproxy_log)
        front = BastionProcess(world)
        reached = wait_for(lambda: haproxy.poll() is not None or ssh(
            front, world.key("carol"), "access", ["whoami"]).returncode == 0)
        assert reached and haproxy.poll() is None, (root / "haproxy.log").read_text()
        yield Cluster(front, nodes, shared)
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(timeout=10)
        for node in nodes:
            node.stop()
        target.stop()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
