"""`bastion keygen` and `bastion recordings export` as an auditor runs them, without a bastion."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from harness import REPO

from recorder import (
    RecordingWriter,
    WriterSettings,
    generate_signing_key,
    load_auditor_private_key,
    load_auditor_public_key,
)


def bastion(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli", *args], capture_output=True,
                          text=True, cwd=REPO, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


async def record(directory: Path, public_key_file: Path) -> Path:
    directory.mkdir()
    writer = RecordingWriter(
        directory, session_id="cli-1", user="alice", target="prod", kind="ssh",
        recipients=[load_auditor_public_key(public_key_file)], signing_key=generate_signing_key(),
        settings=WriterSettings(fsync=False),
    )
    await writer.output(b"$ echo exported\r\nexported\r\n")
    await writer.input(b"exit\r")
    await writer.exit(status=0)
    await writer.close()
    return writer.path


async def test_keygen_with_passphrase_and_export(tmp_path: Path) -> None:
    key = tmp_path / "carol.key"
    env = {"BASTION_KEY_PASSPHRASE": "correct horse"}
    made = bastion("keygen", "--out", str(key), "--passphrase", "--comment", "carol", env=env)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = Path(f"{key}.pub")
    assert public.read_text().startswith("bastion-recording-x25519 ") and "carol" in public.read_text()
    assert public.read_text().split()[1] in made.stdout
    assert b"ENCRYPTED" in key.read_bytes()  # the passphrase protects the file itself
    again = bastion("keygen", "--out", str(key))
    assert again.returncode == 1 and "already exists" in again.stderr

    path = await record(tmp_path / "recordings", public)
    no_passphrase = bastion("recordings", "export", str(path), "--key", str(key))
    assert no_passphrase.returncode == 1 and "BASTION_KEY_PASSPHRASE" in no_passphrase.stderr
    wrong = bastion("recordings", "export", str(path), "--key", str(key),
                    env={"BASTION_KEY_PASSPHRASE": "wrong horse"})
    assert wrong.returncode == 1 and "exported" not in wrong.stdout
    cast = bastion("recordings", "export", str(path), "--key", str(key), env=env)
    assert cast.returncode == 0, cast.stderr
    header, *frames = [json.loads(line) for line in cast.stdout.splitlines()]
    assert header["version"] == 2
    assert "exported" in "".join(f[2] for f in frames if f[1] == "o")
    lines = bastion("recordings", "export", str(path), "--key", str(key), "--format", "jsonl", env=env)
    assert lines.returncode == 0, lines.stderr
    kinds = [json.loads(line)["type"] for line in lines.stdout.splitlines()]
    assert "output" in kinds and "input" in kinds and "exit" in kinds


def test_keygen_without_passphrase_is_usable_at_once(tmp_path: Path) -> None:
    key = tmp_path / "auditor"
    made = bastion("keygen", "--out", str(key))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    load_auditor_private_key(key)
