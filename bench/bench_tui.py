"""bastion-tui benchmark: showing a long sessions list, opening a large recording, seeking in it.

Usage: .venv/bin/python bench/bench_tui.py [--sessions 10000] [--mib 100] [--seeks 20]

1. Seeds a real state store (SQLite, the bastion's own store code) with `--sessions` sessions and
   runs the TUI headless in local mode: the time from start (config, store, auditor key) until the
   list is on screen, then the time to re-filter and re-sort the whole list.
2. Records `--mib` MiB of coloured terminal output with the recorder (default settings, no fsync)
   and opens it as the replay screen does: verify, decrypt, first screen (time 0); then the
   background index pass; then `--seeks` random seeks, each one the emulator's screen at t
   (keyframe + events) plus drawing every row as the terminal widget does. Goal: < 200 ms a seek.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run from a checkout without installing: the repository root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bastion.models import SessionRecord, SessionStatus
from bastion.store import open_store
from recorder import (
    RecordingReader,
    RecordingWriter,
    WriterSettings,
    generate_auditor_key,
    generate_signing_key,
    write_key_pair,
)
from tui.app import BastionTUI
from tui.integrity import check_recording
from tui.replay.index import build_index
from tui.replay.player import Player
from tui.replay.render import render_row
from tui.screens.sessions import SessionsScreen
from tui.sources import LocalSource

MIB = 1024 * 1024
WORDS = "error warning info request user session target select from where 200 404 ok".split()
START = datetime(2026, 11, 1, tzinfo=UTC)


def config_text(root: Path, auditor_pub: Path) -> str:
    return f"""
[server]
listen = "127.0.0.1:2222"
data_dir = "{root / 'data'}"

[recordings]
dir = "{root / 'recordings'}"
auditor_keys = ["{auditor_pub}"]

[[roles]]
name = "auditor"
audit = ["*"]

[[users]]
name = "carol"
roles = ["auditor"]
public_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"]

[[targets]]
name = "prod"
kind = "ssh"
address = "127.0.0.1:22"
login = "root"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
approvals_required = 0
"""


async def seed_sessions(root: Path, count: int) -> None:
    """Two sessions through the store's own code, then copies of them in bulk (fast)."""
    db = root / "data" / "state.db"
    store = await open_store(f"sqlite:///{db}")
    try:
        req = await store.create_request(
            user="user000", target="prod", reason="INC-1", duration=timedelta(hours=1),
            approvals_required=0, pending_until=START + timedelta(days=60), now=START)
        for i in range(2):
            started = START + timedelta(seconds=i)
            await store.start_session(SessionRecord(
                id=f"template{i}", user="user000", target="prod", kind="ssh", request_id=req.id,
                cert_serial=i, client="10.0.0.1:1", bastion_id="bench", started_at=started,
                recording=None))
            await store.end_session(f"template{i}", status=SessionStatus.ENDED,
                                    reason="exit status 0", now=started + timedelta(seconds=60))
    finally:
        await store.close()
    rng = random.Random(1)
    with sqlite3.connect(db) as conn:
        cursor = conn.execute("SELECT * FROM sessions ORDER BY started_at")
        names = [d[0] for d in cursor.description]
        first, second = (dict(zip(names, row, strict=True)) for row in cursor.fetchall())
        unit = second["started_at"] - first["started_at"]  # the store's time unit per second
        user_column = "username" if "username" in names else "user"
        rows = []
        for i in range(count):
            row = dict(first)
            row["id"] = f"s{i:06d}"
            row[user_column] = f"user{rng.randrange(50):03d}"
            row["target"] = rng.choice(["prod", "db", "staging"])
            row["started_at"] = first["started_at"] + i * 97 * unit
            row["ended_at"] = row["started_at"] + rng.randint(1, 7200) * unit
            rows.append(tuple(row[n] for n in names))
        conn.execute("DELETE FROM sessions")
        conn.executemany(f"INSERT INTO sessions ({', '.join(names)}) "
                         f"VALUES ({', '.join('?' for _ in names)})", rows)


async def list_timing(root: Path, key: Path) -> tuple[float, float, float]:
    source = LocalSource(root / "bastion.toml")
    app = BastionTUI(source, key, refresh_interval=3600)
    started = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        while not isinstance(app.screen, SessionsScreen) or not app.screen.ready_event.is_set():
            if app.startup_error:
                raise SystemExit(app.startup_error)
            await asyncio.sleep(0.005)
        await pilot.pause()
        shown = time.perf_counter() - started
        screen = app.screen
        assert isinstance(screen, SessionsScreen) and len(screen.shown) == len(screen.sessions)
        t0 = time.perf_counter()
        screen.action_sort()  # by user: every row again
        resort = time.perf_counter() - t0
        from tui.filters import parse_query

        t0 = time.perf_counter()
        screen._query = parse_query("user:user007", ("user",))
        screen.populate()
        refilter = time.perf_counter() - t0
        await pilot.press("ctrl+q")
    return shown, resort, refilter


def terminal_text(size: int, seed: int = 1) -> bytes:
    """Log-like output with colours, and a full-screen program now and then."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    total = 0
    while total < size:
        if rng.random() < 0.002:
            part = b"\x1b[?1049h\x1b[H\x1b[2J" + b"".join(
                f"\x1b[{y};1H\x1b[7m top \x1b[0m {rng.random():.6f}".encode() for y in range(1, 24)
            ) + b"\x1b[?1049l"
        else:
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
            part = f"\x1b[32m{rng.randint(0, 99999):05d}\x1b[0m {words}\r\n".encode()
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def record(directory: Path, mib: int, auditor: X25519PrivateKey) -> tuple[Path, float]:
    signer = generate_signing_key()
    clock = Clock()
    writer = RecordingWriter(directory, session_id="big", user="bench", target="prod", kind="ssh",
                             recipients=[auditor.public_key()], signing_key=signer, clock=clock,
                             settings=WriterSettings(fsync=False))
    block = terminal_text(8 * MIB)
    step = 4096
    for offset in range(0, mib * MIB, step):
        start = offset % len(block)
        await writer.output(block[start : start + step])
        clock.now += 0.025
    await writer.close()
    return writer.path, clock.now


def draw(player: Player) -> None:
    screen = player.screen
    for y in range(screen.lines):
        render_row(screen, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--seeks", type=int, default=20)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        (root / "recordings").mkdir()
        key = root / "auditor"
        identity = generate_auditor_key()
        write_key_pair(key, identity)
        (root / "bastion.toml").write_text(config_text(root, Path(f"{key}.pub")))
        started = time.perf_counter()
        asyncio.run(seed_sessions(root, args.sessions))
        print(f"seeded {args.sessions} sessions in {time.perf_counter() - started:.1f} s")
        shown, resort, refilter = asyncio.run(list_timing(root, key))
        print(f"list: start to {args.sessions} sessions on screen: {shown * 1000:8.0f} ms")
        print(f"list: re-sort all rows:                   {resort * 1000:8.0f} ms")
        print(f"list: re-filter (user:user007):           {refilter * 1000:8.0f} ms")

        started = time.perf_counter()
        path, duration = asyncio.run(record(root / "recordings", args.mib, identity))
        print(f"recorded {path.stat().st_size / 1e6:.1f} MB, {duration:.0f} s of session, in "
              f"{time.perf_counter() - started:.1f} s")
        t0 = time.perf_counter()
        integrity = check_recording(path, None)
        t1 = time.perf_counter()
        reader = RecordingReader(path, identity)
        player = Player(reader)
        draw(player)
        t2 = time.perf_counter()
        assert integrity.trustworthy, integrity.banner()
        print(f"open: verify {(t1 - t0) * 1000:.0f} ms + decrypt and first screen "
              f"{(t2 - t1) * 1000:.0f} ms = {(t2 - t0) * 1000:.0f} ms "
              f"({len(reader.chunks)} chunks, {len(reader.keyframe_index())} keyframes)")
        t0 = time.perf_counter()
        index = build_index(path, identity)
        print(f"index pass (background): {(time.perf_counter() - t0) * 1000:.0f} ms, "
              f"{index.events} events")
        rng = random.Random(2)
        points = [rng.uniform(0, player.duration) for _ in range(args.seeks)]
        times = []
        for t in points:
            t0 = time.perf_counter()
            player.seek(t)
            draw(player)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        print(f"seek + draw, {len(times)} random points: median {statistics.median(times):.0f} ms, "
              f"p90 {times[int(len(times) * 0.9) - 1]:.0f} ms, max {times[-1]:.0f} ms "
              f"(goal < 200 ms)")
        reader.close()


if __name__ == "__main__":
    main()
