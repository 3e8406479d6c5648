"""Recorder round trips: events, recipients, keys, keyframes, exports, write failures."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import stat
import subprocess
import termios
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from recorder import (
    ExitEvent,
    InputEvent,
    KeyFileError,
    MarkerEvent,
    NoRecipients,
    NotARecipient,
    OutputEvent,
    RecordingClosed,
    RecordingFailed,
    RecordingReader,
    RecordingWriter,
    ResizeEvent,
    SessionKind,
    SqlResultEvent,
    SqlStatementEvent,
    VerifyStatus,
    WriterSettings,
    export_asciicast,
    export_jsonl,
    fingerprint,
    generate_auditor_key,
    generate_signing_key,
    load_auditor_private_key,
    load_auditor_public_key,
    load_signing_key,
    load_signing_public_key,
    parse_public_key_line,
    public_key_line,
    read_header_unencrypted,
    verify_recording,
    write_key_pair,
)
from recorder.crypto import _has_aes_instructions
from recorder.events import MAX_JSON_EVENT

FAST = WriterSettings(fsync=False)


class FakeClock:
    """A settable session clock, so timestamps and keyframe times are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def auditor() -> X25519PrivateKey:
    return generate_auditor_key()


@pytest.fixture
def signer() -> Ed25519PrivateKey:
    return generate_signing_key()


def new_writer(
    directory: Path,
    auditors: list[X25519PrivateKey],
    signer: Ed25519PrivateKey,
    **kwargs: object,
) -> RecordingWriter:
    args: dict[str, object] = {
        "session_id": "sess-1",
        "user": "alice",
        "target": "web-1",
        "kind": "ssh",
        "recipients": [a.public_key() for a in auditors],
        "signing_key": signer,
        "settings": FAST,
    }
    args.update(kwargs)
    return RecordingWriter(directory, **args)  # type: ignore[arg-type]


async def test_events_round_trip_in_order_with_timestamps(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    clock = FakeClock()
    writer = new_writer(tmp_path, [auditor], signer, clock=clock, cols=100, rows=30, metadata={"request": 42})
    async with writer:
        clock.now += 0.25
        await writer.output(b"$ ")
        clock.now += 1.5
        await writer.input(b"ls\r")
        clock.now += 0.001
        await writer.output(b"ls\r\nfile-a  file-b\r\n")
        await writer.flush()
        clock.now += 2
        await writer.resize(120, 40)
        await writer.marker("approval expires in 5 minutes")
        clock.now += 0.5
        await writer.exit(status=3)
    with RecordingReader(writer.path, auditor) as reader:
        events = list(reader)
        assert not reader.cut_off
        assert reader.header.metadata == {"request": 42}
        assert (reader.header.user, reader.header.target, reader.header.kind) == (
            "alice",
            "web-1",
            SessionKind.SSH,
        )
        assert (reader.header.cols, reader.header.rows) == (100, 30)
    assert events == [
        OutputEvent(0.25, b"$ "),
        InputEvent(1.75, b"ls\r"),
        OutputEvent(1.751, b"ls\r\nfile-a  file-b\r\n"),
        ResizeEvent(3.751, 120, 40),
        MarkerEvent(3.751, "approval expires in 5 minutes"),
        ExitEvent(4.251, status=3),
    ]
    assert verify_recording(writer.path, signer.public_key()).status is VerifyStatus.INTACT


async def test_sql_events_and_signal_exit(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    writer = new_writer(tmp_path, [auditor], signer, kind="postgres")
    async with writer:
        await writer.sql_statement({"sql": "SELECT 1", "database": "app"})
        await writer.sql_result({"rows": 1, "status": "SELECT 1", "elapsed_ms": 0.4})
        await writer.exit(signal="TERM")
        with pytest.raises(TypeError):
            await writer.sql_result({"not json": object()})
        with pytest.raises(ValueError, match="the limit is"):  # to the caller, not the session
            await writer.sql_statement({"sql": "x" * MAX_JSON_EVENT})
    with RecordingReader(writer.path, auditor) as reader:
        assert reader.header.kind is SessionKind.POSTGRES
        events = list(reader)
    assert [type(e) for e in events] == [SqlStatementEvent, SqlResultEvent, ExitEvent]
    assert events[0].payload == {"sql": "SELECT 1", "database": "app"}  # type: ignore[union-attr]
    assert events[2] == ExitEvent(events[2].t, None, "TERM")


async def test_sql_event_payloads_read_back_as_the_standard_json_of_what_was_written(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    payloads = [
        {"statement": "SELECT nom FROM clients WHERE ville = ?", "kind": "select", "blocked": None,
         "rows": 1, "duration_ms": 0.412, "columns": ["nom", "ville"]},
        {"rows": [["Zoë", "Ελλάδα", "東京", "tab\there", 'quote " and \\', "\u2028"]],
         "truncated": False, "masked": {}},
        {"rowcount": 2**70, "status": "SELECT 1180591620717411303424"},  # past 64 bits
        {"nested": {"a": [1.5, -0.0, 1e-7, 12345678901234567890.0]}, 1: "an integer key"},
    ]
    writer = new_writer(tmp_path, [auditor], signer, kind="postgres")
    async with writer:
        for payload in payloads:
            await writer.sql_result(payload)
    with RecordingReader(writer.path, auditor) as reader:
        read = [e.payload for e in reader if isinstance(e, SqlResultEvent)]
    assert read == [json.loads(json.dumps(p)) for p in payloads]


def _cached_bytes(path: Path) -> int:
    """How much of a file is in the page cache (util-linux fincore)."""
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


async def test_synced_output_leaves_the_page_cache_and_still_reads_back(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    rng = random.Random(11)
    pieces = [rng.randbytes(32 * 1024) for _ in range(256)]  # 8 MiB
    writer = new_writer(tmp_path, [auditor], signer, settings=WriterSettings(fsync=True))
    async with writer:
        for piece in pieces[:128]:
            await writer.output(piece)
        await writer.flush()  # on disk: dropped from the cache
        assert _cached_bytes(writer.path) < 64 * 1024, "synced pages stayed in the page cache"
        for piece in pieces[128:]:
            await writer.output(piece)
    assert _cached_bytes(writer.path) < 64 * 1024
    with RecordingReader(writer.path, auditor) as reader:
        read = b"".join(e.data for e in reader if isinstance(e, OutputEvent))
    assert read == b"".join(pieces)
    assert verify_recording(writer.path, signer.public_key()).status is VerifyStatus.INTACT


async def test_binary_output_round_trips_exactly(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    rng = random.Random(7)
    pieces = [rng.randbytes(rng.choice([1, 17, 4096, 70_000, 200_000])) for _ in range(40)]
    typed = rng.randbytes(3000)
    writer = new_writer(tmp_path, [auditor], signer)
    async with writer:
        for piece in pieces:
            await writer.output(piece)
        await writer.input(typed)
    with RecordingReader(writer.path, auditor) as reader:
        events = list(reader)
        assert len(reader.chunks) > 1  # the chunk size limit was exercised
    out = b"".join(e.data for e in events if isinstance(e, OutputEvent))
    inp = b"".join(e.data for e in events if isinstance(e, InputEvent))
    assert out == b"".join(pieces)
    assert inp == typed


async def test_every_recipient_decrypts_and_others_cannot(tmp_path: Path, signer: Ed25519PrivateKey) -> None:
    auditors = [generate_auditor_key() for _ in range(3)]
    writer = new_writer(tmp_path, auditors, signer)
    async with writer:
        await writer.output(b"secret output")
    for auditor in auditors:
        with RecordingReader(writer.path, auditor) as reader:
            assert [e.data for e in reader if isinstance(e, OutputEvent)] == [b"secret output"]
    outsider = generate_auditor_key()
    with pytest.raises(NotARecipient) as info:
        RecordingReader(writer.path, outsider)
    assert fingerprint(outsider) in str(info.value)
    assert set(info.value.recipients) == {fingerprint(a) for a in auditors}
    # The writer holds only public keys: nothing in the file is readable without a recipient key.
    assert b"secret output" not in writer.path.read_bytes()


def test_refuses_to_record_without_recipients(tmp_path: Path, signer: Ed25519PrivateKey) -> None:
    with pytest.raises(NoRecipients):
        new_writer(tmp_path, [], signer)
    assert list(tmp_path.iterdir()) == []


async def test_header_is_listable_without_a_key(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    writer = new_writer(tmp_path, [auditor], signer, metadata={"client": "10.0.0.9"}, kind="mysql")
    async with writer:
        await writer.output(b"x")
    header = read_header_unencrypted(writer.path)
    assert (header.session_id, header.user, header.target, header.kind) == (
        "sess-1",
        "alice",
        "web-1",
        SessionKind.MYSQL,
    )
    assert header.start == writer.header.start
    assert header.metadata is None  # metadata is encrypted
    assert b"10.0.0.9" not in writer.path.read_bytes()
    assert header.recipient_fingerprints == (fingerprint(auditor),)
    assert header.signer_fingerprint == fingerprint(signer)


async def test_write_after_close_is_refused(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    writer = new_writer(tmp_path, [auditor], signer)
    await writer.output(b"a")
    await writer.close()
    await writer.close()  # idempotent
    with pytest.raises(RecordingClosed):
        await writer.output(b"b")
    with pytest.raises(RecordingFailed, match="File exists"):
        new_writer(tmp_path, [auditor], signer)  # never overwrites an existing recording


async def test_jsonl_export(tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey) -> None:
    writer = new_writer(tmp_path, [auditor], signer)
    async with writer:
        await writer.output(b"caf\xc3\xa9 \xff")
        await writer.resize(90, 20)
    out = tmp_path / "events.jsonl"
    with RecordingReader(writer.path, auditor) as reader:
        assert export_jsonl(reader, out) == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["type"] == "header" and lines[0]["session_id"] == "sess-1"
    assert lines[1]["type"] == "output"
    assert lines[1]["text"] == "café \ufffd"
    assert lines[1]["b64"] == "Y2Fmw6kg/w=="
    assert lines[2] == {"t": lines[2]["t"], "type": "resize", "cols": 90, "rows": 20}


def _run_with_tty(argv: list[str]) -> str:
    """Run a command whose stdin is a fresh pty, as its controlling terminal (asciinema needs one)."""
    primary, secondary = os.openpty()

    def take_tty() -> None:  # runs in the child, after setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        result = subprocess.run(
            argv,
            stdin=secondary,
            capture_output=True,
            start_new_session=True,
            preexec_fn=take_tty,
            timeout=30,
            check=False,
        )
    finally:
        os.close(secondary)
        os.close(primary)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


async def test_asciicast_export_plays_in_asciinema(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    writer = new_writer(tmp_path, [auditor], signer)
    async with writer:
        await writer.output(b"hello from the recording\r\n")
        await writer.input(b"whoami\r")
        await writer.resize(132, 43)
        await writer.output("caf\u00e9 ".encode()[:4])  # a UTF-8 character split across writes
        await writer.output("caf\u00e9 ".encode()[4:] + b"done\r\n")
        await writer.marker("checkpoint")
        await writer.exit(0)
    cast = tmp_path / "session.cast"
    with RecordingReader(writer.path, auditor) as reader:
        export_asciicast(reader, cast, include_input=True)
    lines = [json.loads(line) for line in cast.read_text().splitlines()]
    assert lines[0]["version"] == 2 and (lines[0]["width"], lines[0]["height"]) == (80, 24)
    assert isinstance(lines[0]["timestamp"], int)
    assert [e[1] for e in lines[1:]] == ["o", "i", "r", "o", "o", "m", "m"]
    assert lines[3][2] == "132x43"
    played = _run_with_tty(["asciinema", "cat", str(cast)])
    assert "hello from the recording" in played
    assert "café done" in played


async def test_seek_uses_keyframes(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    clock = FakeClock()
    settings = WriterSettings(fsync=False, keyframe_interval=5.0)
    writer = new_writer(tmp_path, [auditor], signer, clock=clock, settings=settings)
    async with writer:
        for second in range(40):
            await writer.output(f"\x1b[2J\x1b[Hscreen at second {second}\r\n".encode())
            await writer.output(f"line {second}\r\n".encode())
            clock.now += 1
    with RecordingReader(writer.path, auditor) as reader:
        index = reader.keyframe_index()
        assert len(index) >= 6
        times = [t for _, t in index]
        assert times == sorted(times)
        result = reader.seek(22.5)
        # It started from a keyframe near t, not from the beginning.
        assert result.chunk > 0 and 17 <= result.keyframe.t <= 22.5
        # A keyframe at t shows the screen as the events before t left it.
        assert f"screen at second {round(result.keyframe.t) - 1}" in result.keyframe.text()
        assert [e.t for e in result.events][-1] == 22.0
        assert all(result.keyframe.t <= e.t <= 22.5 for e in result.events)
        screen = result.screen().text()
        assert "screen at second 22" in screen and "line 22" in screen
        assert "second 21" not in screen and "second 23" not in screen
        assert "screen at second 4\nline 4" in reader.screen_at(4.0).text()


async def test_keyframe_after_a_large_burst_shows_its_end(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    clock = FakeClock()
    settings = WriterSettings(fsync=False, keyframe_bytes=512 * 1024)
    writer = new_writer(tmp_path, [auditor], signer, clock=clock, settings=settings)
    async with writer:
        for i in range(40_000):
            if i % 1000 == 0:
                clock.now += 1
            await writer.output(f"burst line {i:05d}\r\n".encode())
    with RecordingReader(writer.path, auditor) as reader:
        index = reader.keyframe_index()
        assert len(index) >= 2
        chunk, _ = index[-1]
        keyframe = reader.keyframe(chunk)
        shown = [line.strip() for line in keyframe.lines if line.strip()]
        prior = [e for i in range(chunk) for e in reader.read_chunk(i) if isinstance(e, OutputEvent)]
        # The screen holds exactly the last lines written before the keyframe.
        expected = [e.data.decode().strip() for e in prior[-len(shown) :]]
        assert shown == expected
        assert len(shown) == 23  # 24 rows, the cursor on an empty last line


async def test_unwritable_directory_fails_at_once(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    with pytest.raises(RecordingFailed, match="No such file or directory"):
        new_writer(tmp_path / "missing", [auditor], signer)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(RecordingFailed, match="Not a directory"):
        new_writer(not_a_dir, [auditor], signer)


def _fd_of(path: Path) -> int:
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                return int(name)
        except OSError:
            continue
    raise AssertionError(f"{path} is not open")


async def test_disk_full_fails_the_recording(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    failures: list[RecordingFailed] = []
    settings = WriterSettings(fsync=False, flush_interval=0.05)
    writer = new_writer(tmp_path, [auditor], signer, settings=settings, on_failure=failures.append)
    await writer.output(b"before the disk filled up")
    await writer.flush()
    # Point the recording's descriptor at /dev/full: every later write fails with ENOSPC.
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, _fd_of(writer.path))
    finally:
        os.close(full)
    await writer.output(b"lost")
    for _ in range(100):  # the periodic flush finds the failure without any further call
        if writer.failed:
            break
        await asyncio.sleep(0.02)
    assert writer.failed and failures == [writer.failure]
    assert "No space left on device" in str(writer.failure)
    with pytest.raises(RecordingFailed):
        await writer.output(b"more")
    with pytest.raises(RecordingFailed):
        await writer.flush()
    with pytest.raises(RecordingFailed):
        await writer.close()
    with RecordingReader(writer.path, auditor) as reader:
        assert reader.cut_off
        assert [e.data for e in reader if isinstance(e, OutputEvent)] == [b"before the disk filled up"]


async def test_failure_is_reported_on_flush(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    writer = new_writer(tmp_path, [auditor], signer)
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, _fd_of(writer.path))
    finally:
        os.close(full)
    await writer.output(b"x" * 1000)
    with pytest.raises(RecordingFailed, match="No space left on device"):
        await writer.flush()
    with pytest.raises(RecordingFailed):
        await writer.close()


def test_key_files(tmp_path: Path) -> None:
    auditor = generate_auditor_key()
    public_path = write_key_pair(tmp_path / "auditor", auditor, passphrase="correct horse")
    assert stat.S_IMODE((tmp_path / "auditor").stat().st_mode) == 0o600
    assert public_path.read_text().startswith("bastion-recording-x25519 ")
    loaded = load_auditor_private_key(tmp_path / "auditor", "correct horse")
    assert fingerprint(loaded) == fingerprint(auditor)
    assert fingerprint(load_auditor_public_key(public_path)) == fingerprint(auditor)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_auditor_private_key(tmp_path / "auditor", "wrong horse")
    with pytest.raises(KeyFileError, match="passphrase is needed"):
        load_auditor_private_key(tmp_path / "auditor")
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_pair(tmp_path / "auditor", auditor)
    assert b"PRIVATE KEY" in (tmp_path / "auditor").read_bytes()

    signing = generate_signing_key()
    pub = write_key_pair(tmp_path / "signer", signing, comment="bastion-1 recordings")
    assert stat.S_IMODE((tmp_path / "signer").stat().st_mode) == 0o600
    assert fingerprint(load_signing_key(tmp_path / "signer")) == fingerprint(signing)
    assert fingerprint(load_signing_public_key(pub)) == fingerprint(signing)
    with pytest.raises(KeyFileError, match="not an X25519 auditor key"):
        load_auditor_private_key(tmp_path / "signer")
    with pytest.raises(KeyFileError, match="not an Ed25519 signing key"):
        load_signing_key(tmp_path / "auditor", "correct horse")
    with pytest.raises(KeyFileError, match="auditor key"):
        load_signing_public_key(public_path)

    (tmp_path / "garbage").write_text("not a key\n")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_auditor_private_key(tmp_path / "garbage")
    with pytest.raises(KeyFileError, match="not a recording public key"):
        load_auditor_public_key(tmp_path / "garbage")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_auditor_private_key(tmp_path / "absent")
    line = public_key_line(auditor.public_key(), "alice's laptop")
    assert fingerprint(parse_public_key_line(line)) == fingerprint(auditor)
    with pytest.raises(KeyFileError, match="not 32"):
        parse_public_key_line("bastion-recording-x25519 AAAA")


async def test_write_keeps_time_monotonic_and_splits_large_data(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    clock = FakeClock()
    writer = new_writer(tmp_path, [auditor], signer, clock=clock)
    big = bytes(range(256)) * 1000  # 256 000 bytes, more than one event may hold
    async with writer:
        clock.now += 5
        await writer.marker("five")
        await writer.write(OutputEvent(2.0, big))  # earlier than the marker: moved up to 5.0
        await writer.write(ResizeEvent(7.5, 10, 5))
    with RecordingReader(writer.path, auditor) as reader:
        events = list(reader)
    outputs = [e for e in events if isinstance(e, OutputEvent)]
    assert len(outputs) == 4 and all(len(e.data) <= 64 * 1024 for e in outputs)
    assert b"".join(e.data for e in outputs) == big
    assert [e.t for e in events] == [5.0] * 5 + [7.5]


async def test_reader_of_a_file_cut_off_before_its_first_chunk(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    writer = new_writer(tmp_path, [auditor], signer, cols=40, rows=10)
    head = writer.path.read_bytes()  # the header and its signature are written at once
    await writer.close()
    cut = tmp_path / "cut.rec"
    cut.write_bytes(head)
    with RecordingReader(cut, auditor) as reader:
        assert reader.cut_off and reader.last_chunk is None
        assert list(reader) == []
        screen = reader.screen_at(3.0)
        assert (screen.cols, screen.rows, screen.text().strip()) == (40, 10, "")
    result = verify_recording(cut, signer.public_key())
    assert (result.status, result.chunk, result.chunks) == (VerifyStatus.CUT_OFF, None, 0)


async def test_many_recordings_share_a_bounded_set_of_threads(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey
) -> None:
    """A thousand sessions used to mean a thousand recorder threads; now each recording's file
    work runs in order on a shared, bounded set, and every file is still whole and in order."""
    import threading

    from recorder.threads import RECORDER_THREADS

    before = threading.active_count()
    writers = [new_writer(tmp_path, [auditor], signer, session_id=f"s{i}") for i in range(200)]
    for round_ in range(5):
        await asyncio.gather(*(w.output(f"{i}:{round_};".encode()) for i, w in enumerate(writers)))
        await asyncio.gather(*(w.flush() for w in writers))
        assert threading.active_count() - before <= RECORDER_THREADS
    await asyncio.gather(*(w.close() for w in writers))
    for i, writer in enumerate(writers):
        with RecordingReader(writer.path, auditor) as reader:
            shown = b"".join(e.data for e in reader if isinstance(e, OutputEvent))
            assert not reader.cut_off
        assert shown == b"".join(f"{i}:{r};".encode() for r in range(5))


@pytest.mark.parametrize("cipher", ["chacha20-poly1305", "aes-256-gcm"])
async def test_both_chunk_ciphers_round_trip_and_the_header_names_the_one_used(
    tmp_path: Path, auditor: X25519PrivateKey, signer: Ed25519PrivateKey, cipher: str
) -> None:
    writer = new_writer(tmp_path, [auditor], signer, settings=WriterSettings(fsync=False, cipher=cipher),
                        metadata={"reason": "déjà vu"})
    async with writer:
        await writer.output(b"hello\r\n")
        await writer.sql_statement({"statement": "SELECT 1"})
    raw = writer.path.read_bytes()
    assert raw[7] == 2 and f'"cipher":"{cipher}"'.encode() in raw
    with RecordingReader(writer.path, auditor) as reader:
        assert (reader.header.version, reader.header.cipher) == (2, cipher)
        assert reader.header.metadata == {"reason": "déjà vu"}
        assert [type(e) for e in reader] == [OutputEvent, SqlStatementEvent]
    assert verify_recording(writer.path, signer.public_key()).status is VerifyStatus.INTACT
    with pytest.raises(ValueError, match="unknown recording cipher"):
        new_writer(tmp_path, [auditor], signer, session_id="sess-2",
                   settings=WriterSettings(cipher="rot13"))


def test_aes_gcm_is_preferred_only_where_the_cpu_has_aes_instructions(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 aes avx2 sha_ni\n")
    plain = tmp_path / "plain"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 vaes_not_really\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd aes pmull sha1 sha2\n")
    assert _has_aes_instructions(str(x86)) and _has_aes_instructions(str(arm))
    assert not _has_aes_instructions(str(plain))
    assert not _has_aes_instructions(str(tmp_path / "missing"))
