"""A recording is judged against the session it stands for (findings 9 and 12): a file copied
over another session's reads as tampered, and a file cut off while the store says the session
ended normally reads as cut after the fact, not as a crash."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    ssh,
)

from recorder import (
    RecordingWriter,
    SessionFacts,
    VerifyStatus,
    generate_auditor_key,
    generate_signing_key,
    verify_for_session,
)
from tui.integrity import Verdict, check_recording

USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]}


async def _file(tmp_path: Path, sid: str, *, close: bool = True) -> Path:
    writer = RecordingWriter(tmp_path, session_id=sid, user="alice", target="prod", kind="ssh",
                             recipients=[generate_auditor_key().public_key()],
                             signing_key=generate_signing_key(), start=datetime.now(UTC))
    await writer.output(b"hello\r\n")
    if close:
        await writer.close()
    else:
        await writer.flush()
    return writer.path


async def test_decisions_without_sockets(tmp_path: Path) -> None:
    path = await _file(tmp_path, "s1")
    now = datetime.now(UTC)
    ok = SessionFacts("s1", "alice", "prod", "ended", now)
    assert verify_for_session(path, None, ok).status is VerifyStatus.INTACT
    other = SessionFacts("s2", "bob", "prod", "ended", now)
    result = verify_for_session(path, None, other)
    assert result.status is VerifyStatus.TAMPERED and "belongs to another session" in result.message
    # Cut at a frame boundary: which it is depends on what the store knows.
    data = path.read_bytes()
    cut = tmp_path / "cut.rec"
    cut.write_bytes(data[: data.rindex(b"\x03", 0, len(data) - 80)])  # somewhere before the end
    verdicts = {status: verify_for_session(cut, None, SessionFacts("s1", "alice", "prod", status, now))
                for status in ("ended", "ended_abnormally", "live")}
    assert verdicts["ended"].status is VerifyStatus.TAMPERED
    assert "cut after the fact" in verdicts["ended"].message
    assert verdicts["ended_abnormally"].status is VerifyStatus.CUT_OFF
    assert "bastion stopped" in verdicts["ended_abnormally"].message
    assert verdicts["live"].status is VerifyStatus.CUT_OFF
    # The TUI's integrity check says the same.
    assert check_recording(path, None, session=other).verdict is Verdict.TAMPERED
    assert check_recording(cut, None, session=SessionFacts(
        "s1", "alice", "prod", "ended", now)).verdict is Verdict.TAMPERED


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("identity"), port=free_port(), users=dict(USERS))
    with running_bastion(world) as proc:
        yield proc


def _verify(bastion: BastionProcess, arg: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli", "recordings", "verify", arg,
                           "--config", str(bastion.world.config)],
                          capture_output=True, text=True, cwd=REPO)


def _session(bastion: BastionProcess, word: str) -> dict[str, Any]:
    events = control_json(bastion, "carol", "audit", "--kind", "session.started", "--limit", "100")
    sid = next(e["session_id"] for e in events if word in (e["details"].get("command") or ""))
    return ended_session(bastion, sid)  # only then is the recording whole


def test_a_recording_copied_over_another_is_tampered(bastion: BastionProcess) -> None:
    req = control_json(bastion, "alice", "request", "prod", "--reason", "INC-9: copy")
    control_json(bastion, "bob", "approve", str(req["id"]))
    cert = bastion.world.root / "alice-cert.pub"
    cert.write_text(control(bastion, "alice", "cert").stdout)
    for word in ("harmless-session", "secret-session"):
        assert ssh(bastion, bastion.world.key("alice"), "prod", ["echo", word],
                   cert=cert).returncode == 0
    harmless, secret = _session(bastion, "harmless-session"), _session(bastion, "secret-session")
    assert _verify(bastion, secret["id"]).returncode == 0
    shutil.copyfile(harmless["recording"], secret["recording"])
    result = _verify(bastion, secret["id"])
    assert result.returncode == 1, result.stdout
    assert "belongs to another session" in result.stdout and harmless["id"] in result.stdout
    as_json = json.loads(subprocess.run(
        [sys.executable, "-m", "bastion.cli", "recordings", "verify", secret["id"], "--json",
         "--config", str(bastion.world.config)], capture_output=True, text=True, cwd=REPO).stdout)
    assert as_json["status"] == "tampered"
