"""`bastion demo`: a self-contained bastion with demo users, targets and keys on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import asyncssh

from bastion.ca import CertificateAuthority, load_or_create_key
from bastion.config import load_config
from bastion.db.grants import setup_target
from bastion.demo_data import seed_mysql, seed_postgres, target_toml
from bastion.demo_shell import DemoShell
from bastion.errors import BastionError
from bastion.server import Bastion

__all__ = ["prepare_demo", "run_demo"]

log = logging.getLogger("bastion.demo")

USERS = {
    "alice": ["developer"],
    "bob": ["approver"],
    "carol": ["auditor"],
}


def _toml_str(value: str) -> str:
    return json.dumps(value)


def write_demo_config(
    directory: Path, port: int, shell_port: int, shell_host_key: str, databases: str = ""
) -> Path:
    """Write DIR/bastion.toml: a real config that `bastion serve` runs."""
    keys = directory / "keys"
    users = []
    for name, roles in USERS.items():
        pub = (keys / f"{name}.pub").read_text().strip()
        users.append(
            f"[[users]]\nname = {_toml_str(name)}\nroles = {json.dumps(roles)}\n"
            f"public_keys = [{_toml_str(pub)}]\n"
        )
    text = f"""\
# Demo config written by `bastion demo`. A real config: `bastion serve --config {directory / 'bastion.toml'}`.

[server]
listen = "127.0.0.1:{port}"
public_host = "127.0.0.1"
data_dir = {_toml_str(str(directory / 'data'))}
state_store = "sqlite:///state.db"
pending_request_ttl = "24h"

[certificates]
default_ttl = "1h"
max_ttl = "8h"

[recordings]
dir = {_toml_str(str(directory / 'recordings'))}
auditor_keys = [{_toml_str(str(keys / 'auditor.pub'))}]

[[roles]]
name = "developer"
request = ["demo-*"]
max_duration = "4h"
file_transfer = "download"

[[roles]]
name = "approver"
approve = ["demo-*"]

[[roles]]
name = "auditor"
audit = ["*"]

{chr(10).join(users)}
[[targets]]
name = "demo-shell"
kind = "ssh"
description = "a real shell on a small SSH server that trusts the upstream CA"
address = "127.0.0.1:{shell_port}"
login = "demo"
host_key = {_toml_str(shell_host_key)}
approvals_required = 1
file_transfer = "download"
max_file_size = "100 MiB"
{databases}"""
    path = directory / "bastion.toml"
    path.write_text(text)
    return path


def _user_keys(directory: Path) -> Path:
    directory = directory.resolve()
    keys = directory / "keys"
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in USERS:
        path = keys / name
        if not path.exists():
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{name}@demo")
            key.write_private_key(str(path))
            os.chmod(path, 0o600)
            key.write_public_key(str(path) + ".pub")
    auditor = keys / "auditor"
    if not auditor.exists():
        # The auditor's recording key pair; the recorder package owns its format.
        from recorder.keys import generate_auditor_key, write_key_pair

        write_key_pair(auditor, generate_auditor_key(), comment="carol (demo auditor)")
    return directory


def _demo_files(directory: Path) -> Path:
    """What the demo target's SFTP server serves: a log to fetch through the bastion."""
    files = directory / "demo-shell" / "files"
    files.mkdir(parents=True, exist_ok=True)
    log_file = files / "app.log"
    if not log_file.exists():
        log_file.write_text("".join(f"2026-12-07T10:{n // 60:02d}:{n % 60:02d}Z INFO request {n} "
                                    f"served in {n % 17 + 3} ms\n" for n in range(600)))
    return files


def _seed_databases(directory: Path) -> str:
    """Seed the demo databases whose servers are reachable; return their [[targets]] entries."""
    entries = []
    for seed in (seed_postgres, seed_mysql):
        try:
            db = seed(directory / "secrets")
        except Exception as exc:  # a half-usable server must not stop the rest of the demo
            log.warning("demo database not set up: %s", exc)
            continue
        if db is not None:
            entries.append(target_toml(db))
    return "".join(entries)


async def prepare_demo(directory: Path, port: int) -> tuple[Bastion, DemoShell]:
    """Create keys, CAs and config under `directory`; start the demo shell and the bastion."""
    directory = await asyncio.to_thread(_user_keys, directory)
    data = directory / "data"
    upstream_ca = CertificateAuthority.load(data / "upstream_ca", "upstream CA")
    shell_key = load_or_create_key(directory / "demo-shell" / "host_key", "demo-shell host key")
    files = await asyncio.to_thread(_demo_files, directory)
    shell = DemoShell(shell_key, upstream_ca.public_key, login="demo", files=files)
    await shell.start()
    databases = await asyncio.to_thread(_seed_databases, directory)
    path = write_demo_config(directory, port, shell.port,
                             shell_key.export_public_key().decode().strip(), databases)
    bastion = await Bastion.open(load_config(path))
    try:
        for target in bastion.config.targets:
            if target.kind != "ssh":  # as an operator would: `bastion db setup TARGET`
                await asyncio.to_thread(setup_target, target, bastion.masking_key, apply=True)
        await bastion.start()
    except BaseException as exc:
        await bastion.stop()
        await shell.stop()
        if isinstance(exc, OSError):  # e.g. the port is taken: say so, as `bastion serve` does
            raise BastionError(f"cannot start the demo on port {port}: "
                               f"{exc.strerror or exc}") from None
        raise
    _write_manifest(directory, bastion, path)
    return bastion, shell


def _write_manifest(directory: Path, bastion: Bastion, config_path: Path) -> dict[str, Any]:
    port = bastion.frontdoor.port
    known_hosts = directory / "known_hosts"
    host_pub = bastion.host_key.export_public_key().decode().strip()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    config = bastion.config
    manifest = {
        "host": "127.0.0.1",
        "port": port,
        "known_hosts": str(known_hosts),
        "config": str(config_path),
        "recordings_dir": str(config.recordings.dir),
        "auditor_key": str(directory / "keys" / "auditor"),
        "targets": [t.name for t in config.targets],
        "users": {
            name: {"key": str(directory / "keys" / name), "roles": roles}
            for name, roles in USERS.items()
        },
    }
    (directory / "demo.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def walkthrough(directory: Path, port: int, targets: list[str] | None = None) -> str:
    """The commands a newcomer runs, ready to paste."""
    d = directory.resolve()
    ssh = f"ssh -p {port} -o UserKnownHostsFile={d}/known_hosts"
    return f"""
Bastion demo running on 127.0.0.1:{port}  (config: {d}/bastion.toml; Ctrl-C stops it)

1. alice asks for access, with a reason:
   {ssh} -i {d}/keys/alice access@127.0.0.1 request demo-shell --reason "INC-42: look at logs" --duration 30m
2. bob sees and approves it (alice cannot approve her own request):
   {ssh} -i {d}/keys/bob access@127.0.0.1 requests --all
   {ssh} -i {d}/keys/bob access@127.0.0.1 approve 1 --comment "ok for 30m"
3. alice fetches her certificate (OpenSSH picks up KEY-cert.pub next to KEY):
   {ssh} -i {d}/keys/alice access@127.0.0.1 cert > {d}/keys/alice-cert.pub
   ssh-keygen -L -f {d}/keys/alice-cert.pub
4. alice opens the target through the bastion, and fetches a file from it (audited, recorded):
   {ssh} -i {d}/keys/alice demo-shell@127.0.0.1
   sftp -P {port} -o UserKnownHostsFile={d}/known_hosts -i {d}/keys/alice demo-shell@127.0.0.1:app.log {d}/
5. carol (auditor) reads the audit trail and the sessions:
   {ssh} -i {d}/keys/carol access@127.0.0.1 audit
   {ssh} -i {d}/keys/carol access@127.0.0.1 sessions

Machine-readable: add --json to any command. Everything is described in {d}/demo.json.
""" + _sql_walkthrough(ssh, d, [t for t in (targets or []) if t != "demo-shell"])


def _sql_walkthrough(ssh: str, d: Path, databases: list[str]) -> str:
    if not databases:
        return ("\nNo PostgreSQL or MySQL reachable (BASTION_DEMO_PG / BASTION_DEMO_MYSQL): "
                "no SQL demo targets.\n")
    db = databases[0]
    return f"""
SQL targets: {', '.join(databases)} (customers: email, ssn and card_number are masked)
   {ssh} -i {d}/keys/alice access@127.0.0.1 request {db} --reason "INC-43: check an order"
   {ssh} -i {d}/keys/bob access@127.0.0.1 approve 2
   {ssh} -i {d}/keys/alice access@127.0.0.1 cert 2 > {d}/keys/alice-cert.pub
   {ssh} -i {d}/keys/alice {db}@127.0.0.1                 (a SQL console)
   {ssh} -i {d}/keys/alice {db}@127.0.0.1 "SELECT * FROM customers"
   {ssh} -i {d}/keys/alice {db}@127.0.0.1 -- --csv "SELECT name, ssn FROM customers"
   {ssh} -i {d}/keys/carol access@127.0.0.1 queries
"""


async def run_demo(directory: Path, port: int) -> int:
    """Run the demo until Ctrl-C."""
    bastion, shell = await prepare_demo(directory, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: bastion.frontdoor.spawn(bastion.reload()))
    print(walkthrough(directory, bastion.frontdoor.port,
                      [t.name for t in bastion.config.targets]), flush=True)
    try:
        await stop.wait()
    finally:
        print("stopping the demo", flush=True)
        await bastion.stop()
        await shell.stop()
    return 0
