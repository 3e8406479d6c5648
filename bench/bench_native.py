"""Native database clients through the bastion (`ssh -N -L`) against their baselines, in one run.

    .venv/bin/python bench/bench_native.py [--seconds 20] [--bulk-runs 3] [--rows 1000000]
                                           [--scale 10] [--only pgbench,bulk,mysql]
                                           [--profile DIR]

About 7 minutes with the defaults on a 2-core machine (10 pgbench runs and 4 point-select runs
of SECONDS each are 280 s of it; `--seconds 10` makes it about 5 minutes). Needs the test
databases (PostgreSQL 127.0.0.1:5432 as postgres, MariaDB 127.0.0.1:3306 as root), OpenSSH's sshd
and client, pgbench, psql and Debian's pgbouncer (unless `--paths` leaves it out). Throwaway
databases (tests/sqldb.py, plus one `pgbench -i` database), a throwaway sshd (tests/sshd.py) and a
pgbouncer are made here and removed at the end.
Nothing is asserted; ratios are printed against the issue's budgets:

1. pgbench: `pgbench -n -S -M simple|prepared -c 4 -j 2 -T SECONDS` on a `pgbench -i -s SCALE`
   database, "tps (without initial connection time)", through five paths: direct to 127.0.0.1:5432;
   pgbouncer (session pooling, trust, the Debian package); a plain OpenSSH tunnel (`ssh -N -L` to
   the throwaway sshd, default ciphers, no inspection); an asyncssh forwarder (asyncssh's own
   `ssh -L` forwarding with the bastion's SSH transport, in a child process, inspecting and
   recording nothing: what a Python SSH hop costs by itself); the bastion (`ssh -N -L PORT:pgbench:5432
   pgbench@bastion` with an approved certificate; the target has no masking rules, so the grant's
   account reads the tables themselves). Runs are interleaved (both modes, each path in turn).
   Budget: bastion >= 0.5x the OpenSSH tunnel (moonshot: at par). Also the CPU seconds per 1000
   transactions of the bastion process, the tunnel's sshd processes and pgbouncer (/proc); the
   bastion's are counted until it is idle again, since it writes each statement to the query log
   and the recording after relaying it (and may still be at it when pgbench has finished).
2. A `--rows` result with 3 masked columns (table `big` of bench/bench_sql.py; email hash, ssn
   partial, card_number redact, computed by the database's masked views): `psql -X --csv -c
   "SELECT ... FROM big" > /dev/null` through the bastion tunnel against the same query direct as
   postgres (unmasked), wall time of the psql process (connection included), median of
   `--bulk-runs` interleaved runs. Budget: direct / bastion >= 0.5x. A few rows are checked masked,
   and the query log must show every row sent. `psql -c "SELECT 1"` on both paths tells what the
   connection and the session's start cost apart from the result.
3. MariaDB with PyMySQL: (a) point selects, 4 threads each looping `SELECT id, name FROM big WHERE
   id = %s` (random ids, own connection per thread) for SECONDS, direct (root), through the
   OpenSSH tunnel (root, on the table; and root on the masked view, `<db>_masked` as the default
   database, so that the database does the same work as for the bastion's session and the ratio
   against it is the relay's share) and through the bastion (masked target: the grant reads the
   masked view);
   (b) the `--rows` masked result with an unbuffered cursor (SSCursor, rows iterated and
   dropped), bastion against direct (root, unmasked), connect + query + fetch, median of
   `--bulk-runs` interleaved runs. PyMySQL is pure Python: the 4 client threads share one GIL.

With `--profile DIR`, after the measurements (so that they are not slowed), py-spy records the
bastion (100 Hz, on-CPU samples) during an extra pgbench prepared run through it and during one
extra big-result fetch on each engine; the raw (collapsed) stacks are kept in DIR and printed
are: the samples by what they were doing (SSH, relay, query log, recording, grant sweep...), the
top functions by self time, and the bastion's own functions by inclusive time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import asyncssh  # noqa: E402
import psycopg  # noqa: E402
import pymysql  # noqa: E402
import pymysql.cursors  # noqa: E402
from asyncssh_peer import LoopbackForwarder, PeerProcess  # noqa: E402
from bench_sql import BIG, cpu_seconds, create_big  # noqa: E402
from harness import (  # noqa: E402
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    make_key,
    setup_databases,
    ssh_argv,
)
from native import listening  # noqa: E402
from sqldb import MASKING_RULES, MY_HOST, MY_PORT, PG_ADMIN, seeded_databases, target_toml  # noqa: E402
from sshd import Sshd  # noqa: E402

from bastion.ssh import transport  # noqa: E402

PHASES = ("pgbench", "bulk", "mysql")
PG_PATHS = ("direct", "pgbouncer", "openssh", "asyncssh", "bastion")
MY_PATHS = ("direct", "openssh", "openssh-view", "bastion")
MODES = ("simple", "prepared")
NAMES = {"direct": "direct (127.0.0.1)", "pgbouncer": "pgbouncer (session pool)",
         "openssh": "OpenSSH ssh -L, throwaway sshd",
         "asyncssh": "asyncssh forwarder, no inspection", "bastion": "bastion ssh -L, recorded",
         "openssh-view": "OpenSSH ssh -L, root on the masked view"}
POINT = "SELECT id, name FROM big WHERE id = %s"
MASKED_BIG = BIG.replace(" FROM big", " FROM public_masked.big")
THREADS = 4
# Names no test uses: bastions that share a database server sweep grant accounts by request id
# and target name (bastion/db/grants.py), so a test suite's bastion could end this one's.
USERS = {"nbench": ["developer", "db-dev"], "bob": ["approver", "db-approver"], "dave": ["approver"],
         "carol": ["auditor"]}
ROLES = """
[[roles]]
name = "db-dev"
request = ["pg*", "my*"]
[[roles]]
name = "db-approver"
approve = ["pg*", "my*"]
"""
# The tests' masking rules (customers), applied to `big` as well.
BIG_RULES = re.sub(r'\["\*\.customers\.(\w+)"\]', r'["*.customers.\1", "*.big.\1"]', MASKING_RULES)
PY_SPY = REPO / ".venv" / "bin" / "py-spy"
# Per MariaDB path: (selects per second, selects, bastion CPU seconds, seconds busy after the end).
MyRates = dict[str, tuple[float, int, float, float]]


# --- processes ----------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """End a process this script started, and reap it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and its live descendants (sshd forks one per connection)."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
                parents[int(entry)] = int(fields[1])
                used[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for pid, cpu in used.items():
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == root:
            total += cpu
    return total


def settle(pid: int, *, step: float = 0.5, busy: float = 0.1, limit: float = 120.0) -> float:
    """Wait until a process is idle (under `busy` of a core over `step` seconds); return how long
    it kept working. The bastion writes each statement to its query log and recording after the
    relay has passed it on, so it may still be busy after the client has finished."""
    start = time.monotonic()
    last = cpu_seconds(pid)
    while time.monotonic() - start < limit:
        time.sleep(step)
        now = cpu_seconds(pid)
        if now - last < busy * step:
            break
        last = now
    return max(0.0, time.monotonic() - start - step)


@dataclass
class Tunnel:
    """An `ssh -N -L` running in the background, its local port and the cipher it negotiated."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def cipher(self) -> str:
        found = re.search(r"kex: server->client cipher: (\S+)", self.log.read_text(errors="replace"))
        return found.group(1) if found else "?"


@contextlib.contextmanager
def forward(argv: list[str], port: int, log: Path) -> Iterator[Tunnel]:
    """Start `ssh ... -N -v -L port:...` (argv) and wait until it listens on the local port."""
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
    try:
        deadline = time.monotonic() + 15
        while not listening(port):  # connecting to find out would open a session
            if proc.poll() is not None:
                raise SystemExit(f"ssh -L exited: {log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"ssh -L did not listen on {port}")
            time.sleep(0.05)
        yield Tunnel(port, proc, log)
    finally:
        stop_process(proc)


def openssh_tunnel(sshd: Sshd, key: Path, remote_port: int, log: Path
                   ) -> contextlib.AbstractContextManager[Tunnel]:
    """`ssh -N -L PORT:127.0.0.1:REMOTE root@sshd` with the client's default ciphers."""
    known = sshd.dir / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key_line}\n")
    port = free_port()
    argv = ["ssh", "-F", "/dev/null", "-p", str(sshd.port), "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none", "-i", str(key), "-N", "-v", "-o",
            "ExitOnForwardFailure=yes", "-L", f"{port}:127.0.0.1:{remote_port}", "root@127.0.0.1"]
    return forward(argv, port, log)


def bastion_tunnel(bastion: BastionProcess, cert: Path, target: str, remote_port: int, log: Path
                   ) -> contextlib.AbstractContextManager[Tunnel]:
    """`ssh -N -L PORT:TARGET:REMOTE TARGET@bastion` as nbench with the approved certificate."""
    port = free_port()
    argv = ssh_argv(bastion, bastion.world.key("nbench"), target, cert=cert,
                    options=["-N", "-v", "-o", "ExitOnForwardFailure=yes",
                             "-L", f"{port}:{target}:{remote_port}"])
    return forward(argv, port, log)


async def _forwarder() -> None:
    """`bench_native.py --forwarder`: asyncssh's own `ssh -L` forwarding with the bastion's SSH
    transport, and nothing else."""
    transport.install()
    server = await asyncssh.create_server(
        LoopbackForwarder, "127.0.0.1", 0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")])
    print(f"forwarder listening on {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def forwarder_tunnel(forwarder: PeerProcess, key: Path, remote_port: int, log: Path
                     ) -> contextlib.AbstractContextManager[Tunnel]:
    """`ssh -N -L PORT:127.0.0.1:REMOTE` through the asyncssh forwarder (a throwaway host key)."""
    port = free_port()
    argv = ["ssh", "-F", "/dev/null", "-p", str(forwarder.port), "-o", "UserKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none", "-i", str(key), "-N", "-v", "-o",
            "ExitOnForwardFailure=yes", "-L", f"{port}:127.0.0.1:{remote_port}", "bench@127.0.0.1"]
    return forward(argv, port, log)


class Pgbouncer:
    """Debian's pgbouncer on a free port: session pooling, trust, one database entry."""

    def __init__(self, directory: Path, database: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        self.ini = self.dir / "pgbouncer.ini"
        self.ini.write_text(f"""[databases]
{database} = host=127.0.0.1 port=5432 dbname={database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / 'users.txt'}
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = {self.dir / 'pgbouncer.log'}
pidfile = {self.dir / 'pgbouncer.pid'}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # pgbouncer refuses to run as root: -u switches to postgres, who must read the directory.
        self.dir.chmod(0o755)
        self.dir.parent.chmod(0o711)
        shutil.chown(self.dir, "postgres")
        for path in self.dir.iterdir():
            shutil.chown(path, "postgres")
        argv = ["/usr/sbin/pgbouncer", str(self.ini)]
        if os.geteuid() == 0:
            argv[1:1] = ["-u", "postgres"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.dir / "pgbouncer.log"
                raise SystemExit(f"pgbouncer did not start: "
                                 f"{log.read_text() if log.exists() else ''}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT)


# --- the world ----------------------------------------------------------------------------------


@dataclass
class Bench:
    """Everything the phases use."""

    root: Path
    db: dict[str, str]
    pgbench_db: str
    bastion: BastionProcess
    sshd: Sshd
    key: Path
    certs: dict[str, Path] = field(default_factory=dict)

    @property
    def bastion_pid(self) -> int:
        assert self.bastion.proc is not None
        return self.bastion.proc.pid


@contextlib.contextmanager
def pgbench_database(scale: int) -> Iterator[str]:
    """A throwaway database initialised by `pgbench -i -s SCALE` (owned by postgres)."""
    name = f"bench_native_{os.urandom(5).hex()}"
    admin = psycopg.connect(PG_ADMIN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        start = time.perf_counter()
        done = subprocess.run(["pgbench", "-i", "-q", "-s", str(scale), "-h", "127.0.0.1",
                               "-p", "5432", "-U", "postgres", name],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"pgbench -i failed: {done.stderr}")
        print(f"pgbench -i -s {scale}: {time.perf_counter() - start:.1f} s", flush=True)
        yield name
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def approve(bastion: BastionProcess, target: str) -> Path:
    """nbench's approved grant on a target (bob approves); the certificate's path."""
    req = control_json(bastion, "nbench", "request", target, "--reason", "bench")
    if req["status"] != "approved":
        control_json(bastion, "bob", "approve", str(req["id"]))
    path = bastion.world.root / f"nbench-{target}-cert.pub"
    result = control(bastion, "nbench", "cert", str(req["id"]))
    if result.returncode != 0:
        raise SystemExit(f"cert for {target}: {result.stderr}")
    path.write_text(result.stdout)
    return path


@contextlib.contextmanager
def bench_world(args: argparse.Namespace, phases: set[str]) -> Iterator[Bench]:
    """Databases, the bastion with three targets, the throwaway sshd; all gone afterwards."""
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(contextlib.contextmanager(seeded_databases)())
        rows = {"pg": args.rows if "bulk" in phases else 1, "my": args.rows if "mysql" in phases else 1}
        took = create_big(db, rows["pg"], rows["my"])
        print(f"filled big: PostgreSQL {rows['pg']:,} rows in {took['pgdb']:.1f} s, "
              f"MariaDB {rows['my']:,} rows in {took['mydb']:.1f} s", flush=True)
        # Dropped before seeded_databases' clean-up, which drops the grant roles after.
        pgbench_db = stack.enter_context(pgbench_database(args.scale)) if "pgbench" in phases \
            else db["name"]
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_native_")))
        world = World(root=root / "bastion", port=free_port(), users=dict(USERS))
        world.extra = (
            target_toml("pgbig", "postgres", "127.0.0.1:5432", db, BIG_RULES)
            + target_toml("mybig", "mysql", f"{MY_HOST}:{MY_PORT}", db, BIG_RULES)
            + (target_toml("pgbench", "postgres", "127.0.0.1:5432", {"name": pgbench_db})
               if "pgbench" in phases else "")
            + ROLES)
        world.write_config()
        setup_databases(world, "pgbig", "mybig")  # the masked views of customers and big
        bastion = BastionProcess(world)
        bastion.start()
        stack.callback(bastion.stop)
        key = world.key("nbench")
        sshd = Sshd(root / "sshd", authorized_keys=(make_key(key),))
        sshd.start()
        stack.callback(sshd.stop)
        bench = Bench(root, db, pgbench_db, bastion, sshd, key)
        for target in ("pgbench", "pgbig", "mybig"):
            if target != "pgbench" or "pgbench" in phases:
                bench.certs[target] = approve(bastion, target)
        assert bastion.proc is not None
        print(f"bastion pid {bastion.proc.pid}, sshd port {sshd.port}", flush=True)
        yield bench


# --- 1. pgbench ---------------------------------------------------------------------------------


@dataclass
class PgbenchRun:
    tps: float
    transactions: int
    cpu: dict[str, float]  # process → CPU seconds used during the run (the bastion's: until idle)
    drain: float  # seconds the bastion kept working after pgbench ended


def pgbench(port: int, user: str, database: str, mode: str, *, seconds: int | None = None,
            transactions: int | None = None) -> tuple[float, int]:
    """`pgbench -n -S -M MODE -c 4 -j 2`: (tps without initial connection time, transactions)."""
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    env.pop("PGPASSWORD", None)
    length = ["-T", str(seconds)] if seconds is not None else ["-t", str(transactions)]
    done = subprocess.run(["pgbench", "-n", "-S", "-M", mode, "-c", "4", "-j", "2", *length,
                           "-h", "127.0.0.1", "-p", str(port), "-U", user, database],
                          capture_output=True, text=True, env=env, timeout=(seconds or 60) + 60)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    count = re.search(r"number of transactions actually processed: (\d+)", done.stdout)
    if done.returncode != 0 or tps is None or count is None:
        raise SystemExit(f"pgbench on port {port} failed:\n{done.stdout}\n{done.stderr}")
    return float(tps.group(1)), int(count.group(1))


@contextlib.contextmanager
def pg_endpoints(bench: Bench, paths: list[str]
                 ) -> Iterator[tuple[dict[str, int], dict[str, Callable[[], float]], dict[str, str]]]:
    """The asked paths to the pgbench database (pgbouncer and the asyncssh forwarder started
    only when asked): (ports, CPU counters, notes)."""
    with contextlib.ExitStack() as stack:
        ports = {"direct": 5432}
        cpu: dict[str, Callable[[], float]] = {"bastion": lambda: cpu_seconds(bench.bastion_pid)}
        notes = {}
        if "pgbouncer" in paths:
            bouncer = Pgbouncer(bench.root / "pgbouncer", bench.pgbench_db)
            bouncer.start()
            stack.callback(bouncer.stop)
            assert bouncer.proc is not None
            bouncer_pid = bouncer.proc.pid
            ports["pgbouncer"] = bouncer.port
            cpu["pgbouncer"] = lambda: cpu_seconds(bouncer_pid)
        if "openssh" in paths:
            ssh = stack.enter_context(openssh_tunnel(bench.sshd, bench.key, 5432,
                                                     bench.root / "ssh-pg.log"))
            assert bench.sshd.proc is not None
            sshd_pid = bench.sshd.proc.pid
            ports["openssh"], notes["openssh"] = ssh.port, ssh.cipher
            cpu["sshd"] = lambda: tree_cpu(sshd_pid)
        if "asyncssh" in paths:
            forwarder = PeerProcess([__file__, "--forwarder"])
            stack.callback(forwarder.stop)
            fwd = stack.enter_context(forwarder_tunnel(forwarder, bench.key, 5432,
                                                       bench.root / "ssh-forwarder-pg.log"))
            forwarder_pid = forwarder.proc.pid
            ports["asyncssh"], notes["asyncssh"] = fwd.port, fwd.cipher
            cpu["asyncssh"] = lambda: cpu_seconds(forwarder_pid)
        bas = stack.enter_context(bastion_tunnel(bench.bastion, bench.certs["pgbench"], "pgbench",
                                                 5432, bench.root / "ssh-bastion-pg.log"))
        ports["bastion"], notes["bastion"] = bas.port, bas.cipher
        yield ports, cpu, notes


def run_pgbench(bench: Bench, args: argparse.Namespace
                ) -> tuple[dict[tuple[str, str], list[PgbenchRun]], dict[str, str]]:
    """Every mode through every path, interleaved, `--rounds` times (a round runs each path once
    per mode, so that a drift of the machine's speed falls on every path alike)."""
    results: dict[tuple[str, str], list[PgbenchRun]] = collections.defaultdict(list)
    paths = args.paths
    with pg_endpoints(bench, paths) as (ports, cpu, notes):
        users = {path: "nbench" if path == "bastion" else "postgres" for path in PG_PATHS}
        for path in paths:  # warm-up: connections, the grant's account, the gate's cache
            for mode in MODES:
                pgbench(ports[path], users[path], bench.pgbench_db, mode, transactions=50)
        print(f"pgbench -S -c 4 -j 2 -T {args.seconds}: 2 modes x {len(paths)} paths x "
              f"{args.rounds} rounds (ciphers: OpenSSH tunnel {notes.get('openssh', 'not run')}, "
              f"bastion tunnel {notes['bastion']})", flush=True)
        for _ in range(args.rounds):
            for mode in MODES:
                for path in paths:
                    settle(bench.bastion_pid)  # nothing left over from the run before
                    before = {name: read() for name, read in cpu.items()}
                    tps, count = pgbench(ports[path], users[path], bench.pgbench_db, mode,
                                         seconds=args.seconds)
                    used = {name: read() - before[name] for name, read in cpu.items()}
                    drain = settle(bench.bastion_pid)
                    used["bastion"] = cpu["bastion"]() - before["bastion"]
                    results[(mode, path)].append(PgbenchRun(tps, count, used, drain))
                    print(f"  {mode:<9}{path:<11}{tps:>10,.0f} tps  ({count:,} transactions; "
                          f"bastion CPU {used['bastion']:.1f} s, busy {drain:.1f} s after the "
                          "end)", flush=True)
    return results, notes


# --- 2. the masked big result with psql ---------------------------------------------------------


def psql_csv(port: int, user: str, database: str, sql: str, out: Any = subprocess.DEVNULL
             ) -> tuple[float, str]:
    """`psql -X --csv -c SQL`: (wall seconds of the psql process, its output if captured)."""
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "bench_native"}
    env.pop("PGPASSWORD", None)
    start = time.perf_counter()
    done = subprocess.run(["psql", "-X", "--csv", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                           "-p", str(port), "-U", user, "-d", database, "-c", sql],
                          stdout=out, stderr=subprocess.PIPE, text=True, env=env, timeout=900)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"psql on port {port}: {sql[:60]!r} failed: {done.stderr}")
    return took, done.stdout or ""


def check_masked(rows: list[list[str]], where: str) -> None:
    """Rows 1-3 of `big` as the user sees them: email hashed, ssn partial, card redacted."""
    if len(rows) != 3:
        raise SystemExit(f"{where}: expected 3 rows, got {rows!r}")
    for i, (_, name, email, ssn, card, _) in enumerate(rows, start=1):
        if name != f"Person {i}" or not email.startswith("h:") or not ssn.startswith("*****") \
                or "*" not in card or "4111" in card or "@" in email:
            raise SystemExit(f"{where}: not masked as expected: {rows!r}")


def logged_rows(bench: Bench, target: str) -> list[int]:
    """Row counts the query log holds for the big query on a target (auditor's view)."""
    logged = control_json(bench.bastion, "carol", "queries", "--limit", "100")
    return [q["rows"] for q in logged if q["target"] == target and q["statement"].strip() == BIG]


def run_pg_bulk(bench: Bench, args: argparse.Namespace) -> dict[str, list[float]]:
    """psql --csv of the big result: direct (unmasked) and through the bastion (masked)."""
    database = bench.db["name"]
    times: dict[str, list[float]] = {"direct": [], "direct masked": [], "bastion": [], "cpu": [],
                                     "direct start": [], "bastion start": []}
    with bastion_tunnel(bench.bastion, bench.certs["pgbig"], "pgbig", 5432,
                        bench.root / "ssh-bastion-bulk.log") as tunnel:
        _, out = psql_csv(tunnel.port, "nbench", database, f"{BIG} WHERE id <= 3 ORDER BY id",
                          out=subprocess.PIPE)
        check_masked([line.split(",") for line in out.splitlines()[1:]], "psql through the bastion")
        psql_csv(5432, "postgres", database, BIG)  # warm-up (page cache)
        print(f"{args.rows:,}-row result, psql --csv: {args.bulk_runs} runs x 2 paths", flush=True)
        for _ in range(args.bulk_runs):  # what a session's start costs, without the result
            settle(bench.bastion_pid)
            times["direct start"].append(psql_csv(5432, "postgres", database, "SELECT 1")[0])
            times["bastion start"].append(psql_csv(tunnel.port, "nbench", database, "SELECT 1")[0])
        for _ in range(args.bulk_runs):
            settle(bench.bastion_pid)
            times["direct"].append(psql_csv(5432, "postgres", database, BIG)[0])
            # The masked view the grant's account reads, straight from the server: what the
            # database's masking costs, without the bastion.
            times["direct masked"].append(psql_csv(5432, "postgres", database, MASKED_BIG)[0])
            cpu = cpu_seconds(bench.bastion_pid)
            times["bastion"].append(psql_csv(tunnel.port, "nbench", database, BIG)[0])
            settle(bench.bastion_pid)
            times["cpu"].append(cpu_seconds(bench.bastion_pid) - cpu)
            print(f"  direct {times['direct'][-1]:.2f} s, bastion {times['bastion'][-1]:.2f} s",
                  flush=True)
    counts = logged_rows(bench, "pgbig")[: args.bulk_runs]
    if counts != [args.rows] * args.bulk_runs:
        raise SystemExit(f"pgbig: the query log shows row counts {counts}")
    return times


# --- 3. MariaDB with PyMySQL --------------------------------------------------------------------


def my_connect(port: int, path: str, bench: Bench, **kw: Any) -> pymysql.connections.Connection[Any]:
    """As the bastion's user, or as root: on the tables, or ("openssh-view") with the masked
    database the bastion's sessions start in as the default, so that `big` is the masked view
    (the same query the bastion's session runs, the relay left out)."""
    user, password = ("nbench", "ignored") if path == "bastion" else ("root", "")
    database = bench.db["name"] + ("_masked" if path == "openssh-view" else "")
    return pymysql.connect(host="127.0.0.1", port=port, user=user, password=password,
                           database=database, autocommit=True, connect_timeout=20, **kw)


def point_selects(port: int, path: str, bench: Bench, seconds: float, rows: int) -> tuple[float, int]:
    """THREADS threads, each on its own connection, looping the point select for `seconds`:
    (selects per second, selects)."""
    conns = [my_connect(port, path, bench) for _ in range(THREADS)]
    counts = [0] * THREADS
    stop = threading.Event()
    ready = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        rng = random.Random(i)
        try:
            with conns[i].cursor() as cur:
                ready.wait()
                n = 0
                while not stop.is_set():
                    cur.execute(POINT, (rng.randint(1, rows),))
                    cur.fetchone()
                    n += 1
                counts[i] = n
        except BaseException as exc:  # reported below
            errors.append(exc)
            with contextlib.suppress(threading.BrokenBarrierError):
                ready.abort()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    for conn in conns:
        conn.close()
    if errors:
        raise SystemExit(f"point selects through {path}: {errors[0]!r}")
    return sum(counts) / took, sum(counts)


def my_fetch(port: int, path: str, bench: Bench, rows: int) -> float:
    """The big result with an unbuffered cursor, rows iterated and dropped: wall seconds of
    connect + query + fetch."""
    start = time.perf_counter()
    conn = my_connect(port, path, bench, cursorclass=pymysql.cursors.SSCursor)
    with conn, conn.cursor() as cur:
        cur.execute(BIG)
        got = sum(1 for _ in cur.fetchall_unbuffered())
    took = time.perf_counter() - start
    if got != rows:
        raise SystemExit(f"{path}: the big result had {got} rows, not {rows}")
    return took


def run_mysql(bench: Bench, args: argparse.Namespace
              ) -> tuple[MyRates, dict[str, list[float]], dict[str, str]]:
    """Point selects through four paths, then the big result, bastion against direct."""
    rates: MyRates = {}
    times: dict[str, list[float]] = {"direct": [], "bastion": [], "cpu": []}
    with openssh_tunnel(bench.sshd, bench.key, MY_PORT, bench.root / "ssh-my.log") as ssh, \
            bastion_tunnel(bench.bastion, bench.certs["mybig"], "mybig", MY_PORT,
                           bench.root / "ssh-bastion-my.log") as bas:
        ports = {"direct": MY_PORT, "openssh": ssh.port, "openssh-view": ssh.port,
                 "bastion": bas.port}
        with my_connect(bas.port, "bastion", bench) as conn, conn.cursor() as cur:
            cur.execute(f"{BIG} WHERE id <= 3 ORDER BY id")
            check_masked([["" if v is None else str(v) for v in row] for row in cur.fetchall()],
                         "PyMySQL through the bastion")
        for path in MY_PATHS:  # warm-up, and the answers are right
            with my_connect(ports[path], path, bench) as conn, conn.cursor() as cur:
                cur.execute(POINT, (42,))
                if cur.fetchone() != (42, "Person 42"):
                    raise SystemExit(f"{path}: the point select answered wrongly")
            point_selects(ports[path], path, bench, 1.0, args.rows)
        print(f"MariaDB point selects, {THREADS} PyMySQL threads x {args.seconds} s x "
              f"{len(MY_PATHS)} paths", flush=True)
        for path in MY_PATHS:
            settle(bench.bastion_pid)
            cpu = cpu_seconds(bench.bastion_pid)
            rate, count = point_selects(ports[path], path, bench, args.seconds, args.rows)
            drain = settle(bench.bastion_pid)
            rates[path] = (rate, count, cpu_seconds(bench.bastion_pid) - cpu, drain)
            print(f"  {path:<11}{rate:>10,.0f} selects/s  (bastion busy {drain:.1f} s after the "
                  "end)", flush=True)
        # No warm-up fetch: the buffer pool holds `big` since it was filled; medians anyway.
        print(f"MariaDB {args.rows:,}-row result, PyMySQL SSCursor: {args.bulk_runs} runs x 2 paths",
              flush=True)
        for _ in range(args.bulk_runs):
            settle(bench.bastion_pid)
            times["direct"].append(my_fetch(MY_PORT, "direct", bench, args.rows))
            cpu = cpu_seconds(bench.bastion_pid)
            times["bastion"].append(my_fetch(bas.port, "bastion", bench, args.rows))
            settle(bench.bastion_pid)
            times["cpu"].append(cpu_seconds(bench.bastion_pid) - cpu)
            print(f"  direct {times['direct'][-1]:.2f} s, bastion {times['bastion'][-1]:.2f} s",
                  flush=True)
        notes = {"openssh": ssh.cipher, "bastion": bas.cipher}
    counts = logged_rows(bench, "mybig")[: args.bulk_runs]
    if counts != [args.rows] * args.bulk_runs:
        raise SystemExit(f"mybig: the query log shows row counts {counts}")
    return rates, times, notes


# --- profiles -----------------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(pid: int, out: Path) -> Iterator[list[float]]:
    """py-spy record (raw collapsed stacks, 100 Hz, no line numbers) until the block ends (and
    the process is idle again); yields a list that gets the process's CPU seconds meanwhile."""
    settle(pid)
    proc = subprocess.Popen([str(PY_SPY), "record", "-p", str(pid), "-r", "100", "--nolineno",
                             "-f", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    used: list[float] = []
    cpu = cpu_seconds(pid)
    try:
        yield used
        settle(pid)
    finally:
        used.append(cpu_seconds(pid) - cpu)
        stop_process(proc, signal.SIGINT)


def _frame(frame: str) -> str:
    """`function (path)` → `function (short path)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for prefix in (f"{REPO}/", "site-packages/", "/lib/python3.11/"):
        if prefix in where:
            where = where.split(prefix, 1)[1]
    return f"{name} ({where})" if where else name


# Leaves py-spy counts as running that are threads waiting: an idle executor thread (in the C
# queue's get) and the event loop in epoll_wait. Left out, the samples match the CPU time.
WAITING = ("_worker (concurrent/futures/thread.py)", "EpollSelector.select (selectors.py)")


# What a sample was doing: the first of these whose marker is in any of its frames.
CATEGORIES = (
    ("grant accounts: sweep, session logins (admin connections)", ("DatabaseGrants.", "admin_session")),
    ("query log: the store's calls and its SQLite thread", ("SqlStore.record_query", "SQLiteStore.")),
    ("recording: events encoded, recorder threads", ("RecordingWriter", "_Sink.", "recorder/")),
    ("statement log, other (WireContext._write)", ("WireContext._write",)),
    ("gate: split, lex, check", ("StatementGate.", "lexing.py", "split_statements")),
    ("SSH output: asyncssh channel writes, encryption, send",
     ("SSHWriter.write", "SSHChannel.write", "SSHConnection.send_packet")),
    ("SSH input: asyncssh receive, decryption", ("SSHConnection.data_received",)),
    ("relay, server to client (pg _from_server, mysql _follow)",
     ("_Relay._from_server", "_Relay._follow")),
    ("relay, client to server (pg _from_client, mysql _serve)",
     ("_Relay._from_client", "_Relay._serve", "_Relay._read_client")),
    ("asyncio: thread hand-offs", ("_read_from_self", "_write_to_self", "ThreadPoolExecutor.submit",
                                   "run_in_executor", "call_soon_threadsafe")),
)


def summarise(raw: Path, top: int, cpu: float) -> list[str]:
    """Top functions of a collapsed-stack file: self time, and inclusive time of the bastion's
    own functions (bastion/, recorder/)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    doing: collections.Counter[str] = collections.Counter()
    total = waiting = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        if frames[-1] in WAITING:
            waiting += n
            continue
        total += n
        own[frames[-1]] += n
        doing[next((name for name, markers in CATEGORIES
                    if any(m in f for f in frames for m in markers)), "other (asyncio loop, ...)")] += n
        for f in set(frames):
            if f.split(" (", 1)[-1].startswith(("bastion/", "recorder/")) and "cli.py" not in f:
                inclusive[f] += n
    if not total:
        return ["   (no samples)"]
    lines = [f"   {total} samples at 100 Hz ({waiting} more of waiting threads left out); the "
             f"bastion used {cpu:.1f} CPU s meanwhile; by what they were doing:"]
    lines += [f"     {100 * n / total:5.1f} %  {f}" for f, n in doing.most_common()]
    lines.append("   self:")
    lines += [f"     {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    lines.append("   inclusive, the bastion's own functions:")
    lines += [f"     {100 * n / total:5.1f} %  {f}" for f, n in inclusive.most_common(top)]
    return lines


def run_profiles(bench: Bench, args: argparse.Namespace, phases: set[str], out: Path) -> list[str]:
    """Extra, unmeasured runs under py-spy; the summaries to print."""
    if not PY_SPY.exists():
        return ["py-spy is not installed (.venv/bin/pip install py-spy): no profiles"]
    out.mkdir(parents=True, exist_ok=True)
    report: list[str] = []
    seconds = min(15, args.seconds)
    if "pgbench" in phases:
        for mode in MODES:
            with bastion_tunnel(bench.bastion, bench.certs["pgbench"], "pgbench", 5432,
                                bench.root / f"ssh-profile-pg-{mode}.log") as tunnel:
                pgbench(tunnel.port, "nbench", bench.pgbench_db, mode, transactions=50)
                raw = out / f"pgbench-{mode}.txt"
                with py_spy(bench.bastion_pid, raw) as cpu:
                    tps, _ = pgbench(tunnel.port, "nbench", bench.pgbench_db, mode,
                                     seconds=seconds)
            report += [f"profile: bastion during pgbench -M {mode} ({seconds} s, {tps:,.0f} tps "
                       f"under py-spy) and until idle, {raw}", *summarise(raw, 15, cpu[0])]
    if "bulk" in phases:
        with bastion_tunnel(bench.bastion, bench.certs["pgbig"], "pgbig", 5432,
                            bench.root / "ssh-profile-bulk.log") as tunnel:
            raw = out / "psql-bulk.txt"
            with py_spy(bench.bastion_pid, raw) as cpu:
                took, _ = psql_csv(tunnel.port, "nbench", bench.db["name"], BIG)
        report += [f"profile: bastion during the psql --csv big result ({took:.1f} s under "
                   f"py-spy), {raw}", *summarise(raw, 15, cpu[0])]
    if "mysql" in phases:
        with bastion_tunnel(bench.bastion, bench.certs["mybig"], "mybig", MY_PORT,
                            bench.root / "ssh-profile-my.log") as tunnel:
            raw = out / "pymysql-point.txt"
            with py_spy(bench.bastion_pid, raw) as cpu:
                rate, _ = point_selects(tunnel.port, "bastion", bench, seconds, args.rows)
            report += [f"profile: bastion during PyMySQL point selects ({seconds} s, {rate:,.0f} "
                       f"per s under py-spy), {raw}", *summarise(raw, 15, cpu[0])]
            raw = out / "pymysql-bulk.txt"
            with py_spy(bench.bastion_pid, raw) as cpu:
                took = my_fetch(tunnel.port, "bastion", bench, args.rows)
        report += [f"profile: bastion during the PyMySQL big result ({took:.1f} s under "
                   f"py-spy), {raw}", *summarise(raw, 15, cpu[0])]
    return report


# --- the report ---------------------------------------------------------------------------------


def row(label: str, *cells: str) -> str:
    return f"{label:<52}" + "".join(f"{c:>16}" for c in cells)


def report_pgbench(results: dict[tuple[str, str], list[PgbenchRun]], notes: dict[str, str],
                   args: argparse.Namespace) -> None:
    paths = args.paths
    median = statistics.median
    print()
    print(f"1. pgbench -n -S -c 4 -j 2 -T {args.seconds}, scale {args.scale}, tps (without "
          f"initial connection time; the median of {args.rounds} interleaved rounds, ratios the "
          f"median of each round's ratio); OpenSSH tunnel cipher {notes.get('openssh', 'not run')}, bastion "
          f"tunnel {notes['bastion']}")
    print(row("", *MODES))
    for path in paths:
        print(row(f"  {NAMES[path]}", *(f"{median(r.tps for r in results[(m, path)]):,.0f}"
                                        for m in MODES)))
    for label, a, b, goal in (("bastion / OpenSSH tunnel", "bastion", "openssh",
                               "(budget >= 0.5x, moonshot 1.0x)"),
                              ("asyncssh forwarder / OpenSSH tunnel", "asyncssh", "openssh",
                               "(the ceiling of a Python SSH hop)"),
                              ("bastion / asyncssh forwarder", "bastion", "asyncssh",
                               "(what inspection and recording cost)"),
                              ("bastion / direct", "bastion", "direct", ""),
                              ("OpenSSH tunnel / direct", "openssh", "direct", ""),
                              ("pgbouncer / direct", "pgbouncer", "direct", "")):
        if a not in paths or b not in paths:
            continue
        ratios = {m: [x.tps / y.tps for x, y in zip(results[(m, a)], results[(m, b)],
                                                     strict=True)] for m in MODES}
        spread = "" if args.rounds == 1 else "  rounds " + " · ".join(
            ", ".join(f"{r:.2f}" for r in ratios[m]) for m in MODES)
        print(row(f"  ratio {label}", *(f"{median(ratios[m]):.3f}x" for m in MODES))
              + f"  {goal}{spread}")
    for label, name in (("bastion process (until idle)", "bastion"),
                        ("OpenSSH tunnel's sshd processes", "sshd"),
                        ("asyncssh forwarder", "asyncssh"), ("pgbouncer", "pgbouncer")):
        path = {"sshd": "openssh"}.get(name, name)
        if path not in paths:
            continue
        print(row(f"  CPU s per 1000 tx, {label}",
                  *(f"{median(1000 * r.cpu[name] / r.transactions for r in results[(m, path)]):.3f}"
                    for m in MODES)))
    if "bastion" in paths:
        print(row("  bastion busy after pgbench ended (log backlog)",
                  *(f"{max(r.drain for r in results[(m, 'bastion')]):.1f} s" for m in MODES)))


def report_bulk(times: dict[str, list[float]], rows: int) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print(f"2. {rows:,}-row result, 3 columns masked, psql -X --csv > /dev/null, wall s "
          f"(median of {len(times['direct'])}; runs {', '.join(f'{t:.2f}' for t in times['direct'])}"
          f" / {', '.join(f'{t:.2f}' for t in times['bastion'])})")
    print(row("  direct as postgres, unmasked", f"{med['direct']:.2f} s",
              f"{rows / med['direct']:,.0f} rows/s"))
    print(row("  direct as postgres, the masked view", f"{med['direct masked']:.2f} s",
              f"{rows / med['direct masked']:,.0f} rows/s"))
    print(row("  through the bastion, masked", f"{med['bastion']:.2f} s",
              f"{rows / med['bastion']:,.0f} rows/s"))
    print(row("  ratio direct / bastion", f"{med['direct'] / med['bastion']:.3f}x") +
          "  (budget >= 0.5x)")
    print(row("  ratio direct masked view / bastion",
              f"{med['direct masked'] / med['bastion']:.3f}x") + "  (what the relay costs)")
    print(row("  bastion CPU per row", f"{1e6 * med['cpu'] / rows:.2f} us"))
    print(row("  psql -c 'SELECT 1' (connection, session start)", f"{med['direct start']:.3f} s",
              f"{med['bastion start']:.3f} s") + "  (direct, bastion)")


def report_mysql(rates: MyRates, times: dict[str, list[float]],
                 notes: dict[str, str], args: argparse.Namespace) -> None:
    print()
    print(f"3a. MariaDB point selects ({POINT!r}), {THREADS} PyMySQL threads, {args.seconds} s; "
          f"OpenSSH tunnel cipher {notes['openssh']}, bastion tunnel {notes['bastion']}")
    for path in MY_PATHS:
        print(row(f"  {NAMES[path]}", f"{rates[path][0]:,.0f}/s"))
    for label, a, b, goal in (("bastion / OpenSSH tunnel", "bastion", "openssh", "  (budget >= 0.5x)"),
                              ("bastion / OpenSSH tunnel on the masked view", "bastion",
                               "openssh-view", "  (the relay's share)"),
                              ("OpenSSH on the masked view / on the table", "openssh-view",
                               "openssh", "  (the view's share)"),
                              ("bastion / direct", "bastion", "direct", ""),
                              ("OpenSSH tunnel / direct", "openssh", "direct", "")):
        print(row(f"  ratio {label}", f"{rates[a][0] / rates[b][0]:.3f}x") + goal)
    print(row("  bastion CPU s per 1000 selects (until idle)",
              f"{1000 * rates['bastion'][2] / rates['bastion'][1]:.3f}"))
    print(row("  bastion busy after the client ended", f"{rates['bastion'][3]:.1f} s"))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"3b. MariaDB {args.rows:,}-row result, 3 columns masked through the bastion, PyMySQL "
          f"SSCursor, connect + fetch, wall s (median of {len(times['direct'])}; runs "
          f"{', '.join(f'{t:.2f}' for t in times['direct'])} / "
          f"{', '.join(f'{t:.2f}' for t in times['bastion'])})")
    print(row("  direct as root, unmasked", f"{med['direct']:.2f} s",
              f"{args.rows / med['direct']:,.0f} rows/s"))
    print(row("  through the bastion, masked", f"{med['bastion']:.2f} s",
              f"{args.rows / med['bastion']:,.0f} rows/s"))
    print(row("  ratio direct / bastion", f"{med['direct'] / med['bastion']:.3f}x") +
          "  (budget >= 0.5x)")
    print(row("  bastion CPU per row", f"{1e6 * med['cpu'] / args.rows:.2f} us"))


def main() -> None:
    if sys.argv[1:] == ["--forwarder"]:
        asyncio.run(_forwarder())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20,
                        help="length of each pgbench run and each MariaDB point-select run")
    parser.add_argument("--bulk-runs", type=int, default=3, help="big-result runs (median)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the big result")
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i scale")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated phases to run, of {','.join(PHASES)}")
    parser.add_argument("--rounds", type=int, default=1,
                        help="pgbench: interleaved rounds of every path (medians are reported)")
    parser.add_argument("--paths", default=",".join(PG_PATHS),
                        help=f"pgbench: comma-separated paths to run, of {','.join(PG_PATHS)}")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="after the measurements, profile the bastion with py-spy into DIR")
    args = parser.parse_args()
    phases = set(args.only.split(","))
    asked = set(args.paths.split(","))
    if not asked <= set(PG_PATHS) or args.rounds < 1:
        parser.error(f"--paths takes paths of {','.join(PG_PATHS)}; --rounds at least 1")
    args.paths = [p for p in PG_PATHS if p in asked]
    if not phases <= set(PHASES):
        parser.error(f"--only takes phases of {','.join(PHASES)}")
    busy = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, text=True).stdout.split()
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs; load average at the start {load[0]:.2f} / {load[1]:.2f} / "
          f"{load[2]:.2f}; pytest processes running: {len(busy)}", flush=True)
    t_begin = time.monotonic()
    pg: tuple[dict[tuple[str, str], list[PgbenchRun]], dict[str, str]] | None = None
    bulk: dict[str, list[float]] | None = None
    my: tuple[MyRates, dict[str, list[float]], dict[str, str]] | None = None
    profiles: list[str] = []
    log_lines: list[str] = []
    with bench_world(args, phases) as bench:
        try:
            if "pgbench" in phases:
                pg = run_pgbench(bench, args)
            if "bulk" in phases:
                bulk = run_pg_bulk(bench, args)
            if "mysql" in phases:
                my = run_mysql(bench, args)
            measured = time.monotonic() - t_begin
            if args.profile is not None:
                profiles = run_profiles(bench, args, phases, args.profile)
        except BaseException:
            tail = bench.bastion.log.read_text(errors="replace").splitlines()[-40:]
            print("the bastion's log, last lines:", *tail, sep="\n   ", file=sys.stderr)
            raise
        alive = bench.bastion.proc is not None and bench.bastion.proc.poll() is None
        log_lines = bench.bastion.log.read_text(errors="replace").splitlines()
    load = os.getloadavg()
    print()
    print(f"measured in {measured:.0f} s ({time.monotonic() - t_begin:.0f} s in all); load average "
          f"at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    if pg is not None:
        report_pgbench(*pg, args)
    if bulk is not None:
        report_bulk(bulk, args.rows)
    if my is not None:
        report_mysql(*my, args)
    for line in profiles:
        print(line)
    problems = [line for line in log_lines
                if re.search(r"Traceback|ERROR|Exception|session failed|internal error", line)]
    print()
    print(f"bastion: {'running' if alive else 'DIED'} at the end of the run; "
          f"{len(problems)} error lines in its log")
    for line in problems[:10]:
        print(f"   {line}")


if __name__ == "__main__":
    main()
