"""Shell sessions through the bastion to a real sshd, recorded, replayed and verified."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from harness import (
    REPO,
    BastionProcess,
    World,
    control,
    control_json,
    free_port,
    running_bastion,
    ssh,
    ssh_argv,
    start_target,
)

from recorder import (
    ExitEvent,
    InputEvent,
    MarkerEvent,
    OutputEvent,
    RecordingReader,
    ResizeEvent,
    generate_auditor_key,
    load_auditor_private_key,
    read_header_unencrypted,
    write_key_pair,
)

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]}


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("shell"), port=free_port(), users=dict(USERS))
    with running_bastion(world) as proc:
        yield proc


def grant(bastion: BastionProcess, target: str = "prod", duration: str = "1h") -> tuple[Path, int]:
    """A fresh approved request for alice and her certificate file."""
    req = control_json(bastion, "alice", "request", target, "--reason", "INC-9", "--duration", duration)
    if req["status"] != "approved":
        control_json(bastion, "bob", "approve", str(req["id"]))
    cert = bastion.world.root / f"alice-{req['id']}-cert.pub"
    result = control(bastion, "alice", "cert", str(req["id"]))
    assert result.returncode == 0, result.stderr
    cert.write_text(result.stdout)
    return cert, req["id"]


@pytest.fixture(scope="module")
def cert(bastion: BastionProcess) -> Path:
    return grant(bastion)[0]


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli", *args], capture_output=True,
                          text=True, cwd=REPO, check=check)


def session_of(bastion: BastionProcess, marker: str) -> dict[str, Any]:
    """The session whose audit `session.started` event ran a command containing `marker`."""
    events = control_json(bastion, "carol", "audit", "--kind", "session.started", "--limit", "1000")
    ids = [e["session_id"] for e in events if marker in (e["details"].get("command") or "")]
    assert ids, f"no session ran {marker!r}"
    sessions = {s["id"]: s for s in control_json(bastion, "carol", "sessions")}
    return sessions[ids[0]]


def auditor_key(bastion: BastionProcess) -> Path:
    return bastion.world.root / "keys" / "auditor"


def test_exec_stdout_stderr_and_exit_status(bastion: BastionProcess, cert: Path) -> None:
    result = ssh(bastion, bastion.world.key("alice"), "prod",
                 ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"], cert=cert)
    assert result.returncode == 3
    assert result.stdout == "to-stdout\n"
    assert "to-stderr" in result.stderr and "to-stdout" not in result.stderr


def test_stdin_eof_reaches_the_target(bastion: BastionProcess, cert: Path) -> None:
    result = ssh(bastion, bastion.world.key("alice"), "prod", ["wc", "-l"], cert=cert,
                 input=b"one\ntwo\nthree\n")
    assert result.returncode == 0 and result.stdout.strip() == "3"


def test_50mb_binary_round_trip_and_tar_pipe(bastion: BastionProcess, cert: Path,
                                             tmp_path: Path) -> None:
    original = tmp_path / "random.bin"
    original.write_bytes(os.urandom(50 * 1024 * 1024))
    digest = hashlib.sha256(original.read_bytes()).hexdigest()
    base = ssh_argv(bastion, bastion.world.key("alice"), "prod", cert=cert)
    downloaded = tmp_path / "down.bin"
    with downloaded.open("wb") as out:
        subprocess.run([*base, f"cat {original}"], stdout=out, check=True, timeout=300)
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == digest
    uploaded = tmp_path / "up.bin"
    with original.open("rb") as src:
        subprocess.run([*base, f"cat > {uploaded}"], stdin=src, check=True, timeout=300)
    assert hashlib.sha256(uploaded.read_bytes()).hexdigest() == digest

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("alpha\n")
    (tree / "b.bin").write_bytes(bytes(range(256)) * 100)
    dest = tmp_path / "unpacked"
    dest.mkdir()
    with subprocess.Popen(["tar", "c", "-C", str(tree), "."], stdout=subprocess.PIPE) as tar:
        subprocess.run([*base, f"tar x -C {dest}"], stdin=tar.stdout, check=True, timeout=60)
    assert tar.returncode == 0
    assert (dest / "sub" / "a.txt").read_text() == "alpha\n"
    assert (dest / "b.bin").read_bytes() == (tree / "b.bin").read_bytes()


async def open_pty(bastion: BastionProcess, cert: Path, cols: int = 80, rows: int = 24) -> tuple[
        asyncssh.SSHClientConnection, asyncssh.SSHClientProcess[str]]:
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    certificate = asyncssh.read_certificate(str(cert))
    conn = await asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="prod", client_keys=[(key, certificate)],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
    )
    proc = await conn.create_process(term_type="xterm", term_size=(cols, rows), env={"PS1": "$ "})
    return conn, proc


class Terminal:
    """What a PTY session printed so far, read up to the next expected text."""

    def __init__(self, proc: asyncssh.SSHClientProcess[str]) -> None:
        self.proc = proc
        self.seen = ""
        self.pos = 0

    async def expect(self, needle: str, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while needle not in self.seen[self.pos:]:
                chunk = await self.proc.stdout.read(4096)
                assert chunk, f"session closed before {needle!r}: {self.seen!r}"
                self.seen += chunk
        self.pos = self.seen.index(needle, self.pos) + len(needle)


async def test_interactive_pty_resize_ctrl_c_and_recording(bastion: BastionProcess, cert: Path,
                                                           tmp_path: Path) -> None:
    conn, proc = await open_pty(bastion, cert)
    term = Terminal(proc)
    async with conn:
        proc.stdin.write("stty size; echo typed-$((40+2))\n")
        await term.expect("24 80")
        await term.expect("typed-42")
        proc.change_terminal_size(100, 40)
        proc.stdin.write("stty size\n")
        await term.expect("40 100")
        proc.stdin.write("sleep 60\n")
        await asyncio.sleep(0.5)
        proc.stdin.write("\x03")
        proc.stdin.write("echo after-$((6*7))\n")
        await term.expect("after-42")  # sleep 60 was interrupted: the shell answers again
        proc.stdin.write("exit 3\n")
        await proc.wait_closed()
        assert proc.exit_status == 3

    sessions = control_json(bastion, "carol", "sessions")
    session = next(s for s in sessions if s["end_reason"] == "exit status 3")
    identity = load_auditor_private_key(auditor_key(bastion))
    with RecordingReader(session["recording"], identity) as reader:
        events = list(reader)
        assert not reader.cut_off
    typed = b"".join(e.data for e in events if isinstance(e, InputEvent))
    shown = b"".join(e.data for e in events if isinstance(e, OutputEvent))
    assert b"stty size; echo typed-$((40+2))" in typed and b"\x03" in typed
    assert b"typed-42" in shown and b"40 100" in shown and b"after-42" in shown
    assert [(e.cols, e.rows) for e in events if isinstance(e, ResizeEvent)] == [(100, 40)]
    assert [e.status for e in events if isinstance(e, ExitEvent)] == [3]
    times = [e.t for e in events]
    assert times == sorted(times) and times[-1] > 0.4
    # typed input comes before the output it caused
    first_input = next(e.t for e in events if isinstance(e, InputEvent))
    first_answer = next(e.t for e in events if isinstance(e, OutputEvent) and b"typed-42" in e.data)
    assert first_input <= first_answer

    cast = tmp_path / "session.cast"
    exported = cli("recordings", "export", session["id"], "--key", str(auditor_key(bastion)),
                   "--config", str(bastion.world.config))
    assert exported.returncode == 0, exported.stderr
    cast.write_text(exported.stdout)
    header = json.loads(exported.stdout.splitlines()[0])
    assert header["version"] == 2 and header["width"] == 80 and header["height"] == 24
    # asciinema cat insists on a controlling terminal: give it one with script(1).
    played = subprocess.run(["script", "-q", "-e", "-c", f"asciinema cat {cast}", "/dev/null"],
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert played.returncode == 0, played.stderr
    assert "typed-42" in played.stdout and "40 100" in played.stdout and "after-42" in played.stdout


def test_verify_and_list_recordings(bastion: BastionProcess, cert: Path, tmp_path: Path) -> None:
    result = ssh(bastion, bastion.world.key("alice"), "prod", ["echo", "verify-me"], cert=cert)
    assert result.returncode == 0
    session = session_of(bastion, "verify-me")
    config = str(bastion.world.config)
    listed = json.loads(cli("recordings", "list", "--json", "--config", config, check=True).stdout)
    row = next(r for r in listed if r["id"] == session["id"])
    assert row["user"] == "alice" and row["target"] == "prod" and row["status"] == "intact"
    assert row["path"] == session["recording"]

    intact = cli("recordings", "verify", session["id"], "--config", config)
    assert intact.returncode == 0 and "intact" in intact.stdout
    data = Path(session["recording"]).read_bytes()
    flipped = tmp_path / "flipped.rec"
    middle = bytearray(data)
    middle[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(middle))
    tampered = cli("recordings", "verify", str(flipped), "--config", config)
    assert tampered.returncode == 1 and "tampered" in tampered.stdout
    cut = tmp_path / "cut.rec"
    cut.write_bytes(data[: len(data) - 40])
    # The store says the session ended normally: a recording without its end was cut after the
    # fact, which is tampering, not a crash.
    cut_off = cli("recordings", "verify", str(cut), "--config", config)
    assert cut_off.returncode == 1 and "it was cut after the fact" in cut_off.stdout

    stranger = tmp_path / "stranger"
    write_key_pair(stranger, generate_auditor_key())
    denied = cli("recordings", "export", session["id"], "--key", str(stranger), "--config", config)
    assert denied.returncode == 1 and "verify-me" not in denied.stdout
    assert "recipient" in denied.stderr.lower()


def test_file_transfer_is_refused_clearly(bastion: BastionProcess, cert: Path, tmp_path: Path) -> None:
    common = ["-F", "/dev/null", "-o", "BatchMode=yes",
              "-o", f"UserKnownHostsFile={bastion.known_hosts()}", "-o", "IdentitiesOnly=yes",
              "-i", str(bastion.world.key("alice")), "-o", f"CertificateFile={cert}"]
    sftp = subprocess.run(["sftp", *common, "-P", str(bastion.world.port), "prod@127.0.0.1"],
                          input="ls\n", capture_output=True, text=True, timeout=30)
    assert sftp.returncode != 0 and sftp.stdout == ""
    off = "bastion: file transfer is not allowed on prod (its file_transfer setting is off)"
    assert off in sftp.stderr
    # scp speaks sftp since OpenSSH 9; `scp -O` runs the legacy scp command instead.
    local = tmp_path / "payload.txt"
    local.write_text("should not arrive\n")
    for mode, said in (([], off), (["-O"], "file transfer by a command")):
        copy = subprocess.run(["scp", *common, *mode, "-P", str(bastion.world.port), str(local),
                               "prod@127.0.0.1:/tmp/bastion-scp-probe.txt"],
                              capture_output=True, text=True, timeout=30)
        assert copy.returncode != 0, mode
        assert said in copy.stderr, (mode, copy.stderr)
    assert not Path("/tmp/bastion-scp-probe.txt").exists()
    legacy = ssh(bastion, bastion.world.key("alice"), "prod", ["scp", "-t", "/tmp"], cert=cert)
    assert legacy.returncode == 1 and "file transfer by a command" in legacy.stderr
    events = control_json(bastion, "carol", "audit", "--kind", "transfer.refused")
    assert events and events[0]["actor"] == "alice" and events[0]["target"] == "prod"


def test_revoking_ends_a_live_session(bastion: BastionProcess) -> None:
    cert, request_id = grant(bastion)
    live = subprocess.Popen(
        [*ssh_argv(bastion, bastion.world.key("alice"), "prod", cert=cert),
         "echo started; sleep 60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert live.stdout is not None and live.stdout.readline() == "started\n"
    control_json(bastion, "bob", "revoke", str(request_id), "--reason", "incident over")
    _, err = live.communicate(timeout=15)
    assert live.returncode == 255
    assert f"request {request_id} was revoked" in err


def test_auditor_can_end_a_live_session(bastion: BastionProcess, cert: Path) -> None:
    live = subprocess.Popen(
        [*ssh_argv(bastion, bastion.world.key("alice"), "prod", cert=cert),
         "echo kill-me; sleep 60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert live.stdout is not None and live.stdout.readline() == "kill-me\n"
    session = session_of(bastion, "kill-me")
    assert control(bastion, "alice", "kill", session["id"]).returncode == 1  # not an auditor
    ended = control_json(bastion, "carol", "kill", session["id"], "--reason", "suspicious")
    assert ended["ended"] is True
    _, err = live.communicate(timeout=15)
    assert live.returncode == 255 and "ended by carol: suspicious" in err


def test_certificate_window_end_ends_the_session(bastion: BastionProcess) -> None:
    cert, _ = grant(bastion, "staging", "6s")
    started = time.monotonic()
    result = ssh(bastion, bastion.world.key("alice"), "staging",
                 ["sh", "-c", "echo open; sleep 60"], cert=cert, timeout=40)
    assert result.returncode == 255
    assert result.stdout == "open\n"
    assert "your access ends in" in result.stderr  # warned before the end
    assert "access window has ended" in result.stderr
    assert time.monotonic() - started < 30


def test_unwritable_recordings_dir_refuses_sessions(bastion: BastionProcess, cert: Path) -> None:
    directory = bastion.world.root / "recordings"
    aside = directory.with_name("recordings.aside")
    directory.rename(aside)
    directory.write_text("not a directory")
    try:
        result = ssh(bastion, bastion.world.key("alice"), "prod", ["echo", "should-not-run"],
                     cert=cert)
    finally:
        directory.unlink()
        aside.rename(directory)
    assert result.returncode == 1
    assert "should-not-run" not in result.stdout
    assert "no recording, no session" in result.stderr
    events = control_json(bastion, "carol", "audit", "--kind", "recording.failed")
    assert events and events[0]["actor"] == "alice"


def test_recording_failure_mid_session_ends_it(tmp_path: Path) -> None:
    # The bastion runs with a 3 MB file size limit: the recording of a session that prints more
    # fails mid-session with EFBIG, as on a full disk.
    world = World(root=tmp_path, port=free_port(), users=dict(USERS))
    target = start_target(world)
    world.write_config()
    bastion = BastionProcess(world, file_size_limit=3 * 1024 * 1024)
    bastion.start()
    try:
        cert, _ = grant(bastion)
        with subprocess.Popen(
            [*ssh_argv(bastion, world.key("alice"), "prod", cert=cert),
             "head -c 8000000 /dev/urandom | od -An -v; sleep 60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ) as client:
            out, err = client.communicate(timeout=60)
        assert client.returncode == 255
        assert b"no recording, no session" in err
        assert len(out) < 8_000_000  # the output stopped with the recording
        events = control_json(bastion, "carol", "audit", "--kind", "recording.failed")
        assert events and events[0]["actor"] == "alice"
        assert "File too large" in events[0]["details"]["error"]
        sessions = control_json(bastion, "carol", "sessions")
        assert "no recording, no session" in sessions[0]["end_reason"]
    finally:
        bastion.stop()
        target.stop()


def test_unknown_target_host_key_refuses_the_session(tmp_path: Path) -> None:
    world = World(root=tmp_path, port=free_port(), users=dict(USERS))
    target = start_target(world)
    world.write_config()
    # Point the targets at the sshd but pin a different host key.
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    world.config.write_text(world.config.read_text().replace(target.host_key_line, other))
    bastion = BastionProcess(world)
    bastion.start()
    try:
        cert, _ = grant(bastion)
        result = ssh(bastion, world.key("alice"), "prod", ["echo", "hi"], cert=cert)
        assert result.returncode == 1
        assert "host key of prod" in result.stderr and "not the one configured" in result.stderr
    finally:
        bastion.stop()
        target.stop()


def test_sigkill_mid_session_leaves_a_recoverable_cut_off_recording(tmp_path: Path) -> None:
    world = World(root=tmp_path, port=free_port(), users=dict(USERS))
    target = start_target(world)
    world.write_config()
    bastion = BastionProcess(world)
    bastion.start()
    try:
        cert, _ = grant(bastion)
        client = subprocess.Popen(
            [*ssh_argv(bastion, bastion.world.key("alice"), "prod", cert=cert),
             "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.01; done"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert client.stdout is not None
        deadline = time.monotonic() + 3.0
        last = ""
        while time.monotonic() < deadline:
            last = client.stdout.readline().strip() or last
        assert bastion.proc is not None
        bastion.proc.send_signal(signal.SIGKILL)
        bastion.proc.wait()
        client.communicate(timeout=10)
        seen = int(last.removeprefix("line-"))

        recording = next((world.root / "recordings").glob("*.rec"))
        verdict = cli("recordings", "verify", str(recording), "--config", str(world.config))
        assert verdict.returncode == 3 and "cut_off" in verdict.stdout
        identity = load_auditor_private_key(world.root / "keys" / "auditor")
        with RecordingReader(recording, identity) as reader:
            assert reader.cut_off
            shown = b"".join(e.data for e in reader if isinstance(e, OutputEvent)).decode()
        recovered = max(int(x) for x in shown.split("line-")[1:] if x.strip().isdigit())
        # Chunks are flushed about once a second: at most ~1 s of output (≈100 lines) is lost.
        assert recovered >= seen - 150, (recovered, seen)

        bastion.start()
        sessions = control_json(bastion, "carol", "sessions")
        assert sessions[0]["status"] == "ended_abnormally"
    finally:
        bastion.stop()
        target.stop()




def test_auditor_fetches_the_encrypted_recording_over_ssh(bastion: BastionProcess, cert: Path,
                                                          tmp_path: Path) -> None:
    assert ssh(bastion, bastion.world.key("alice"), "prod", ["echo", "fetch-me"], cert=cert).returncode == 0
    session = session_of(bastion, "fetch-me")
    fetched = subprocess.run(
        [*ssh_argv(bastion, bastion.world.key("carol"), "access"), f"recording {session['id']}"],
        capture_output=True, timeout=30,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == Path(session["recording"]).read_bytes()
    assert b"fetch-me" not in fetched.stdout  # encrypted: only auditors' keys read it
    copy = tmp_path / "copy.rec"
    copy.write_bytes(fetched.stdout)
    identity = load_auditor_private_key(auditor_key(bastion))
    with RecordingReader(copy, identity) as reader:
        assert b"fetch-me" in b"".join(e.data for e in reader if isinstance(e, OutputEvent))
    refused = control(bastion, "alice", "recording", session["id"])
    assert refused.returncode == 1 and "no session" in refused.stderr
    # A follower fetches only what it has not seen yet.
    tail = subprocess.run(
        [*ssh_argv(bastion, bastion.world.key("carol"), "access"),
         f"recording {session['id']} --from 100"], capture_output=True, timeout=30)
    assert tail.returncode == 0 and tail.stdout == Path(session["recording"]).read_bytes()[100:]
    # The key that signs recordings, so a remote auditor can pin it.
    signer = control_json(bastion, "carol", "whoami")["recording_signer"]
    header = read_header_unencrypted(copy)
    assert base64.b64decode(signer.split()[1]) == header.signer
    listed = control_json(bastion, "carol", "sessions", "--limit", "1")
    assert len(listed) == 1


async def open_exec(bastion: BastionProcess, cert: Path, command: str, *,
                    term: bool = False) -> tuple[asyncssh.SSHClientConnection,
                                                 asyncssh.SSHClientProcess[str]]:
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    conn = await asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="prod",
        client_keys=[(key, asyncssh.read_certificate(str(cert)))],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
    )
    proc = await conn.create_process(command, term_type="xterm" if term else None)
    return conn, proc


async def test_exit_signal_is_passed_back(bastion: BastionProcess, cert: Path) -> None:
    conn, proc = await open_exec(bastion, cert, "echo dying; kill -TERM $$")
    async with conn:
        await proc.wait_closed()
        assert proc.exit_signal is not None and proc.exit_signal[0] == "TERM"
        assert proc.exit_status is None or proc.exit_status == -1
    # The stock client reports it too, and the session is listed with the signal.
    result = ssh(bastion, bastion.world.key("alice"), "prod", ["sh", "-c", "kill -KILL $$"], cert=cert)
    assert result.returncode == 255
    # The client hears of the signal first; the session's end is written to the store right after.
    deadline = time.monotonic() + 10
    while True:
        sessions = control_json(bastion, "carol", "sessions")
        if any(s["end_reason"] == "target process killed by signal KILL" for s in sessions):
            break
        assert time.monotonic() < deadline, sessions
        await asyncio.sleep(0.2)


async def test_signal_is_relayed_to_the_target(bastion: BastionProcess, cert: Path) -> None:
    # OpenSSH's sshd refuses to deliver signals into root sessions (they run without privilege
    # separation) and logs that it did: the log line proves the request reached the target.
    assert bastion.world.target is not None
    sshd_log = bastion.world.target.dir / "sshd.log"
    before = sshd_log.read_text().count("session_signal_req")
    conn, proc = await open_exec(bastion, cert, "echo ready; sleep 30")
    async with conn:
        assert (await proc.stdout.readline()) == "ready\n"
        proc.send_signal("USR1")
        async with asyncio.timeout(15):
            while sshd_log.read_text().count("session_signal_req") == before:
                await asyncio.sleep(0.1)
    recording = await _recording_showing(bastion, b"ready\n")
    assert "client sent signal USR1" in [e.label for e in recording if isinstance(e, MarkerEvent)]


async def test_client_disconnect_ends_the_session(bastion: BastionProcess, cert: Path) -> None:
    # Ends by itself (a command without a PTY outlives its channel, as with OpenSSH direct).
    conn, proc = await open_exec(bastion, cert,
                                 "echo hanging-on; for i in $(seq 300); do sleep 0.1; done")
    async with conn:
        assert (await proc.stdout.readline()) == "hanging-on\n"
    async with asyncio.timeout(15):
        while True:
            session = session_of(bastion, "hanging-on")
            if session["status"] == "ended":
                break
            await asyncio.sleep(0.2)
    assert session["end_reason"] == "the client disconnected"


async def _recording_showing(bastion: BastionProcess, text: bytes) -> list[Any]:
    """The events of the newest recording whose output contains `text`."""
    identity = load_auditor_private_key(auditor_key(bastion))
    for _ in range(50):
        for session in control_json(bastion, "carol", "sessions"):
            if session["status"] != "ended" or (session["end_reason"] or "").startswith("refused: "):
                continue  # a refused session (this module refuses some) has no recording
            with RecordingReader(session["recording"], identity) as reader:
                events = list(reader)
            if any(isinstance(e, OutputEvent) and text in e.data for e in events):
                return events
        await asyncio.sleep(0.2)
    raise AssertionError(f"no ended session showed {text!r}")


async def test_break_is_relayed_and_recorded(bastion: BastionProcess, cert: Path) -> None:
    conn, proc = await open_pty(bastion, cert)
    term = Terminal(proc)
    async with conn:
        proc.stdin.write("echo before-$((1+1)) term-$TERM\n")
        await term.expect("before-2 term-xterm")  # the terminal type reached the target
        proc.send_break(250)
        proc.stdin.write("echo after-$((2+2)); exit 0\n")
        await term.expect("after-4")
        await proc.wait_closed()
    events = await _recording_showing(bastion, b"before-2")
    assert "client sent a break of 250 ms" in [e.label for e in events if isinstance(e, MarkerEvent)]


def test_agent_forwarding_is_not_offered(bastion: BastionProcess, cert: Path, tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        argv = ssh_argv(bastion, bastion.world.key("alice"), "prod", cert=cert, options=["-A", "-v"])
        argv[argv.index("IdentityAgent=none")] = f"IdentityAgent={sock}"
        result = subprocess.run(
            [*argv, "echo agent=${SSH_AUTH_SOCK:-none}"],
            capture_output=True, text=True, timeout=30, env=env,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "agent=none\n"
        assert "Requesting authentication agent forwarding" in result.stderr  # it was asked for
    finally:
        agent.terminate()
        agent.wait()


def test_x11_forwarding_is_refused(bastion: BastionProcess, cert: Path) -> None:
    # A fake display is enough: the client asks for X11 forwarding before anything connects to it.
    env = {**os.environ, "DISPLAY": "127.0.0.1:77"}
    argv = ssh_argv(bastion, bastion.world.key("alice"), "prod", cert=cert,
                    options=["-X", "-o", "ForwardX11Trusted=yes", "-v"])
    result = subprocess.run([*argv, "echo display=${DISPLAY:-none}"], capture_output=True,
                            text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "display=none\n"  # the target session got no X11 display
    assert "Requesting X11 forwarding" in result.stderr  # it was asked for
    assert "X11 forwarding request failed" in result.stderr


def test_upstream_dropping_mid_session_ends_it_with_a_message(bastion: BastionProcess,
                                                               cert: Path) -> None:
    # The target's own sshd process for this session dies under the running command.
    started = time.monotonic()
    script = ("echo before-drop; sleep 0.3; p=$$; "
              "while [ \"$(cat /proc/$p/comm)\" != sshd ]; do p=$(cut -d' ' -f4 /proc/$p/stat); done; "
              "kill -9 $p; sleep 20; echo never")
    result = ssh(bastion, bastion.world.key("alice"), "prod", ["sh", "-c", script], cert=cert)
    assert time.monotonic() - started < 15  # not held until the orphaned command ends
    assert "before-drop" in result.stdout and "never" not in result.stdout
    assert result.returncode != 0
    assert "bastion:" in result.stderr and "prod" in result.stderr, result.stderr
    session = session_of(bastion, "before-drop")
    assert session["status"] == "ended"


async def test_terminal_modes_reach_the_target(bastion: BastionProcess, cert: Path) -> None:
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    async with asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="prod",
        client_keys=[(key, asyncssh.read_certificate(str(cert)))],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
    ) as conn:
        modes = {asyncssh.PTY_ECHO: 0, asyncssh.PTY_VINTR: 7}  # no echo; interrupt is Ctrl-G
        result = await conn.run("stty -a", term_type="xterm", term_size=(90, 30),
                                term_modes=modes, check=False)
    out = str(result.stdout)
    assert "-echo " in out and "intr = ^G" in out, out
    assert "rows 30; columns 90" in out


async def test_a_client_that_stops_reading_does_not_swell_the_bastion(
        bastion: BastionProcess, cert: Path) -> None:
    # A hostile client grants a 1 GiB SSH window, then stops reading its socket while the
    # target prints without end. The bastion holds back (its relay waits, so the target's sshd
    # does) instead of buffering what the window allows: asyncssh alone would hold hundreds of
    # MiB within seconds.
    assert bastion.proc is not None
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    conn = await asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="prod",
        client_keys=[(key, asyncssh.read_certificate(str(cert)))],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None,
    )
    async with conn:
        proc = await conn.create_process("cat /dev/zero", encoding=None, window=1 << 30)
        assert len(await proc.stdout.read(65536)) > 0
        before = bastion.rss_mib()
        conn._transport.pause_reading()  # type: ignore[attr-defined,union-attr]
        grown = 0.0
        for _ in range(20):  # 4 s
            await asyncio.sleep(0.2)
            grown = max(grown, bastion.rss_mib() - before)
        conn._transport.resume_reading()  # type: ignore[attr-defined,union-attr]
        assert len(await proc.stdout.read(1 << 20)) > 0  # the session still flows
        proc.close()
    assert grown < 100, f"the bastion grew by {grown:.0f} MiB for a client that did not read"
