"""Recorder benchmark: write throughput against a plain file, and seek time in a large recording.

Usage: .venv/bin/python bench/bench_recorder.py [--mib 100] [--event-size 4096] [--seeks 10]

1. Records `--mib` MiB of terminal output (in `--event-size` writes, default writer settings,
   fsync included) and writes the same bytes to a plain file in the same run; prints both rates
   and their ratio.
2. Opens that recording (about `--mib` MB) and seeks to `--seeks` random points, printing the
   open time and the milliseconds per seek (keyframe + events) and per rendered screen.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without installing: the repository root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from recorder import (
    RecordingReader,
    RecordingWriter,
    generate_auditor_key,
    generate_signing_key,
)

MIB = 1024 * 1024
WORDS = "error warning info request user session target select from where 200 404 ok".split()


def terminal_text(size: int, seed: int = 1) -> bytes:
    """Return `size` bytes of log-like terminal output with a few colour sequences."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    total = 0
    while total < size:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
        line = f"\x1b[32m{rng.randint(0, 99999):05d}\x1b[0m {words}\r\n".encode()
        lines.append(line)
        total += len(line)
    return b"".join(lines)[:size]


class SessionClock:
    """Session time advanced by the benchmark: 25 ms per write, like a busy interactive session."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def record(directory: Path, pieces: list[bytes]) -> tuple[float, Path, X25519PrivateKey, list[float]]:
    auditor, signer = generate_auditor_key(), generate_signing_key()
    clock = SessionClock()
    writer = RecordingWriter(
        directory,
        session_id="bench",
        user="bench",
        target="bench",
        kind="ssh",
        recipients=[auditor.public_key()],
        signing_key=signer,
        clock=clock,
    )
    lags: list[float] = []

    async def ticker() -> None:
        # How late a 10 ms timer fires while recording: the loop must stay responsive.
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    for piece in pieces:
        await writer.output(piece)
        clock.now += 0.025
    await writer.close()
    elapsed = time.perf_counter() - started
    ticking.cancel()
    return elapsed, writer.path, auditor, sorted(lags)


def plain(directory: Path, pieces: list[bytes]) -> float:
    started = time.perf_counter()
    with open(directory / "plain.out", "wb") as f:
        for piece in pieces:
            f.write(piece)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100, help="MiB of output to record")
    parser.add_argument("--event-size", type=int, default=4096, help="bytes per output write")
    parser.add_argument("--seeks", type=int, default=10, help="random seek points")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()

    block = terminal_text(8 * MIB)
    total = args.mib * MIB
    pieces = [
        block[(i % len(block)) : (i % len(block)) + args.event_size] for i in range(0, total, args.event_size)
    ]
    size = sum(len(p) for p in pieces)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        plain_s = plain(directory, pieces)
        rec_s, path, auditor, lags = asyncio.run(record(directory, pieces))
        plain_rate, rec_rate = size / MIB / plain_s, size / MIB / rec_s
        print(f"output recorded:    {size / MIB:.0f} MiB in {len(pieces)} writes")
        print(f"plain file:         {plain_rate:8.1f} MiB/s")
        print(f"recorder:           {rec_rate:8.1f} MiB/s  ({plain_rate / rec_rate:.1f}x slower)")
        print(f"recording size:     {path.stat().st_size / 1e6:.1f} MB")
        print(
            f"event loop lag:     {lags[len(lags) // 2] * 1000:8.1f} ms median, "
            f"{lags[-1] * 1000:.1f} ms max, while recording"
        )

        started = time.perf_counter()
        reader = RecordingReader(path, auditor)
        open_ms = (time.perf_counter() - started) * 1000
        with reader:
            rng = random.Random(2)
            points = [rng.uniform(0, reader.duration) for _ in range(args.seeks)]
            seek_ms, screen_ms = [], []
            for t in points:
                started = time.perf_counter()
                result = reader.seek(t)
                seek_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                result.screen()
                screen_ms.append((time.perf_counter() - started) * 1000)
            print(
                f"open:               {open_ms:8.1f} ms ({len(reader.chunks)} chunks, "
                f"{len(reader.keyframe_index())} keyframes)"
            )
        print(
            f"seek (keyframe+events): {statistics.mean(seek_ms):6.1f} ms mean, "
            f"{max(seek_ms):6.1f} ms max over {len(points)} points (goal < 200 ms)"
        )
        print(
            f"render screen at t:     {statistics.mean(screen_ms):6.1f} ms mean, {max(screen_ms):6.1f} ms max"
        )


if __name__ == "__main__":
    main()
