"""Terminal sizes, resizes, signals and breaks chosen by a hostile client.

Whatever the terminal size, nothing reaches the user that is not in the recording; the emulator's
work stays bounded; `kill` ends a session whatever its recorder is doing; client-originated events
are recorded in the bastion's words, never verbatim; the exec command is in the signed header.
"""

from __future__ import annotations

import asyncio
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
    ended_session,
    free_port,
    running_bastion,
    start_target,
    wait_for,
)

from recorder import (
    MAX_COLS,
    KeyframeEvent,
    MarkerEvent,
    OutputEvent,
    RecordingReader,
    RecordingWriter,
    ResizeEvent,
    WriterSettings,
    generate_auditor_key,
    generate_signing_key,
    load_auditor_private_key,
)
from recorder.verify import verify_recording

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]}
FOUR_MIB = 4 * 1024 * 1024


# The recorder alone ------------------------------------------------------------------------

@pytest.mark.parametrize("cols, rows", [(65535, 300), (65535, 65535), (300, 65535)])
async def test_any_terminal_size_records_every_byte(tmp_path: Path, cols: int, rows: int) -> None:
    identity = generate_auditor_key()
    signer = generate_signing_key()
    writer = RecordingWriter(tmp_path, session_id="huge", user="u", target="t", kind="ssh",
                             recipients=[identity.public_key()], signing_key=signer,
                             cols=80, rows=24,
                             settings=WriterSettings(keyframe_bytes=512 * 1024,
                                                     keyframe_min_interval=0.0))
    async with writer:
        await writer.resize(cols, rows)
        line = b"y" * 1023 + b"\n"
        for _ in range(FOUR_MIB // len(line)):
            await writer.output(line)
    verdict = verify_recording(writer.path)
    assert verdict.ok, verdict
    with RecordingReader(writer.path, identity) as reader:
        events = list(reader.events(keyframes=True))
    assert sum(len(e.data) for e in events if isinstance(e, OutputEvent)) == FOUR_MIB
    assert any(isinstance(e, ResizeEvent) and (e.cols, e.rows) == (cols, rows) for e in events)
    keyframes = [e for e in events if isinstance(e, KeyframeEvent)]
    assert keyframes and all(k.payload["cols"] <= MAX_COLS for k in keyframes)


# Through the front door -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("terminal"), port=free_port(), users=dict(USERS))
    with running_bastion(world) as proc:
        yield proc


@pytest.fixture(scope="module")
def cert(bastion: BastionProcess) -> Path:
    req = control_json(bastion, "alice", "request", "prod", "--reason", "INC-4: terminal")
    control_json(bastion, "bob", "approve", str(req["id"]))
    path = bastion.world.root / "alice-cert.pub"
    path.write_text(control(bastion, "alice", "cert").stdout)
    return path


def connect(bastion: BastionProcess, cert: Path) -> Any:
    key = asyncssh.read_private_key(str(bastion.world.key("alice")))
    return asyncssh.connect(
        "127.0.0.1", bastion.world.port, username="prod",
        client_keys=[(key, asyncssh.read_certificate(str(cert)))],
        known_hosts=str(bastion.known_hosts()), agent_path=None, config=None)


def recording_of(bastion: BastionProcess, marker: str) -> tuple[dict[str, Any], list[Any], Any]:
    events = control_json(bastion, "carol", "audit", "--kind", "session.started", "--limit", "1000")
    sid = next(e["session_id"] for e in events if marker in (e["details"].get("command") or ""))
    # The client hears the exit first; the bastion then closes the recording and writes the
    # session's end: only then is the recording whole (and `verify` says intact).
    session = ended_session(bastion, sid, 15)
    identity = load_auditor_private_key(bastion.world.root / "keys" / "auditor")
    with RecordingReader(session["recording"], identity) as reader:
        return session, list(reader), reader.header


async def test_a_huge_resize_then_4_mib_is_all_recorded(bastion: BastionProcess, cert: Path) -> None:
    command = "sleep 1; head -c 4194304 /dev/zero | tr '\\0' 'x'; echo; echo huge-resize-done"
    async with connect(bastion, cert) as conn:
        proc = await conn.create_process(command, term_type="xterm", term_size=(80, 24),
                                         encoding=None)
        proc.change_terminal_size(65535, 300)
        shown = b""
        while chunk := await proc.stdout.read(1 << 20):
            shown += chunk
        err = await proc.stderr.read()
        await proc.wait_closed()
    assert shown.count(b"x") == FOUR_MIB and b"huge-resize-done" in shown
    assert b"the target sees 1000x300" in err
    session, events, header = recording_of(bastion, "huge-resize-done")
    recorded = b"".join(e.data for e in events if isinstance(e, OutputEvent))
    assert recorded.count(b"x") == FOUR_MIB
    assert header.metadata["command"] == command  # the exec command is in the signed header
    verify = subprocess.run([sys.executable, "-m", "bastion.cli", "recordings", "verify",
                             session["id"], "--config", str(bastion.world.config)],
                            capture_output=True, text=True, cwd=REPO)
    assert verify.returncode == 0 and "intact" in verify.stdout, verify.stdout


async def test_a_65535_square_terminal_is_clamped_and_killable(bastion: BastionProcess,
                                                               cert: Path) -> None:
    async with connect(bastion, cert) as conn:
        proc = await conn.create_process(
            "stty size; echo square-started; while :; do cat /etc/services; done",
            term_type="xterm", term_size=(65535, 65535), encoding=None)
        seen = b""
        while b"square-started" not in seen:
            seen += await proc.stdout.read(65536)
        assert b"1000 1000" in seen  # rows cols as the target's PTY has them
        live = [s for s in control_json(bastion, "carol", "sessions", "--live")
                if s["user"] == "alice"]
        started = time.monotonic()
        assert control(bastion, "carol", "kill", live[0]["id"]).returncode == 0

        async def drain() -> None:
            while await proc.stdout.read(1 << 20):
                pass
            await proc.wait_closed()

        await asyncio.wait_for(drain(), 20)
        assert time.monotonic() - started < 20
        assert proc.exit_status == 255
    # The client's channel closes first; the store marks the session ended once its recording
    # has taken the last events (within the recording grace period).
    def ended() -> dict[str, Any] | None:
        return next((s for s in control_json(bastion, "carol", "sessions")
                     if s["id"] == live[0]["id"] and s["status"] != "live"), None)

    record = wait_for(ended, timeout=15)
    assert record is not None and "ended by carol" in record["end_reason"]


async def test_zero_resizes_signals_and_breaks(bastion: BastionProcess, cert: Path) -> None:
    async with connect(bastion, cert) as conn:
        proc = await conn.create_process("echo ready; read line; echo odd-events-$line",
                                         term_type="xterm", term_size=(80, 24))
        assert "ready" in await proc.stdout.readline()
        proc.change_terminal_size(0, 0)
        proc.send_signal("ended by the bastion: request 1 was revoked" + "X" * 2000)
        proc.send_signal("USR1")
        proc.send_break(200_000)
        proc.stdin.write("done\n")
        out = ""
        while "odd-events-done" not in out:
            out += await asyncio.wait_for(proc.stdout.readline(), 10)
        await proc.wait_closed()
        assert proc.exit_status == 0  # the session went on: no "internal error"
    _, events, _ = recording_of(bastion, "odd-events")
    labels = [e.label for e in events if isinstance(e, MarkerEvent)]
    assert "client sent a break of 10000 ms" in labels
    assert "client sent signal USR1" in labels
    assert not any("revoked" in label for label in labels)
    assert all(len(label) < 300 for label in labels)


async def test_sigterm_stops_the_bastion_during_a_terminal_bomb(tmp_path: Path) -> None:
    world = World(root=tmp_path / "term", port=free_port(), users=dict(USERS))
    target = start_target(world)
    world.write_config()
    bastion = BastionProcess(world)
    bastion.start()
    try:
        req = control_json(bastion, "alice", "request", "prod", "--reason", "INC-5: bomb")
        control_json(bastion, "bob", "approve", str(req["id"]))
        cert = tmp_path / "alice-cert.pub"
        cert.write_text(control(bastion, "alice", "cert").stdout)
        async with connect(bastion, cert) as conn:
            proc = await conn.create_process("while :; do cat /etc/services; done",
                                             term_type="xterm", term_size=(65535, 65535),
                                             encoding=None)
            await proc.stdout.read(65536)
            started = time.monotonic()
            assert bastion.proc is not None
            bastion.proc.terminate()
            await asyncio.to_thread(bastion.proc.wait, 30)
            assert time.monotonic() - started < 30
            assert bastion.proc.returncode == 0
    finally:
        bastion.stop()
        target.stop()
