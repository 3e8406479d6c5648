"""Audited file transfer through the bastion's own SFTP, with the real sftp, scp, rsync and sshd.

The target `files` allows both directions (1 MiB per file, 3 MiB per session); the role `mover`
grants both, `reader` downloads only; `developer` grants none (and `prod` allows none).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    ended_session,
    free_port,
    start_target,
    wait_for,
)

from bastion.config import load_config
from bastion.errors import ConfigError
from bastion.policy import transfer_refusal, transfer_session_refusal
from bastion.ssh.file_transfer import TransferServer, open_directions, size_text
from recorder import FileDataEvent, MarkerEvent, RecordingReader, load_auditor_private_key

USERS = {"alice": ["mover"], "dave": ["reader"], "erin": ["developer"],
         "bob": ["approver", "files-approver"], "frank": ["approver"], "carol": ["auditor"]}
KIB = 1024


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIa6Ekx8mEqeYRbgmMPrdtJxX7UPjjTlJWi3hc1tClDe"


def _extra(port: int, host_key: str) -> str:
    return f"""
[[roles]]
name = "mover"
request = ["files", "prod"]
file_transfer = "both"

[[roles]]
name = "reader"
request = ["files"]
file_transfer = "download"

[[roles]]
name = "files-approver"
approve = ["files"]

[[targets]]
name = "files"
kind = "ssh"
address = "127.0.0.1:{port}"
login = "root"
host_key = "{host_key}"
approvals_required = 1
file_transfer = "both"
max_file_size = "1 MiB"
max_transfer_size = "3 MiB"
"""


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("files"), port=free_port(), users=dict(USERS))
    target = start_target(world)
    world.extra = _extra(target.port, target.host_key_line)
    world.write_config()
    proc = BastionProcess(world)
    proc.start()
    yield proc
    proc.stop()
    target.stop()


def _cert(bastion: BastionProcess, user: str, target: str) -> Path:
    req = control_json(bastion, user, "request", target, "--reason", "INC-11: heap dump")
    control_json(bastion, "bob", "approve", str(req["id"]))
    path = bastion.world.root / f"{user}-{target}-{req['id']}-cert.pub"
    path.write_text(control(bastion, user, "cert", str(req["id"])).stdout)
    return path


def _options(bastion: BastionProcess, user: str, cert: Path) -> list[str]:
    return ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={bastion.known_hosts()}", "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none", "-i", str(bastion.world.key(user)),
            "-o", f"CertificateFile={cert}"]


def _sftp(bastion: BastionProcess, user: str, target: str, cert: Path, commands: str,
          tmp: Path) -> subprocess.CompletedProcess[str]:
    batch = tmp / f"batch-{time.monotonic_ns()}"
    batch.write_text(commands)
    return subprocess.run(["sftp", *_options(bastion, user, cert), "-P", str(bastion.world.port),
                           "-b", str(batch), f"{target}@127.0.0.1"],
                          capture_output=True, text=True, timeout=60)


def _events(bastion: BastionProcess, kind: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = control_json(bastion, "carol", "audit", "--kind", kind,
                                                  "--limit", "500")
    return found


def _recording(bastion: BastionProcess, session_id: str) -> list[object]:
    session = ended_session(bastion, session_id)
    identity = load_auditor_private_key(bastion.world.root / "keys" / "auditor")
    with RecordingReader(session["recording"], identity) as reader:
        events = list(reader)
        assert not reader.cut_off
    return events


@pytest.fixture()
def place(tmp_path: Path) -> tuple[Path, Path]:
    """A directory on the target (the target is this machine's sshd) and one of the user's."""
    remote, local = tmp_path / "on-target", tmp_path / "mine"
    remote.mkdir()
    local.mkdir()
    return remote, local


# Decisions, without sockets -------------------------------------------------------------------

def test_open_flags_say_which_direction() -> None:
    assert open_directions(asyncssh.FXF_READ) == {"download"}
    assert open_directions(asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC) == {"upload"}
    assert open_directions(asyncssh.FXF_READ | asyncssh.FXF_WRITE) == {"download", "upload"}
    assert open_directions(asyncssh.FXF_APPEND) == {"upload"}
    assert size_text(1 << 20) == "1 MiB" and size_text(1500) == "1,500 bytes"


def test_every_file_system_method_of_asyncssh_is_relayed_or_refused() -> None:
    """asyncssh's SFTPServer serves the bastion's own disk by default: each method that could
    touch it is the bastion's own, and what is not relayed is refused."""
    pure = {"channel", "connection", "env", "logger", "convert_attrs", "format_user",
            "format_group", "format_longname", "reverse_map_path"}
    for name in dir(asyncssh.SFTPServer):
        if name.startswith("_") or name in pure:
            continue
        assert getattr(TransferServer, name) is not getattr(asyncssh.SFTPServer, name), name


def test_policy_needs_the_target_and_a_role(tmp_path: Path) -> None:
    world = World(root=tmp_path, port=2222, users=dict(USERS))
    world.extra = _extra(22, HOST_KEY)
    config = load_config(world.write_config())
    files, prod = config.target("files"), config.target("prod")
    assert files is not None and prod is not None
    assert transfer_refusal(config, "alice", files, "upload") is None
    assert transfer_refusal(config, "dave", files, "download") is None
    assert "none of your roles allows uploads" in (transfer_refusal(config, "dave", files, "upload")
                                                    or "")
    assert "downloads are not allowed on prod" in (transfer_refusal(config, "alice", prod,
                                                                    "download") or "")
    assert "none of your roles" in (transfer_refusal(config, "erin", files, "download") or "")
    assert transfer_session_refusal(config, "dave", files) is None  # downloads only
    assert "none of your roles allows file transfer through files (the target allows \"both\")" \
        in (transfer_session_refusal(config, "erin", files) or "")
    assert "not allowed on prod" in (transfer_session_refusal(config, "alice", prod) or "")
    assert files.max_file_size == 1 << 20 and files.max_transfer_size == 3 << 20


@pytest.mark.parametrize(("setting", "problem"), [
    ('file_transfer = "sideways"', 'must be "download", "upload" or "both"'),
    ('max_file_size = "ten"', 'must be a size such as'),
    ("max_file_size = 0", "at least 1 byte"),
])
def test_bad_transfer_settings_are_config_errors(tmp_path: Path, setting: str,
                                                 problem: str) -> None:
    world = World(root=tmp_path, port=2222, users={"bob": ["approver"], "dave": ["approver"]})
    world.extra = f"""
[[targets]]
name = "odd"
kind = "ssh"
address = "127.0.0.1:22"
login = "root"
host_key = "{HOST_KEY}"
approvals_required = 1
{setting}
"""
    with pytest.raises(ConfigError, match=problem):
        load_config(world.write_config())


# Through the front door, with the real clients ------------------------------------------------

def test_sftp_downloads_and_uploads_are_audited_hashed_and_recorded(
        bastion: BastionProcess, place: tuple[Path, Path]) -> None:
    remote, local = place
    dump = os.urandom(700 * KIB)
    (remote / "heap.hprof").write_bytes(dump)
    fix = os.urandom(300 * KIB) + b"\x00end"
    (local / "hotfix.py").write_bytes(fix)
    cert = _cert(bastion, "alice", "files")
    result = _sftp(bastion, "alice", "files", cert,
                   f"get {remote}/heap.hprof {local}/heap.hprof\n"
                   f"put {local}/hotfix.py {remote}/hotfix.py\n"
                   f"mkdir {remote}/release\n"
                   f"rename {remote}/hotfix.py {remote}/release/hotfix.py\n"
                   f"ls {remote}/release\n"
                   f"rm {remote}/heap.hprof\n", local)
    assert result.returncode == 0, result.stderr
    assert (local / "heap.hprof").read_bytes() == dump
    assert (remote / "release" / "hotfix.py").read_bytes() == fix
    assert not (remote / "heap.hprof").exists()
    assert "hotfix.py" in result.stdout

    download = next(e for e in _events(bastion, "transfer.download")
                    if e["details"]["path"] == f"{remote}/heap.hprof")  # type: ignore[index]
    details = download["details"]
    assert isinstance(details, dict)
    assert details["bytes"] == len(dump) and details["whole"] is True
    assert details["sha256"] == hashlib.sha256(dump).hexdigest()
    assert download["actor"] == "alice" and download["target"] == "files"
    upload = next(e["details"] for e in _events(bastion, "transfer.upload")
                  if e["details"]["path"] == f"{remote}/hotfix.py")  # type: ignore[index]
    assert isinstance(upload, dict)
    assert upload["sha256"] == hashlib.sha256(fix).hexdigest() and upload["bytes"] == len(fix)
    changes = {e["kind"]: e["details"] for e in _events(bastion, "transfer.mkdir")
               + _events(bastion, "transfer.rename") + _events(bastion, "transfer.remove")}
    assert changes["transfer.mkdir"] == {"path": f"{remote}/release"}
    assert changes["transfer.rename"] == {"path": f"{remote}/hotfix.py",
                                          "to": f"{remote}/release/hotfix.py"}
    assert changes["transfer.remove"] == {"path": f"{remote}/heap.hprof"}

    session_id = str(download["session_id"])
    session = ended_session(bastion, session_id)
    assert session["kind"] == "sftp" and session["status"] == "ended"
    events = _recording(bastion, session_id)
    downloaded = b"".join(e.data for e in events if isinstance(e, FileDataEvent) and not e.upload)
    uploaded = b"".join(e.data for e in events if isinstance(e, FileDataEvent) and e.upload)
    assert downloaded == dump and uploaded == fix
    # Each piece names its file and where it goes: the file can be rebuilt from the recording.
    rebuilt = bytearray(len(dump))
    for e in events:
        if isinstance(e, FileDataEvent) and not e.upload:
            assert e.file == 1
            rebuilt[e.offset:e.offset + len(e.data)] = e.data
    assert bytes(rebuilt) == dump
    assert {e.file for e in events if isinstance(e, FileDataEvent) and e.upload} == {2}
    markers = [e.label for e in events if isinstance(e, MarkerEvent)]
    assert any(f"download #1 {remote}/heap.hprof: {len(dump):,} bytes, sha256 "
               f"{hashlib.sha256(dump).hexdigest()}" in m for m in markers), markers
    assert any(f"rename {remote}/hotfix.py -> {remote}/release/hotfix.py" in m for m in markers)


def test_scp_speaks_sftp_and_legacy_scp_and_rsync_are_refused(
        bastion: BastionProcess, place: tuple[Path, Path]) -> None:
    remote, local = place
    data = os.urandom(64 * KIB)
    (remote / "app.log").write_bytes(data)
    cert = _cert(bastion, "alice", "files")
    options = [*_options(bastion, "alice", cert), "-P", str(bastion.world.port)]
    ok = subprocess.run(["scp", *options, f"files@127.0.0.1:{remote}/app.log", str(local)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert (local / "app.log").read_bytes() == data
    legacy = subprocess.run(["scp", "-O", *options, f"files@127.0.0.1:{remote}/app.log",
                             str(local / "legacy.log")], capture_output=True, text=True, timeout=60)
    assert legacy.returncode != 0 and not (local / "legacy.log").exists()
    assert "use sftp or scp (without -O)" in legacy.stderr
    ssh = " ".join(["ssh", *_options(bastion, "alice", cert), "-p", str(bastion.world.port)])
    rsync = subprocess.run(["rsync", "-e", ssh, f"files@127.0.0.1:{remote}/app.log",
                            str(local / "rsynced.log")], capture_output=True, text=True, timeout=60)
    assert rsync.returncode != 0 and not (local / "rsynced.log").exists()
    assert "use sftp or scp (without -O)" in rsync.stderr
    assert any(e["details"]["path"] == f"{remote}/app.log"  # type: ignore[index]
               for e in _events(bastion, "transfer.download"))


def test_a_download_only_role_reads_but_changes_nothing(
        bastion: BastionProcess, place: tuple[Path, Path]) -> None:
    remote, local = place
    (remote / "config.yml").write_text("replicas: 3\n")
    (local / "evil.sh").write_text("echo pwned\n")
    cert = _cert(bastion, "dave", "files")
    got = _sftp(bastion, "dave", "files", cert,
                f"get {remote}/config.yml {local}/config.yml\n", local)
    assert got.returncode == 0, got.stderr
    assert (local / "config.yml").read_text() == "replicas: 3\n"
    for command in (f"put {local}/evil.sh {remote}/evil.sh", f"mkdir {remote}/new",
                    f"rm {remote}/config.yml", f"rename {remote}/config.yml {remote}/x",
                    f"chmod 777 {remote}/config.yml"):
        refused = _sftp(bastion, "dave", "files", cert, command + "\n", local)
        assert refused.returncode != 0, command
        assert "bastion: none of your roles allows uploads through files" in refused.stderr, \
            refused.stderr
    assert sorted(p.name for p in remote.iterdir()) == ["config.yml"]
    assert (remote / "config.yml").read_text() == "replicas: 3\n"
    assert (remote / "config.yml").stat().st_mode & 0o777 != 0o777
    reasons = [e["details"]["reason"] for e in _events(bastion, "transfer.refused")  # type: ignore[index]
               if e["actor"] == "dave"]
    assert reasons and all("none of your roles allows uploads through files" in str(r)
                           for r in reasons)


def test_without_a_role_or_on_a_target_that_allows_none_sftp_is_refused_with_why(
        bastion: BastionProcess, place: tuple[Path, Path]) -> None:
    remote, local = place
    (remote / "secret").write_text("s3cret\n")
    cert = _cert(bastion, "erin", "prod")
    erin = _sftp(bastion, "erin", "prod", cert, f"get {remote}/secret {local}/secret\n", local)
    assert erin.returncode != 0 and not (local / "secret").exists()
    assert "bastion: file transfer is not allowed on prod (its file_transfer setting is off)" \
        in erin.stderr
    cert = _cert(bastion, "alice", "prod")  # alice's role would allow it; prod does not
    alice = _sftp(bastion, "alice", "prod", cert, f"get {remote}/secret {local}/secret\n", local)
    assert alice.returncode != 0 and not (local / "secret").exists()
    assert "not allowed on prod" in alice.stderr
    # The client is told (and let go) first; the refusal is audited right after.
    def refused() -> list[dict[str, object]]:
        return [e for e in _events(bastion, "transfer.refused") if e["target"] == "prod"]

    assert wait_for(lambda: {e["actor"] for e in refused()} >= {"erin", "alice"}), refused()


def test_limits_per_file_and_per_session_say_which(
        bastion: BastionProcess, place: tuple[Path, Path]) -> None:
    remote, local = place
    (local / "big.bin").write_bytes(os.urandom(1024 * KIB + 1))
    for n in range(4):
        (remote / f"part{n}").write_bytes(os.urandom(900 * KIB))
    cert = _cert(bastion, "alice", "files")
    big = _sftp(bastion, "alice", "files", cert, f"put {local}/big.bin {remote}/big.bin\n", local)
    assert big.returncode != 0
    assert "the upload limit per file (1 MiB, max_file_size) was reached" in big.stderr, big.stderr
    parts = _sftp(bastion, "alice", "files", cert,
                  "".join(f"get {remote}/part{n} {local}/part{n}\n" for n in range(4)), local)
    assert parts.returncode != 0
    assert "the limit per session (3 MiB, max_transfer_size) was reached" in parts.stderr, \
        parts.stderr
    assert all((local / f"part{n}").read_bytes() == (remote / f"part{n}").read_bytes()
               for n in range(3))
    uploads = [e["details"] for e in _events(bastion, "transfer.upload")
               if e["details"]["path"] == f"{remote}/big.bin"]  # type: ignore[index]
    assert uploads and all(u["bytes"] <= 1024 * KIB for u in uploads)  # type: ignore[index]


def test_revoke_ends_an_open_sftp_session_with_the_reason(
        bastion: BastionProcess, place: tuple[Path, Path]) -> None:
    remote, _ = place
    req = control_json(bastion, "alice", "request", "files", "--reason", "INC-11: revoke")
    control_json(bastion, "bob", "approve", str(req["id"]))
    cert = bastion.world.root / "alice-revoked-cert.pub"
    cert.write_text(control(bastion, "alice", "cert", str(req["id"])).stdout)
    proc = subprocess.Popen(["sftp", *_options(bastion, "alice", cert), "-P",
                             str(bastion.world.port), "files@127.0.0.1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdin is not None
        proc.stdin.write(f"ls {remote}\n")
        proc.stdin.flush()
        live = wait_for(lambda: [s for s in control_json(bastion, "carol", "sessions", "--live")
                                 if s["kind"] == "sftp" and s["user"] == "alice"])
        control_json(bastion, "alice", "revoke", str(req["id"]))
        started = time.monotonic()
        _, err = proc.communicate(timeout=10)
        took = time.monotonic() - started
    finally:
        proc.kill()
    assert took < 3, took
    assert "session ended" in err and "revoked" in err, err
    ended = wait_for(lambda: [s for s in control_json(bastion, "carol", "sessions", "--limit",
                                                      "500") if s["id"] == live[0]["id"]
                              and s["status"] != "live"])
    assert "revoked" in str(ended[0]["end_reason"])


async def test_the_tui_shows_each_transfer_in_the_session_view(
        bastion: BastionProcess, place: tuple[Path, Path]) -> None:
    from test_tui_screens import replay_ready, rows
    from textual.widgets import DataTable

    from tui.app import BastionTUI
    from tui.sources import LocalSource

    remote, local = place
    payload = os.urandom(5000)
    (remote / "report.csv").write_bytes(payload)
    cert = _cert(bastion, "alice", "files")
    done = _sftp(bastion, "alice", "files", cert,
                 f"get {remote}/report.csv {local}/report.csv\nmkdir {remote}/out\n", local)
    assert done.returncode == 0, done.stderr
    session_id = str(next(e["session_id"] for e in _events(bastion, "transfer.download")
                          if e["details"]["path"] == f"{remote}/report.csv"))  # type: ignore[index]
    ended_session(bastion, session_id)  # its recording closed, with the last markers in it
    app = BastionTUI(LocalSource(bastion.world.config), bastion.world.root / "keys" / "auditor",
                     refresh_interval=3600)
    async with app.run_test(size=(160, 40)) as pilot:
        replay = await replay_ready(app, pilot, session_id)
        await pilot.press("i")
        entries = [row[1] for row in rows(replay.query_one("#events", DataTable))]
    digest = hashlib.sha256(payload).hexdigest()
    assert any(f"sftp: download #1 {remote}/report.csv: 5,000 bytes, sha256 {digest}" in e
               for e in entries), entries
    assert any(f"sftp: mkdir {remote}/out" in e for e in entries), entries


async def test_revoke_with_a_file_open_still_ends_and_audits_the_session(
        bastion: BastionProcess, place: tuple[Path, Path]) -> None:
    """Revoke closes the target's connection first; closing the files left open must not keep
    the session from ending (asyncssh calls exit() only after the last close)."""
    remote, _ = place
    req = control_json(bastion, "alice", "request", "files", "--reason", "INC-11: open file")
    control_json(bastion, "bob", "approve", str(req["id"]))
    cert = bastion.world.root / "alice-open-file-cert.pub"
    cert.write_text(control(bastion, "alice", "cert", str(req["id"])).stdout)
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    async with asyncssh.connect(
            "127.0.0.1", bastion.world.port, username="files",
            client_keys=[(key, asyncssh.read_certificate(str(cert)))],
            known_hosts=str(bastion.known_hosts()), agent_path=None, config=None) as conn:
        sftp = await conn.start_sftp_client()
        handle = await sftp.open(f"{remote}/half.bin", "wb")
        await handle.write(b"x" * 4096)
        live = [s for s in control_json(bastion, "carol", "sessions", "--live")
                if s["kind"] == "sftp" and s["user"] == "alice"]
        assert len(live) == 1
        control_json(bastion, "alice", "revoke", str(req["id"]))
        ended = ended_session(bastion, str(live[0]["id"]))
    assert "revoked" in str(ended["end_reason"])
    uploads = [e["details"] for e in _events(bastion, "transfer.upload")
               if e["session_id"] == live[0]["id"]]
    assert uploads and uploads[0]["bytes"] == 4096  # type: ignore[index]
    _recording(bastion, str(live[0]["id"]))  # closed whole, not cut off


def test_a_client_that_leaves_before_its_first_packet_ends_its_session(
        bastion: BastionProcess) -> None:
    """asyncssh calls the server's exit() only after an SFTP hello: the session must end anyway."""
    cert = _cert(bastion, "alice", "files")
    before = {s["id"] for s in control_json(bastion, "carol", "sessions", "--limit", "500")}
    gone = subprocess.run(["ssh", *_options(bastion, "alice", cert), "-p", str(bastion.world.port),
                           "-s", "files@127.0.0.1", "sftp"], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=30)
    assert gone.returncode is not None
    ended = wait_for(lambda: [s for s in control_json(bastion, "carol", "sessions", "--limit", "500")
                              if s["id"] not in before and s["kind"] == "sftp"
                              and s["status"] != "live"], 10)
    assert ended, "the session stayed live after its client left"


async def test_attribute_changes_are_audited_and_sizes_bounded_whatever_the_spelling(
        bastion: BastionProcess, place: tuple[Path, Path]) -> None:
    remote, _ = place
    (remote / "sub").mkdir()
    cert = _cert(bastion, "alice", "files")
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    async with asyncssh.connect(
            "127.0.0.1", bastion.world.port, username="files",
            client_keys=[(key, asyncssh.read_certificate(str(cert)))],
            known_hosts=str(bastion.known_hosts()), agent_path=None, config=None) as conn:
        sftp = await conn.start_sftp_client()
        async with sftp.open(f"{remote}/sub/f.bin", "wb") as f:
            await f.write(b"a" * (700 * KIB))
        await sftp.chmod(f"{remote}/sub/f.bin", 0o640)
        # The same file by another name: the per-file limit is the file's, not the name's.
        with pytest.raises(asyncssh.SFTPFailure, match="max_file_size"):
            async with sftp.open(f"{remote}/sub/../sub/./f.bin", "r+b") as f:
                await f.write(b"b" * (700 * KIB), 700 * KIB)
        # Growing a file by its size attribute is a change of it, within the limit too.
        with pytest.raises(asyncssh.SFTPFailure, match="max_file_size"):
            await sftp.truncate(f"{remote}/sub/f.bin", 5 << 20)
    assert (remote / "sub" / "f.bin").stat().st_size == 700 * KIB
    assert (remote / "sub" / "f.bin").stat().st_mode & 0o777 == 0o640
    changes = [e["details"] for e in _events(bastion, "transfer.setstat")
               if e["details"]["path"] == f"{remote}/sub/f.bin"]  # type: ignore[index]
    assert any(c["attributes"] == {"permissions": 0o640} for c in changes), changes  # type: ignore[index]
