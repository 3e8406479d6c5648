"""A fixed world for the TUI tests: a real config, state store and recordings (no tests here).

Everything the screens show is fixed (ids, times, keys, recording contents) so that pilot tests
can name what they expect and SVG snapshots do not change from run to run. The store is the
bastion's own SQLite store and the recordings are written by the recorder's own writer; only
their contents are chosen here instead of coming from a live session (test_tui_live.py does that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from harness import World

from bastion.models import AuditEvent, Decision, SessionRecord, SessionStatus
from bastion.store import open_store
from recorder import (
    Event,
    ExitEvent,
    InputEvent,
    MarkerEvent,
    OutputEvent,
    RecordingWriter,
    ResizeEvent,
    SqlResultEvent,
    SqlStatementEvent,
    WriterSettings,
    write_key_pair,
)
from tui.app import BastionTUI
from tui.sources import LocalSource

__all__ = ["NOW", "Seeded", "flip_byte", "local_app", "seed", "seed_sync", "write_recording"]

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
AUDITOR_KEY = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(33, 65)))
OTHER_AUDITOR_KEY = X25519PrivateKey.from_private_bytes(bytes(range(65, 97)))
USERS = {"alice": ["developer"], "bob": ["approver"], "dave": ["approver"], "carol": ["auditor"]}
# Few chunks, cut only where `write_recording` is told to flush: the layout is the same each run.
SETTINGS = WriterSettings(flush_interval=3600.0, signature_interval=3600.0, fsync=False,
                          signature_every_chunks=2)

# Session ids, oldest first.
SHELL = "s-0001-shell"
SQL = "s-0002-sql"
TAMPERED = "s-0003-tampered"
CUT_OFF = "s-0004-cutoff"
LIVE = "s-0005-live"
NO_RECORDING = "s-0006-norec"

# A shell session: a command, `less` on the alternate screen, a hostile OSC, a resize, markers.
SHELL_EVENTS: tuple[Event | None, ...] = (
    OutputEvent(0.2, b"$ "),
    InputEvent(1.0, b"l"), InputEvent(1.1, b"s"), InputEvent(1.2, b"\r"),
    OutputEvent(1.25, b"ls\r\nREADME  notes.txt\r\n$ "),
    MarkerEvent(2.0, "checking notes"),
    InputEvent(3.0, b"less notes.txt\r"),
    OutputEvent(3.1, b"less notes.txt\r\n"),
    OutputEvent(3.2, b"\x1b[?1049h\x1b[H\x1b[2J\x1b[1;31mNOTES\x1b[0m\r\nfirst line\r\n"
                     b"second line\r\n\x1b[7m(END)\x1b[27m"),
    None,  # flush: a chunk ends here
    InputEvent(35.0, b"q"),
    OutputEvent(35.1, b"\r\x1b[K\x1b[?1049l\r$ "),
    InputEvent(37.0, b"printf '\\033]0;pwned\\007'\r"),
    OutputEvent(37.1, b"printf '\\033]0;pwned\\007'\r\n\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07$ "),
    None,
    ResizeEvent(40.0, 100, 30),
    InputEvent(41.0, b"echo done\r"),
    OutputEvent(41.1, b"echo done\r\n\x1b[32mdone\x1b[0m\r\n$ "),
    MarkerEvent(45.0, "end of checks"),
    InputEvent(46.0, b"exit\r"),
    OutputEvent(46.1, b"exit\r\n"),
    ExitEvent(46.2, 0, None),
)

SQL_EVENTS: tuple[Event | None, ...] = (
    OutputEvent(0.1, b"db=> "),
    InputEvent(1.0, b"SELECT id, name, email FROM customers;\r"),
    OutputEvent(1.2, b"SELECT id, name, email FROM customers;\r\n id | name | email\r\n"
                     b"  1 | Ada  | ***\r\n  2 | Bob  | ***\r\n(2 rows)\r\ndb=> "),
    SqlStatementEvent(1.2, {"statement": "SELECT id, name, email FROM customers", "kind": "select",
                            "blocked": None, "error": None, "rows": 2, "status": "SELECT 2",
                            "duration_ms": 1.5}),
    SqlResultEvent(1.2, {"columns": ["id", "name", "email"], "masked": {"email": "redact"},
                         "rows": [["1", "Ada", "***"], ["2", "Bob", "***"]], "rowcount": 2,
                         "truncated": False}),
    InputEvent(4.0, b"COPY customers TO STDOUT;\r"),
    OutputEvent(4.1, b"COPY customers TO STDOUT;\r\nbastion: refused: COPY TO STDOUT\r\ndb=> "),
    SqlStatementEvent(4.1, {"statement": "COPY customers TO STDOUT", "kind": "copy",
                            "blocked": "COPY ... TO STDOUT would bypass masking", "error": None,
                            "rows": None, "status": None, "duration_ms": 0.2}),
    ExitEvent(6.0, 0, None),
)

SMALL_EVENTS: tuple[Event | None, ...] = (
    OutputEvent(0.1, b"$ "),
    InputEvent(1.0, b"uptime\r"),
    OutputEvent(1.1, b"uptime\r\n 12:00:01 up 3 days\r\n$ "),
    None,
    InputEvent(2.0, b"cat /etc/hostname\r"),
    OutputEvent(2.1, b"cat /etc/hostname\r\nprod-1\r\n$ "),
    None,
    InputEvent(3.0, b"exit\r"),
    ExitEvent(3.2, 0, None),
)


class _Clock:
    """The writer's clock: session time is whatever the last event said."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def write_recording(
    directory: Path,
    session_id: str,
    user: str,
    target: str,
    kind: str,
    events: Sequence[Event | None],
    *,
    start: datetime,
    recipient: X25519PrivateKey = AUDITOR_KEY,
) -> tuple[Path, list[int]]:
    """Write a recording; None in `events` flushes a chunk. Return the path and sizes after flushes."""
    clock = _Clock()
    writer = RecordingWriter(
        directory, session_id=session_id, user=user, target=target, kind=kind,
        recipients=[recipient.public_key()], signing_key=SIGNING_KEY, start=start,
        settings=SETTINGS, clock=clock,
    )
    sizes: list[int] = []
    for event in events:
        if event is None:
            await writer.flush()
            sizes.append(writer.path.stat().st_size)
            continue
        clock.t = event.t
        await writer.write(event)
    await writer.flush()
    sizes.append(writer.path.stat().st_size)
    await writer.close()
    return writer.path, sizes


def flip_byte(path: Path, offset_from_end: int) -> None:
    """Change one byte of a file, as an attacker editing a recording would."""
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


@dataclass(frozen=True)
class Seeded:
    """Where the seeded world lives."""

    world: World
    config: Path
    auditor_key: Path
    other_key: Path
    recordings: Path

    def recording(self, session_id: str) -> Path:
        return self.recordings / f"{session_id}.rec"


async def seed(root: Path) -> Seeded:
    """Create config, keys, store (requests, sessions, audit events) and recordings under `root`."""
    world = World(root=root, port=2222, users=dict(USERS))
    keys = root / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    write_key_pair(keys / "auditor", AUDITOR_KEY)
    write_key_pair(keys / "other-auditor", OTHER_AUDITOR_KEY)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_key_pair(data / "recording_signing_key", SIGNING_KEY, comment="bastion recording signer")
    recordings = root / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    config = world.write_config()
    store = await open_store(f"sqlite:///{data / 'state.db'}")
    try:
        await _seed_store(store, recordings)
    finally:
        await store.close()
    return Seeded(world, config, keys / "auditor", keys / "other-auditor", recordings)


async def _seed_store(store: object, recordings: Path) -> None:
    from bastion.store import Store

    assert isinstance(store, Store)
    day = NOW - timedelta(hours=3)
    r1 = await store.create_request(user="alice", target="prod", reason="INC-42: stuck payments",
                                    duration=timedelta(hours=1), approvals_required=1,
                                    pending_until=day + timedelta(hours=24), now=day)
    await store.add_review(r1.id, reviewer="bob", decision=Decision.APPROVE, comment="go ahead",
                           now=day + timedelta(minutes=2))
    r2 = await store.create_request(user="alice", target="critical", reason="rotate keys",
                                    duration=timedelta(hours=2), approvals_required=2,
                                    pending_until=NOW + timedelta(hours=20),
                                    now=NOW - timedelta(hours=1))
    await store.add_review(r2.id, reviewer="bob", decision=Decision.DENY,
                           comment="not during the freeze", now=NOW - timedelta(minutes=50))
    await store.create_request(user="alice", target="staging", reason="debug the login page",
                               duration=timedelta(minutes=30), approvals_required=1,
                               pending_until=NOW + timedelta(hours=23),
                               now=NOW - timedelta(minutes=30))

    specs = [
        (SHELL, "alice", "prod", "ssh", SHELL_EVENTS, day + timedelta(minutes=5), 47),
        (SQL, "alice", "prod", "postgres", SQL_EVENTS, day + timedelta(minutes=20), 6),
        (TAMPERED, "bob", "staging", "ssh", SMALL_EVENTS, day + timedelta(minutes=40), 4),
        (CUT_OFF, "alice", "critical", "ssh", SMALL_EVENTS, day + timedelta(minutes=60), 4),
        (LIVE, "alice", "prod", "ssh", SMALL_EVENTS, NOW - timedelta(minutes=7), 0),
    ]
    for sid, user, target, kind, events, start, seconds in specs:
        path, sizes = await write_recording(recordings, sid, user, target, kind, events, start=start)
        if sid == TAMPERED:
            # A byte inside the second chunk's ciphertext: the hash chain no longer matches.
            flip_byte(path, path.stat().st_size - sizes[0] - 40)
        elif sid in (CUT_OFF, LIVE):
            with path.open("r+b") as f:  # the bastion stopped after two chunks
                f.truncate(sizes[1])
        await store.start_session(SessionRecord(
            id=sid, user=user, target=target, kind=kind, request_id=r1.id, cert_serial=100,
            client="127.0.0.1:50000", bastion_id="test", started_at=start, recording=str(path)))
        if sid != LIVE:
            status = SessionStatus.ENDED_ABNORMALLY if sid == CUT_OFF else SessionStatus.ENDED
            reason = "bastion restarted" if sid == CUT_OFF else "exit status 0"
            await store.end_session(sid, status=status, reason=reason,
                                    now=start + timedelta(seconds=seconds))
    start = NOW - timedelta(minutes=2)
    await store.start_session(SessionRecord(
        id=NO_RECORDING, user="bob", target="staging", kind="ssh", request_id=r1.id,
        cert_serial=101, client="127.0.0.1:50001", bastion_id="test", started_at=start,
        recording=None))
    await store.end_session(NO_RECORDING, status=SessionStatus.ENDED, reason="refused",
                            now=start + timedelta(seconds=1))

    audit = [
        ("request.created", "alice", "prod", r1.id, None, {"reason": "INC-42: stuck payments"}),
        ("request.approved", "bob", "prod", r1.id, None, {"comment": "go ahead"}),
        ("login.success", "alice", "prod", r1.id, None, {"client": "127.0.0.1"}),
        ("session.started", "alice", "prod", r1.id, SHELL, {"command": None}),
        ("login.refused", "mallory", None, None, None, {"why": "unknown key \x1b[31mred"}),
        ("request.denied", "bob", "critical", r2.id, None, {"comment": "not during the freeze"}),
    ]
    for i, (kind, actor, target, request_id, session_id, details) in enumerate(audit):
        await store.append_audit(AuditEvent(kind=kind, at=day + timedelta(minutes=i),
                                            actor=actor, target=target, request_id=request_id,
                                            session_id=session_id, details=details))


def seed_sync(root: Path) -> Seeded:
    """`seed` for synchronous tests (snapshots run their own event loop)."""
    return asyncio.run(seed(root))


def local_app(seeded: Seeded, key: Path | None = None) -> BastionTUI:
    """The TUI on the seeded world in local mode, with a fixed clock and description."""
    source = LocalSource(seeded.config, clock=lambda: NOW)
    source.description = "local: bastion.toml"
    return BastionTUI(source, key or seeded.auditor_key, clock=lambda: NOW, refresh_interval=3600)
