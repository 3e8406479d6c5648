"""A writer killed with SIGKILL loses at most about the last second of the session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from recorder import (
    OutputEvent,
    RecordingReader,
    VerifyStatus,
    generate_auditor_key,
    generate_signing_key,
    public_key_line,
    verify_recording,
    write_key_pair,
)

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import asyncio, sys, time
from recorder import RecordingWriter, load_signing_key, parse_public_key_line

async def main() -> None:
    directory, auditor, signing_key = sys.argv[1:4]
    writer = RecordingWriter(
        directory, session_id="crash", user="carol", target="app-1", kind="ssh",
        recipients=[parse_public_key_line(auditor)], signing_key=load_signing_key(signing_key),
    )
    print("ready", time.time(), flush=True)
    i = 0
    while True:
        await writer.output(f"line {i} at {writer.now():.3f}\\r\\n".encode())
        i += 1
        await asyncio.sleep(0.005)

asyncio.run(main())
"""


def test_sigkill_loses_at_most_the_last_second(tmp_path: Path) -> None:
    auditor, signer = generate_auditor_key(), generate_signing_key()
    write_key_pair(tmp_path / "signing", signer)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            str(tmp_path),
            public_key_line(auditor.public_key()),
            str(tmp_path / "signing"),
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[0] == b"ready", ready
        started = float(ready[1])
        time.sleep(2.5)
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.time()
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    elapsed = killed_at - started

    path = tmp_path / "crash.rec"
    with RecordingReader(path, auditor) as reader:
        events = list(reader)
        assert reader.cut_off
        last_chunk = reader.last_chunk
    assert events and all(isinstance(e, OutputEvent) for e in events)
    # Every event up to the last flush is there, in order, none missing.
    lines = [e.data.decode().split() for e in events if isinstance(e, OutputEvent)]
    assert [int(words[1]) for words in lines] == list(range(len(lines)))
    assert events[-1].t >= elapsed - 1.0 - 0.3, (events[-1].t, elapsed)

    result = verify_recording(path, signer.public_key())
    assert result.status is VerifyStatus.CUT_OFF, result.message
    assert result.chunk == last_chunk
