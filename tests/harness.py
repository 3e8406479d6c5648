"""Running the real bastion (`bastion serve`) and the real OpenSSH client in tests."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sshd import Sshd

from bastion.db.accounts import AccountNames
from recorder import generate_auditor_key, write_key_pair

REPO = Path(__file__).resolve().parent.parent


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, as systemd does; SIGKILL if it is still there after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_key(path: Path, comment: str = "") -> str:
    """Create an Ed25519 key pair with ssh-keygen; return the public key line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment or path.name, "-f", str(path)],
            check=True,
        )
    return Path(f"{path}.pub").read_text().strip()


@dataclass
class World:
    """A test bastion's directory: keys, config, and the values the config was written from."""

    root: Path
    port: int
    users: dict[str, list[str]] = field(default_factory=dict)
    extra_users: str = ""
    extra: str = ""
    webhook_url: str | None = None
    store_url: str = "sqlite:///state.db"
    target: Sshd | None = None
    server_extra: str = ""
    pending_ttl: str = "1h"

    @property
    def config(self) -> Path:
        return self.root / "bastion.toml"

    def key(self, user: str) -> Path:
        return self.root / "keys" / user

    def write_config(self) -> Path:
        """Write the config from the current fields."""
        users = []
        for name, roles in self.users.items():
            pub = make_key(self.key(name), f"{name}@test")
            users.append(
                f'[[users]]\nname = "{name}"\nroles = {json.dumps(roles)}\npublic_keys = ["{pub}"]\n'
            )
        webhook = ""
        if self.webhook_url:
            webhook = f'[[webhooks]]\nurl = "{self.webhook_url}"\n'
        if self.target is not None:
            address, host_key = f"127.0.0.1:{self.target.port}", self.target.host_key_line
        else:
            address, host_key = "127.0.0.1:1", make_key(self.root / "keys" / "target_host")
        auditor = self.root / "keys" / "auditor"
        if not auditor.exists():
            write_key_pair(auditor, generate_auditor_key())
        self.config.write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
public_host = "127.0.0.1"
data_dir = "{self.root / 'data'}"
state_store = "{self.store_url}"
pending_request_ttl = "{self.pending_ttl}"
bastion_id = "test"
{self.server_extra}

[certificates]
default_ttl = "1h"
max_ttl = "8h"

[recordings]
dir = "{self.root / 'recordings'}"
auditor_keys = ["{auditor}.pub"]

[[roles]]
name = "developer"
request = ["prod", "critical", "staging"]
max_duration = "4h"

[[roles]]
name = "contractor"
request = ["prod"]

[[roles]]
name = "approver"
approve = ["prod", "critical", "staging"]

[[roles]]
name = "auditor"
audit = ["*"]

{chr(10).join(users)}
{self.extra_users}

[[targets]]
name = "prod"
kind = "ssh"
address = "{address}"
login = "root"
host_key = "{host_key}"
approvals_required = 1

[[targets]]
name = "critical"
kind = "ssh"
address = "{address}"
login = "root"
host_key = "{host_key}"
approvals_required = 2

[[targets]]
name = "staging"
kind = "ssh"
address = "{address}"
login = "root"
host_key = "{host_key}"
approvals_required = 0

{webhook}
{self.extra}
"""
        )
        return self.config


def setup_databases(world: World, *targets: str) -> None:
    """Provision the masked views of SQL targets, as an operator does before the first session."""
    for name in targets:
        result = subprocess.run([sys.executable, "-m", "bastion.cli", "db", "setup", name,
                                 "--config", str(world.config)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"db setup {name}: {result.stdout}{result.stderr}"


def start_target(world: World) -> Sshd:
    """Start a real sshd that trusts the world's upstream CA, as the targets' host."""
    from bastion.ca import CertificateAuthority

    ca = CertificateAuthority.load(world.root / "data" / "upstream_ca", "upstream CA")
    sshd = Sshd(world.root / "sshd", trusted_ca=ca.public_key_line())
    sshd.start()
    world.target = sshd
    return sshd


class BastionProcess:
    """`bastion serve --config FILE` as a child process."""

    def __init__(self, world: World, *, file_size_limit: int | None = None) -> None:
        self.world = world
        self.log = world.root / "bastion.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.file_size_limit = file_size_limit  # RLIMIT_FSIZE: makes large writes fail (EFBIG)

    def _limits(self) -> None:
        if self.file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size_limit, self.file_size_limit))

    def start(self, timeout: float = 20.0) -> None:
        """Start the bastion and wait until it accepts SSH connections."""
        marker = "bastion listening on"
        before = self.log.read_text().count(marker) if self.log.exists() else 0
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion.cli", "serve", "--config", str(self.world.config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=self._limits if self.file_size_limit is not None else None,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bastion exited early:\n{self.log.read_text()}")
            if self.log.read_text().count(marker) > before:
                return
            time.sleep(0.05)
        raise RuntimeError(f"bastion did not start:\n{self.log.read_text()}")

    def sighup(self, wait_for: str = "config reload") -> None:
        """Send SIGHUP and wait until the log shows the reload outcome."""
        assert self.proc is not None
        before = self.log.read_text().count(wait_for)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.log.read_text().count(wait_for) <= before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {wait_for!r} in the log:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop with SIGTERM, as systemd does."""
        stop_process(self.proc)

    def rss_mib(self) -> float:
        """The running bastion's resident memory (VmRSS), in MiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no VmRSS for {self.proc.pid}")

    def known_hosts(self) -> Path:
        """A known_hosts file with the bastion's host key."""
        path = self.world.root / "known_hosts"
        host_pub = (self.world.root / "data" / "host_key.pub").read_text().strip()
        path.write_text(f"[127.0.0.1]:{self.world.port} {host_pub}\n")
        return path


@contextlib.contextmanager
def running_bastion(world: World, extra: Callable[[Sshd], str] | None = None
                    ) -> Iterator[BastionProcess]:
    """The world's target sshd, then the bastion on the world's config (written now, with
    `extra(target)` appended to the world's extra config if given); both are stopped
    afterwards."""
    target = start_target(world)
    try:
        if extra is not None:
            world.extra += extra(target)
        world.write_config()
        proc = BastionProcess(world)
        proc.start()
        try:
            yield proc
        finally:
            proc.stop()
    finally:
        target.stop()


def account_names(bastion: BastionProcess) -> AccountNames:
    """How the bastion names its database grant accounts (its installation's tag, from its
    SQLite state store)."""
    with contextlib.closing(sqlite3.connect(bastion.world.root / "data" / "state.db")) as db:
        (tag,) = db.execute("SELECT tag FROM installation").fetchone()
    return AccountNames(tag)


def grant_account(bastion: BastionProcess, user: str, request_id: int) -> str:
    """The database account of a grant, as the bastion names it."""
    return account_names(bastion).account(user, request_id)


def ended_session(bastion: BastionProcess, session_id: str, timeout: float = 10) -> dict[str, Any]:
    """The session once its end is in the store. The client hears of the end first; the
    bastion then closes the recording and writes the end (the recording is whole after that)."""
    session = wait_for(lambda: next(
        (s for s in control_json(bastion, "carol", "sessions", "--limit", "500")
         if s["id"] == session_id and s["status"] != "live"), None), timeout)
    assert session, f"session {session_id} did not end"
    return dict(session)


def running_statements(bastion: BastionProcess, user: str, engine: str = "postgres", *,
                       database: str | None = None, request_id: int | None = None) -> list[str]:
    """The statements `user`'s grant accounts of this bastion (only the grant `request_id`'s, if
    given) run on the test server of `engine` right now, in `database` (or its masked twin on
    MySQL) if given. Other test modules run the same statements on the same servers, but as
    their own bastions' accounts."""
    from sqldb import MY_HOST, MY_PORT, PG_ADMIN  # psycopg and pymysql only where needed

    names = account_names(bastion)
    wanted = names.account(user, request_id) if request_id is not None else None
    prefix = f"{names.prefix}{user}_r"
    if engine == "postgres":
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            rows = admin.execute("SELECT usename, query FROM pg_stat_activity WHERE state = "
                                 "'active' AND (%s::text IS NULL OR datname = %s)",
                                 (database, database)).fetchall()
    else:
        import pymysql

        my = pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", autocommit=True)
        try:
            with my.cursor() as cur:
                cur.execute("SELECT USER, INFO FROM information_schema.PROCESSLIST WHERE "
                            "COMMAND = 'Query' AND (%s IS NULL OR DB IN (%s, %s))",
                            (database, database, f"{database}_masked"))
                rows = list(cur.fetchall())
        finally:
            my.close()
    return [str(query) for account, query in rows if query and (
        str(account) == wanted if wanted is not None else str(account).startswith(prefix))]


def ssh(
    bastion: BastionProcess,
    key: Path,
    login: str,
    command: Sequence[str] = (),
    *,
    cert: Path | None = None,
    input: bytes | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run the real `ssh` client against the bastion, with only the given key (and certificate)."""
    args = ssh_argv(bastion, key, login, cert=cert)
    if command:
        args.append(shlex.join(command))  # ssh joins its arguments with spaces: quote them
    return subprocess.run(args, input=input.decode() if input else None, capture_output=True,
                          text=True, timeout=timeout)


def ssh_argv(bastion: BastionProcess, key: Path, login: str, *, cert: Path | None = None,
             options: Sequence[str] = ()) -> list[str]:
    """The `ssh` command line for LOGIN@bastion with only `key` (and `cert`); append a command."""
    args = [
        "ssh", "-F", "/dev/null", "-p", str(bastion.world.port),
        "-o", f"UserKnownHostsFile={bastion.known_hosts()}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-i", str(key), *options,
    ]
    if cert is not None:
        args += ["-o", f"CertificateFile={cert}"]
    args.append(f"{login}@127.0.0.1")
    return args


def control(bastion: BastionProcess, user: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run `ssh access@bastion COMMAND` as a user."""
    return ssh(bastion, bastion.world.key(user), "access", command)


def control_json(bastion: BastionProcess, user: str, *command: str) -> Any:
    """Run a control command with --json and return the parsed output (it must succeed)."""
    result = control(bastion, user, *command, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(check: Callable[[], Any], timeout: float = 10) -> Any:
    """Poll `check` until it returns something true or `timeout` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)
