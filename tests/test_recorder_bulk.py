"""Bulk output: recorded whole while the writer batches it, waits for a slow disk instead of
queueing without bound, and reserves disk space ahead without ever showing it in the file."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from recorder import (
    OutputEvent,
    RecordingReader,
    RecordingWriter,
    VerifyStatus,
    WriterSettings,
    generate_auditor_key,
    generate_signing_key,
    verify_recording,
)
from recorder.preallocation import MAX_AHEAD, MIN_SIZE, Preallocation

AUDITOR = generate_auditor_key()
SIGNER = generate_signing_key()
MIB = 1024 * 1024


def new_writer(directory: Path, settings: WriterSettings) -> RecordingWriter:
    return RecordingWriter(directory, session_id="bulk", user="alice", target="web-1", kind="ssh",
                           recipients=[AUDITOR.public_key()], signing_key=SIGNER, settings=settings)


def recorded_output(path: Path) -> tuple[bytes, bool]:
    with RecordingReader(path, AUDITOR) as reader:
        data = b"".join(e.data for e in reader if isinstance(e, OutputEvent))
        return data, reader.cut_off


def _fd_of(path: Path) -> int:
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                return int(name)
        except OSError:
            continue
    raise AssertionError(f"{path} is not open")


def _can_preallocate(directory: Path) -> bool:
    probe = directory / "probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        space = Preallocation(fd)
        space.reserve(MIN_SIZE)
        return space.reserved > 0
    finally:
        os.close(fd)
        probe.unlink()


async def test_bulk_output_from_two_streams_is_recorded_whole_and_in_order(tmp_path: Path) -> None:
    writer = new_writer(tmp_path, WriterSettings(fsync=False))
    sent: list[bytes] = []

    async def stream(tag: bytes) -> None:
        for i in range(300):  # 32 KiB pieces, as SSH delivers them, and odd sizes between
            piece = tag + str(i).encode() + bytes([65 + i % 26]) * (32 * 1024 if i % 3 else 4001)
            sent.append(piece)
            await writer.output(piece)

    await asyncio.gather(stream(b"out"), stream(b"err"))
    # Mid-session the file holds only what was written: nothing reserved shows as data.
    await writer.flush()
    data, cut_off = recorded_output(writer.path)
    assert data == b"".join(sent) and cut_off
    await writer.close()
    data, cut_off = recorded_output(writer.path)
    assert data == b"".join(sent) and not cut_off
    result = verify_recording(writer.path, SIGNER.public_key())
    assert result.status is VerifyStatus.INTACT and result.chunks > 8
    # The blocks reserved past the end are given back at close.
    size = writer.path.stat().st_size
    assert writer.path.stat().st_blocks * 512 < size + 64 * 1024


async def test_a_stalled_disk_holds_the_session_back_and_a_cancelled_caller_loses_nothing(
    tmp_path: Path,
) -> None:
    writer = new_writer(tmp_path, WriterSettings(fsync=False, max_chunk_bytes=64 * 1024))
    await writer.output(b"start;")
    await writer.flush()
    before = writer.path.read_bytes()
    # From here the recording goes into a pipe nobody reads yet: the writes block as a stalled
    # disk would.
    read_end, write_end = os.pipe()
    os.dup2(write_end, _fd_of(writer.path))
    os.close(write_end)
    sent: list[bytes] = []

    async def feed() -> None:
        for i in range(64):
            piece = bytes([65 + i % 26]) * (64 * 1024)
            sent.append(piece)
            await writer.output(piece)

    feeder = asyncio.create_task(feed())
    await asyncio.sleep(0.3)
    assert not feeder.done() and len(sent) < 8  # held back, not queued without bound
    feeder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await feeder
    piped = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 1 << 20):
            piped.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        await writer.output(b";after")
        await writer.close()
    finally:
        reader.join(10)
        os.close(read_end)
    whole = tmp_path / "whole.rec"
    whole.write_bytes(before + piped)
    data, cut_off = recorded_output(whole)
    # The cancelled call's output was recorded too: recorded but not shown is allowed, the
    # reverse never.
    assert data == b"start;" + b"".join(sent) + b";after" and not cut_off
    assert verify_recording(whole, SIGNER.public_key()).status is VerifyStatus.INTACT


def test_space_is_reserved_ahead_but_the_size_covers_only_what_was_written(tmp_path: Path) -> None:
    if not _can_preallocate(tmp_path):
        pytest.skip("this file system does not support fallocate")
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        space = Preallocation(fd)
        piece = b"x" * (256 * 1024)
        space.reserve(len(piece))
        assert space.reserved == 0  # small recordings reserve nothing
        for _ in range(12):
            space.reserve(len(piece))
            space.wrote(os.write(fd, piece))
        stat = os.fstat(fd)
        assert stat.st_size == space.size == 3 * MIB
        assert space.size + MIB <= space.reserved <= space.size + MAX_AHEAD
        assert stat.st_blocks * 512 >= space.reserved
        space.release()
        stat = os.fstat(fd)
        assert stat.st_size == 3 * MIB and stat.st_blocks * 512 < 3 * MIB + 64 * 1024
    finally:
        os.close(fd)
