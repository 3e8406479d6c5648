"""Shell sessions through the bastion against their OpenSSH baselines, measured in one run.

    .venv/bin/python bench/bench_shell.py [--mib 128] [--runs 7] [--samples 1000] [--logins 20]
                                          [--sessions 1000] [--session-budget 180]
                                          [--only bulk,echo,login,memory]
                                          [--relay-transport asyncssh|bastion]

About 4-5 minutes with the defaults on a 2-core machine. Everything runs on loopback against the
same OpenSSH sshd (the target), with the stock `ssh` client; nothing is asserted, ratios are
printed against the budgets of DESIGN.md §9:

1. Bulk output (`cat` of a log-like text file, counted from the first byte to EOF, median of
   `--runs`) for both client ciphers, chacha20-poly1305 and aes128-gcm: direct OpenSSH; OpenSSH
   `ProxyJump` (`-J`) through a second sshd; a bare asyncssh relay (below); the bastion, recording
   on. The bastion's and the relay's upstream leg prefer AES-GCM whatever the client chose. Runs
   are interleaved across the paths so that the machine's drift hits them alike. Also printed:
   the CPU seconds per GiB of the middle hop (jump sshd, relay, bastion), which depends less on
   what else the machine is doing than MiB/s does.
2. Keystroke echo latency: `ssh -tt` in a local pty, the remote running `stty raw -echo; cat`; one
   byte written, its echo awaited; the four paths are sampled in turn (interleaved).
3. Login to first output: `ssh ... 'echo x'` wall time (interleaved runs).
4. Memory per idle interactive session: the bastion is restarted (so that heap freed by the bulk
   runs does not hide the sessions' memory), then asyncssh clients (in this process) open PTY
   shells through it in steps up to `--sessions`; the bastion's VmRSS and its CPU use while
   those sessions sit idle (10 s) after each step, and whether the bastion ends the sessions
   once the clients disconnect.
5. Recording on vs off: the bastion has no switch to turn recording off (by design: no recording,
   no session), so the bastion is compared with the bare relay, from (1).

The bare relay is written here: an asyncssh server on loopback that takes any key, logs into the
same sshd with asyncssh (same cipher preference and read size as the bastion) and pumps bytes; no
checks, no state store, no audit, no recording. It runs as its own process, like the bastion.
By default it is stock asyncssh; `--relay-transport bastion` gives it the bastion's SSH transport
(bastion/ssh/transport.py: chacha20 through libsodium, packet writes coalesced, no SSH_MSG_IGNORE
before each packet, back-pressure, the GIL switch interval), so that the bastion / relay ratios
show what recording and checks cost, and nothing else.

Run as root with `useradd` available, the target login (direct, ProxyJump, relay and the bastion's
upstream login alike) is a throwaway user whose shell is /bin/sh with an empty home in /tmp, so no
rc files run (root's cost ~150 ms per login on this machine); it is removed at the end. Otherwise
the login is root, and the output says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import pty
import pwd
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import asyncssh  # noqa: E402
from asyncssh_peer import AnyKeyServer, PeerProcess  # noqa: E402

from bastion.ssh import transport  # noqa: E402
from bastion.ssh.shell import READ_SIZE  # noqa: E402
from bastion.ssh.upstream import CIPHERS  # noqa: E402

MIB = 1024 * 1024
CHACHA = "chacha20-poly1305@openssh.com"
AES = "aes128-gcm@openssh.com"
BENCH_USER = "benchuser"
F_SETPIPE_SZ = 1031
IDLE_CPU_SECONDS = 10.0  # how long the bastion's CPU use is measured after each memory step
PATHS = ("direct", "proxyjump", "bare relay", "bastion")
WORDS = "error warning info request user session target select from where 200 404 ok".split()


# --- the bare relay (runs as `bench_shell.py --bare-relay ...` in its own process) -----------


async def _relay_session(process: asyncssh.SSHServerProcess[bytes], target_port: int,
                         login: str, key: asyncssh.SSHKey) -> None:
    try:
        conn = await asyncssh.connect(
            "127.0.0.1", target_port, username=login, client_keys=[key], known_hosts=None,
            agent_path=None, config=None, encryption_algs=CIPHERS, preferred_auth="publickey",
        )
    except (OSError, asyncssh.Error) as exc:
        process.stderr.write(f"relay: {exc}\r\n".encode())
        process.exit(255)
        return
    async with conn:
        cols, rows, pw, ph = process.term_size
        remote = await conn.create_process(
            process.command, term_type=process.term_type,
            term_size=(cols, rows, pw, ph) if process.term_type else None,
            term_modes=process.term_modes or None, encoding=None,
            request_pty="auto" if process.term_type else False,
        )

        async def pump_out(source: asyncssh.SSHReader[bytes], sink: asyncssh.SSHWriter[bytes]) -> None:
            while data := await source.read(READ_SIZE):
                sink.write(data)
                await sink.drain()

        async def pump_in() -> None:
            while True:
                try:
                    data = await process.stdin.read(READ_SIZE)
                except asyncssh.TerminalSizeChanged as change:
                    remote.change_terminal_size(change.width, change.height)
                    continue
                except (asyncssh.BreakReceived, asyncssh.SignalReceived):
                    continue
                if not data:
                    remote.stdin.write_eof()
                    return
                remote.stdin.write(data)
                await remote.stdin.drain()

        feeder = asyncio.create_task(pump_in())
        try:
            await asyncio.gather(pump_out(remote.stdout, process.stdout),
                                 pump_out(remote.stderr, process.stderr))
            await remote.wait_closed()
        except (OSError, asyncssh.Error):
            pass
        finally:
            feeder.cancel()
        process.exit(remote.exit_status if remote.exit_status is not None else 0)


async def _bare_relay(target_port: int, login: str, key_path: str, relay_transport: str) -> None:
    if relay_transport == "bastion":
        # The bastion's own SSH transport (bastion/ssh/), so that bastion / relay is the cost
        # of everything but the transport: checks, state, recording.
        transport.install()
    key = asyncssh.read_private_key(key_path)
    server = await asyncssh.create_server(
        AnyKeyServer, "127.0.0.1", 0, server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        process_factory=lambda p: _relay_session(p, target_port, login, key), encoding=None,
        agent_forwarding=False, x11_forwarding=False, allow_scp=False,
    )
    print(f"relay listening on {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


# --- the machine: a light target login ----------------------------------------------------------


@dataclass
class Login:
    name: str
    home: Path
    created: bool
    note: str


def make_login() -> Login:
    """A throwaway user with /bin/sh as its shell, or root when that is not possible.

    SIGTERM (e.g. from `timeout`) is turned into SystemExit from here on, so that the callers'
    `finally` removes the user again.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    home = Path(tempfile.mkdtemp(prefix="benchhome-", dir="/tmp"))
    home.chmod(0o755)
    try:
        pwd.getpwnam(BENCH_USER)
        return Login("root", home, False, f"root (a user {BENCH_USER!r} already exists; left alone)")
    except KeyError:
        pass
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        return Login("root", home, False, "root (useradd unavailable or not root: root's rc files "
                                           "are part of every login)")
    # "*" rather than useradd's locked "!": sshd without PAM refuses locked accounts.
    result = subprocess.run(["useradd", "-M", "-s", "/bin/sh", "-d", str(home), "-p", "*",
                             BENCH_USER], capture_output=True, text=True)
    if result.returncode != 0:
        return Login("root", home, False, f"root (useradd failed: {result.stderr.strip()})")
    os.chown(home, pwd.getpwnam(BENCH_USER).pw_uid, -1)
    return Login(BENCH_USER, home, True, f"{BENCH_USER} (throwaway user, shell /bin/sh, no rc files)")


def drop_login(login: Login) -> None:
    if login.created:
        subprocess.run(["userdel", BENCH_USER], capture_output=True)
    shutil.rmtree(login.home, ignore_errors=True)


def log_text(size: int) -> bytes:
    """`size` bytes of log-like terminal output (1 MiB of varied lines, repeated)."""
    import random

    rng = random.Random(1)
    lines: list[bytes] = []
    total = 0
    while total < MIB:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
        line = f"\x1b[32m{rng.randint(0, 99999):05d}\x1b[0m {words}\n".encode()
        lines.append(line)
        total += len(line)
    block = b"".join(lines)[:MIB]
    return (block * (size // MIB + 1))[:size]


# --- measurements -----------------------------------------------------------------------------


@dataclass
class Setup:
    """Ports, keys and the client command for each path."""

    login: str
    key: Path
    cert: Path
    target_port: int
    jump_port: int
    relay_port: int
    bastion_port: int
    configs: dict[str, Path] = field(default_factory=dict)
    # (key, certificate) of the users the memory phase spreads its sessions over: a bastion
    # holds at most 32 live sessions per user (frontdoor.MAX_LIVE_SESSIONS_PER_USER).
    crowd: list[tuple[Path, Path]] = field(default_factory=list)

    def command(self, path: str, cipher: str, *extra: str) -> list[str]:
        base = ["ssh", "-F", str(self.configs[cipher]), *extra]
        if path == "direct":
            return [*base, "-p", str(self.target_port), f"{self.login}@127.0.0.1"]
        if path == "proxyjump":
            return [*base, "-J", f"{self.login}@127.0.0.1:{self.jump_port}", "-p",
                    str(self.target_port), f"{self.login}@127.0.0.1"]
        if path == "bare relay":
            return [*base, "-p", str(self.relay_port), f"{self.login}@127.0.0.1"]
        assert path == "bastion"
        return [*base, "-o", f"CertificateFile={self.cert}", "-p", str(self.bastion_port),
                "prod@127.0.0.1"]


def client_config(path: Path, key: Path, cipher: str) -> Path:
    # -J passes -F on to the jump's ssh, so both legs of ProxyJump use this cipher too.
    path.write_text(
        f"""Host *
  IdentityFile {key}
  IdentitiesOnly yes
  IdentityAgent none
  BatchMode yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  Ciphers {cipher}
  ControlMaster no
"""
    )
    return path


def bulk_rate(command: list[str], remote: str, size: int) -> float:
    """MiB/s of `remote`'s output, from its first byte to EOF (the login is not counted)."""
    proc = subprocess.Popen([*command, remote], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    fd = proc.stdout.fileno()
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, MIB)
    first = os.read(fd, MIB)
    start = time.perf_counter()
    total = len(first)
    while chunk := os.read(fd, MIB):
        total += len(chunk)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.wait()
    if proc.returncode != 0 or total != size:
        raise RuntimeError(f"{command}: exit {proc.returncode}, {total} of {size} bytes: {err}")
    return (total - len(first)) / MIB / elapsed


class EchoSession:
    """`ssh -tt` in a local pty, the remote side echoing every byte with `cat` in raw mode."""

    def __init__(self, command: list[str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [*command, "stty raw -echo; printf READY; exec cat"],
            stdin=slave, stdout=slave, stderr=subprocess.PIPE, start_new_session=True,
        )
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 30
        while b"READY" not in seen:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{command}: no echo session: {seen!r}")
            if select.select([self.master], [], [], 0.5)[0]:
                seen += os.read(self.master, 4096)
        self.samples: list[float] = []

    def sample(self, byte: bytes) -> None:
        start = time.perf_counter()
        os.write(self.master, byte)
        got = b""
        while not got:
            if not select.select([self.master], [], [], 5)[0]:
                raise RuntimeError("no echo within 5 s")
            got = os.read(self.master, 64)
        self.samples.append((time.perf_counter() - start) * 1000)
        if got != byte:
            raise RuntimeError(f"echo {got!r} for {byte!r}")

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def login_time(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([*command, "echo x"], capture_output=True, text=True, timeout=60)
    elapsed = (time.perf_counter() - start) * 1000
    if result.returncode != 0 or result.stdout != "x\n":
        raise RuntimeError(f"{command}: exit {result.returncode}: {result.stderr}")
    return elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def proc_status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "Threads"):
            fields[name] = int(value.split()[0])
    fields["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return fields


def child_count(pid: int) -> int:
    """How many processes have `pid` as their parent (sshd: one per open connection)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    count += 1
    return count


@dataclass
class MemoryStep:
    sessions: int
    rss_kib: int
    threads: int
    fds: int
    seconds: float
    failures: int
    idle_cpu: float  # the bastion's CPU use with these sessions idle, in % of one core


async def memory_steps(setup: Setup, pid: int, steps: list[int], budget: float,
                       concurrency: int) -> tuple[dict[str, int], list[MemoryStep], list[str], float]:
    """Open idle PTY shells through the bastion in steps; the bastion's RSS after each step."""
    crowd = [(asyncssh.read_private_key(str(k)), asyncssh.read_certificate(str(c)))
             for k, c in (setup.crowd or [(setup.key, setup.cert)])]
    opened = 0
    live: list[tuple[asyncssh.SSHClientConnection, Any]] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal opened
        key, cert = crowd[opened % len(crowd)]
        opened += 1
        async with gate:
            conn = await asyncssh.connect(
                "127.0.0.1", setup.bastion_port, username="prod", client_keys=[(key, cert)],
                known_hosts=None, agent_path=None, config=None, encryption_algs=[AES],
            )
            try:
                proc = await conn.create_process(term_type="xterm", term_size=(80, 24),
                                                 encoding=None)
                prompt = await asyncio.wait_for(proc.stdout.read(256), 60)
                if not prompt:
                    raise RuntimeError("the shell closed at once")
            except BaseException:
                conn.close()
                raise
            live.append((conn, proc))

    await asyncio.sleep(1)
    before = proc_status(pid)
    results: list[MemoryStep] = []
    started = time.monotonic()
    try:
        for target in steps:
            t0 = time.monotonic()
            outcomes = await asyncio.gather(*(one() for _ in range(target - len(live))),
                                            return_exceptions=True)
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            errors += [f"{type(o).__name__}: {o}" for o in failed]
            seconds = time.monotonic() - t0
            await asyncio.sleep(2)  # let the sessions settle into idleness
            st = proc_status(pid)
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(IDLE_CPU_SECONDS)
            idle = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            results.append(MemoryStep(len(live), st["VmRSS"], st["Threads"], st["fds"], seconds,
                                      len(failed), idle))
            print(f"  memory step: {len(live)} live sessions ({len(failed)} failed) in "
                  f"{seconds:.1f} s, bastion VmRSS {st['VmRSS'] / 1024:.1f} MiB, "
                  f"{st['Threads']} threads, idle CPU {idle:.1f} % of a core", flush=True)
            if failed or time.monotonic() - started > budget:
                break
    finally:
        t_close = time.monotonic()
        for conn, _ in live:
            conn.close()
        await asyncio.gather(*(conn.wait_closed() for conn, _ in live), return_exceptions=True)
        close_seconds = time.monotonic() - t_close
    return before, results, errors, close_seconds


# --- the run ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of `pid` (all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TreeCpu:
    """CPU seconds used by a process and all its descendants, sampled every 100 ms.

    sshd's per-connection processes are short-lived and their time does not reliably reach the
    listener's cutime, so their own counters are read while they live; the last < 100 ms of a
    process that exits between two samples is lost (a few ms per bulk run).
    """

    def __init__(self, pid: int) -> None:
        self.root = pid
        self.seen: dict[tuple[int, int], float] = {}  # (pid, start time) -> CPU seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        parents: dict[int, int] = {}
        stats: dict[int, list[str]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
                    parents[int(entry)] = int(fields[1])
                    stats[int(entry)] = fields
        tick = os.sysconf("SC_CLK_TCK")
        for pid, fields in stats.items():
            ancestor = pid
            while ancestor not in (self.root, 0, 1) and ancestor in parents:
                ancestor = parents[ancestor]
            if ancestor == self.root:
                self.seen[(pid, int(fields[19]))] = (int(fields[11]) + int(fields[12])) / tick

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def __enter__(self) -> TreeCpu:
        self._sample()
        self.start = sum(self.seen.values())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def used(self) -> float:
        return sum(self.seen.values()) - self.start


def bench_world(root: Path, login: Login, procs: list[Any], relay_transport: str,
                crowd: int = 0) -> tuple[Any, Any, Any, Any, Setup]:
    """Target sshd, jump sshd, bastion, bare relay (with `relay_transport`), an approved
    certificate (and one for each of `crowd` more users); return them."""
    from harness import BastionProcess, World, control, control_json, free_port, make_key
    from sshd import Sshd

    from bastion.ca import CertificateAuthority

    users = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"]}
    users.update({f"load{n}": ["developer"] for n in range(crowd)})
    world = World(root=root / "bastion", port=free_port(), users=users)
    alice = world.key("alice")
    alice_pub = make_key(alice, "alice@test")
    upstream_ca = CertificateAuthority.load(world.root / "data" / "upstream_ca", "upstream CA")
    target = Sshd(root / "target", trusted_ca=upstream_ca.public_key_line(),
                  authorized_keys=(alice_pub,), extra="MaxStartups 2000\nMaxSessions 10\n")
    target.start()
    procs.append(target)
    jump = Sshd(root / "jump", authorized_keys=(alice_pub,), extra="MaxStartups 100\n")
    jump.start()
    procs.append(jump)
    world.target = target
    config = world.write_config()
    config.write_text(config.read_text().replace('login = "root"', f'login = "{login.name}"'))
    bastion = BastionProcess(world)
    bastion.start()
    procs.append(bastion)
    relay = PeerProcess([__file__, "--bare-relay", str(target.port), login.name, str(alice),
                         relay_transport])
    procs.append(relay)

    req = control_json(bastion, "alice", "request", "prod", "--reason", "bench", "--duration", "1h")
    if req["status"] != "approved":
        control_json(bastion, "bob", "approve", str(req["id"]))
    cert = root / "alice-cert.pub"
    cert.write_text(control(bastion, "alice", "cert", str(req["id"])).stdout)
    setup = Setup(login.name, alice, cert, target.port, jump.port, relay.port, world.port)
    for cipher in (CHACHA, AES):
        setup.configs[cipher] = client_config(root / f"ssh_config_{cipher[:6]}", alice, cipher)
    for n in range(crowd):
        name = f"load{n}"
        req = control_json(bastion, name, "request", "prod", "--reason", "bench", "--duration", "1h")
        control_json(bastion, "bob", "approve", str(req["id"]))
        path = root / f"{name}-cert.pub"
        path.write_text(control(bastion, name, "cert", str(req["id"])).stdout)
        setup.crowd.append((world.key(name), path))
    return target, jump, bastion, relay, setup


def stop_all(procs: list[Any]) -> None:
    """Stop the started processes, newest first."""
    for proc in reversed(procs):
        with contextlib.suppress(Exception):
            proc.stop()


PHASES = ("bulk", "echo", "login", "memory")


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--bare-relay":
        asyncio.run(_bare_relay(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=128, help="bulk output size per run")
    parser.add_argument("--runs", type=int, default=7, help="bulk runs per path and cipher")
    parser.add_argument("--samples", type=int, default=1000, help="keystrokes per path")
    parser.add_argument("--logins", type=int, default=20, help="logins per path")
    parser.add_argument("--sessions", type=int, default=1000, help="most concurrent sessions")
    parser.add_argument("--session-budget", type=float, default=180.0,
                        help="seconds allowed for opening sessions before the steps stop")
    parser.add_argument("--concurrency", type=int, default=16, help="session opens at once")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated phases to run, of {','.join(PHASES)}")
    parser.add_argument("--relay-transport", choices=("asyncssh", "bastion"), default="asyncssh",
                        help="the bare relay's SSH transport: stock asyncssh, or the bastion's "
                             "(bastion/ssh/transport.py)")
    args = parser.parse_args()
    phases = set(args.only.split(","))
    if not phases <= set(PHASES):
        parser.error(f"--only takes phases of {','.join(PHASES)}")

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the bastion and sshds
    t_begin = time.monotonic()
    login = make_login()
    procs: list[Any] = []
    bulk: dict[tuple[str, str], list[float]] = {}
    hop_cpu: dict[tuple[str, str], float] = {}  # CPU seconds per GiB through the middle hop
    echo: dict[str, list[float]] = {}
    logins: dict[str, list[float]] = {}
    mem: list[MemoryStep] = []
    mem_errors: list[str] = []
    before: dict[str, int] = {}
    after_close: dict[str, int] = {}
    close_seconds, left_upstream, log_lines, bastion_alive = 0.0, 0, [], True
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stops:
            # Stopped before the directory goes: the bastion writes into it until it stops.
            stops.callback(stop_all, procs)
            root = Path(tmp)
            root.chmod(0o711)  # sshd reads the authorized_keys file as the target login
            # 25 sessions per user at most: a bastion holds 32 live sessions per user.
            crowd = -(-args.sessions // 25) if "memory" in phases else 0
            target, jump, bastion, relay, setup = bench_world(
                root, login, procs, args.relay_transport, crowd)
            data = login.home / "bulk.txt"
            data.write_bytes(log_text(args.mib * MIB))
            data.chmod(0o644)
            size = args.mib * MIB
            assert jump.proc is not None and bastion.proc is not None
            hops = {"proxyjump": jump.proc.pid, "bare relay": relay.proc.pid,
                    "bastion": bastion.proc.pid}

            if "bulk" in phases:  # 1 + 5: bulk output, runs interleaved across the paths.
                print(f"bulk output: {args.mib} MiB x {args.runs} runs x 4 paths x 2 ciphers",
                      flush=True)
                for cipher in (CHACHA, AES):
                    for path in PATHS:  # warm-up (page cache, first logins)
                        bulk_rate(setup.command(path, cipher), f"head -c {MIB} {data}", MIB)
                    time.sleep(0.5)  # let the warm-up sessions end
                    cpu0 = {path: cpu_seconds(hops[path]) for path in ("bare relay", "bastion")}
                    with TreeCpu(hops["proxyjump"]) as jump_cpu:
                        for _ in range(args.runs):
                            for path in PATHS:
                                rate = bulk_rate(setup.command(path, cipher), f"cat {data}", size)
                                bulk.setdefault((cipher, path), []).append(rate)
                    gib = args.runs * size / (1024 * MIB)
                    for path in ("bare relay", "bastion"):
                        hop_cpu[(cipher, path)] = (cpu_seconds(hops[path]) - cpu0[path]) / gib
                    hop_cpu[(cipher, "proxyjump")] = jump_cpu.used / gib

            if "echo" in phases:  # 2: keystroke echo, the four sessions sampled in turn.
                print(f"keystroke echo: {args.samples} samples x 4 paths", flush=True)
                sessions = {path: EchoSession(setup.command(path, CHACHA, "-tt")) for path in PATHS}
                try:
                    for _ in range(20):  # warm-up
                        for s in sessions.values():
                            s.sample(b"w")
                    for s in sessions.values():
                        s.samples.clear()
                    for i in range(args.samples):
                        byte = bytes([97 + i % 26])
                        for s in sessions.values():
                            s.sample(byte)
                            time.sleep(0.002)
                finally:
                    for s in sessions.values():
                        s.close()
                echo = {path: s.samples for path, s in sessions.items()}

            if "login" in phases:  # 3: login to first output.
                print(f"login to first output: {args.logins} runs x 4 paths", flush=True)
                for path in PATHS:
                    login_time(setup.command(path, CHACHA))
                for _ in range(args.logins):
                    for path in PATHS:
                        logins.setdefault(path, []).append(login_time(setup.command(path, CHACHA)))

            if "memory" in phases:  # 4: memory per idle session, on a freshly started bastion.
                # A restart first: the bulk phase leaves freed heap behind that new sessions
                # would reuse without growing the RSS, which would flatter the figure.
                bastion.stop()
                bastion.start()
                steps = [n for n in (100, 250, 500, 1000, 2000, 5000) if n < args.sessions]
                steps.append(args.sessions)
                print(f"memory: idle PTY shells through a freshly started bastion in steps {steps}",
                      flush=True)
                assert bastion.proc is not None and target.proc is not None
                # One session first (a command, which ends by itself), so that the lazily
                # imported modules (pyte, the recorder) are in `before`.
                login_time(setup.command("bastion", AES))
                before, mem, mem_errors, close_seconds = asyncio.run(
                    memory_steps(setup, bastion.proc.pid, steps, args.session_budget,
                                 args.concurrency))
                # The clients have disconnected: wait for the bastion to end their sessions.
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    after_close = proc_status(bastion.proc.pid)
                    left_upstream = child_count(target.proc.pid)
                    if left_upstream == 0 and after_close["fds"] <= before["fds"] + 2:
                        break
                    time.sleep(0.5)
            assert bastion.proc is not None
            bastion_alive = bastion.proc.poll() is None
            log_lines = bastion.log.read_text(errors="replace").splitlines()
    finally:
        drop_login(login)
    total = time.monotonic() - t_begin
    load = os.getloadavg()

    # --- report -------------------------------------------------------------------------------
    print()
    print(f"target login: {login.note}; {os.cpu_count()} CPUs; load average at the end "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min); {total:.0f} s in all")
    names = {"direct": "direct OpenSSH", "proxyjump": "OpenSSH ProxyJump (-J, 2nd sshd)",
             "bare relay": "bare asyncssh relay, no recording", "bastion": "bastion, recording on"}
    if bulk:
        print()
        print(f"1. bulk output, MiB/s (median of {args.runs} runs of {args.mib} MiB log-like "
              "text; first byte to EOF)")
        print(f"   {'path':<34}{'chacha20-poly1305':>20}{'aes128-gcm':>14}")
        med = {key: statistics.median(v) for key, v in bulk.items()}
        for path in PATHS:
            spread = "  ".join(f"[{min(bulk[(c, path)]):.0f}-{max(bulk[(c, path)]):.0f}]"
                               for c in (CHACHA, AES))
            print(f"   {names[path]:<34}{med[(CHACHA, path)]:>20.1f}{med[(AES, path)]:>14.1f}"
                  f"   range {spread}")
        for label, a, b, goal in (
            ("bastion / ProxyJump", "bastion", "proxyjump", "budget >= 0.9x, moonshot 1.0x"),
            ("bastion / direct", "bastion", "direct", "-"),
            ("bare relay / ProxyJump", "bare relay", "proxyjump", "-"),
            ("bastion / bare relay (recording on / off)", "bastion", "bare relay",
             "budget >= 0.8x"),
        ):
            print(f"   ratio {label:<42} chacha20 {med[(CHACHA, a)] / med[(CHACHA, b)]:.2f}x"
                  f"   aes-gcm {med[(AES, a)] / med[(AES, b)]:.2f}x   ({goal})")
        print("   CPU of the middle hop, seconds per GiB moved (utime+stime of the relay process; "
              "for ProxyJump, of the")
        print("   jump sshd's per-connection processes; logins included; less sensitive to the "
              "machine's load than MiB/s):")
        for path in ("proxyjump", "bare relay", "bastion"):
            label = {"proxyjump": "jump sshd (ProxyJump)"}.get(path, names[path])
            print(f"   {label:<34}{hop_cpu[(CHACHA, path)]:>20.2f}{hop_cpu[(AES, path)]:>14.2f}")
        print(f"   ratio bastion / bare relay CPU{'':<12} chacha20 "
              f"{hop_cpu[(CHACHA, 'bastion')] / hop_cpu[(CHACHA, 'bare relay')]:.2f}x   aes-gcm "
              f"{hop_cpu[(AES, 'bastion')] / hop_cpu[(AES, 'bare relay')]:.2f}x   (budget <= 1.5x; "
              f"the bare relay's transport: {args.relay_transport})")
    if echo:
        print()
        print(f"2. keystroke echo (ssh -tt, chacha20, remote `cat` in raw mode), ms, "
              f"{args.samples} samples per path, interleaved")
        d50, d99 = statistics.median(echo["direct"]), pct(echo["direct"], 0.99)
        for path in PATHS:
            p50, p99 = statistics.median(echo[path]), pct(echo[path], 0.99)
            added = ""
            if path != "direct":
                paired = [a - b for a, b in zip(echo[path], echo["direct"], strict=True)]
                added = (f"   added p50 {p50 - d50:+.3f}  p99 {p99 - d99:+.3f}"
                         f"   (paired: p50 {statistics.median(paired):+.3f} "
                         f"p99 {pct(paired, 0.99):+.3f})")
            print(f"   {names[path]:<34} p50 {p50:6.3f}  p99 {p99:6.3f}  max {max(echo[path]):6.2f}"
                  f"{added}")
        print("   (goal for the bastion: added p50 < 1 ms, p99 < 2 ms; 'added' = percentile of "
              "the path minus that of direct;")
        print("   'paired' = percentile of the per-keystroke difference against the direct "
              "sample of the same round)")
    if logins:
        print()
        print(f"3. login to first output (`ssh ... 'echo x'`, wall time, chacha20), ms, "
              f"{args.logins} runs, interleaved")
        direct_login = statistics.median(logins["direct"])
        for path in PATHS:
            p50 = statistics.median(logins[path])
            print(f"   {names[path]:<34} p50 {p50:7.1f}  p90 {pct(logins[path], 0.9):7.1f}"
                  f"   ratio to direct {p50 / direct_login:.2f}x")
        print("   (goal for the bastion: <= 1.0x direct)")
    if mem or before:
        print()
        print(f"4. bastion memory, idle PTY shells (asyncssh clients in this process, "
              f"{args.concurrency} opens at once, fresh bastion)")
        print(f"   before (after one `echo x` session): VmRSS {before['VmRSS'] / 1024:.1f} MiB, "
              f"{before['Threads']} threads, {before['fds']} fds")
        prev = None
        for step in mem:
            per = (step.rss_kib - before["VmRSS"]) / step.sessions if step.sessions else 0.0
            slope = ""
            if prev is not None and step.sessions > prev.sessions:
                slope = (f"  marginal {(step.rss_kib - prev.rss_kib) / (step.sessions - prev.sessions):6.1f}"
                         " KiB/session")
            print(f"   {step.sessions:>5} sessions: VmRSS {step.rss_kib / 1024:7.1f} MiB  "
                  f"{per:6.1f} KiB/session{slope}  {step.threads} threads  {step.fds} fds  "
                  f"opened in {step.seconds:5.1f} s ({step.failures} failed); idle, the bastion "
                  f"uses {step.idle_cpu:.1f} % of a core")
            prev = step
        print("   (goal < 256 KiB/session at 1,000 sessions)")
        print(f"   all clients disconnected (SSH disconnect, in {close_seconds:.1f} s); up to 15 s "
              f"later: bastion VmRSS {after_close['VmRSS'] / 1024:.1f} MiB, "
              f"{after_close['Threads']} threads, {after_close['fds']} fds; {left_upstream} "
              "connections still open on the target sshd")
        if left_upstream:
            print("   ^ the bastion kept those sessions (and their upstream shells and recordings) "
                  "open after their clients left")
        for err in mem_errors[:5]:
            print(f"   session error: {err}")
    print()
    problems = [line for line in log_lines
                if re.search(r"Traceback|ERROR|Exception|session failed|internal error", line)]
    print(f"bastion: {'running' if bastion_alive else 'DIED'} at the end of the run; "
          f"{len(problems)} error lines in its log")
    for line in problems[:10]:
        print(f"   {line}")


if __name__ == "__main__":
    main()
