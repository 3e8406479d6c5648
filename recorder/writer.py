"""The recording writer: an async front end on the session's loop, file work on a strand.

Callers `await writer.output(...)` etc.; each event is appended to the pending chunk right there,
on the caller's loop (no queue, no task per event), and a chunk is handed to the recording's
strand (recorder/threads.py) when it is large, once a second while there is unsynced work, before
a keyframe, on flush and at close. The strand snapshots the screen, encrypts, signs and writes.
When the strand is behind, callers wait for it instead of events being dropped: nothing is ever
skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from recorder.crypto import ChunkCipher, new_file_key, preferred_cipher, raw_public, wrap_file_key
from recorder.errors import NoRecipients, RecordingClosed, RecordingFailed
from recorder.events import (
    MAX_DATA_EVENT,
    Event,
    EventType,
    ExitEvent,
    FileDataEvent,
    InputEvent,
    KeyframeEvent,
    MarkerEvent,
    OutputEvent,
    ResizeEvent,
    SqlResultEvent,
    SqlStatementEvent,
    encode_event,
    encode_event_parts,
    json_event_parts,
    to_us,
)
from recorder.format import (
    FILE_ID_SIZE,
    FLAG_FINAL,
    FLAG_KEYFRAME,
    FORMAT_VERSION,
    ChunkPrefix,
    FrameType,
    RecordingHeader,
    SessionKind,
    SignatureBody,
    chain_next,
    chain_start,
    chunk_aad,
    encode_frame,
    frame_hasher,
    frame_head,
    preamble,
    valid_session_id,
)
from recorder.keyframes import TerminalEmulator
from recorder.preallocation import Preallocation
from recorder.threads import Strand

__all__ = ["RECORDING_SUFFIX", "RecordingWriter", "WriterSettings"]

RECORDING_SUFFIX: Final = ".rec"
# Jobs allowed in the worker thread at once: one being written while the next one is built.
MAX_IN_FLIGHT: Final = 2


@dataclass(frozen=True)
class WriterSettings:
    """Tuning knobs; the defaults follow the product design."""

    flush_interval: float = 1.0
    max_chunk_bytes: int = 1024 * 1024  # fewer hand-overs than 256 KiB: less CPU per GiB
    signature_every_chunks: int = 8
    signature_interval: float = 10.0
    keyframe_interval: float = 30.0
    keyframe_bytes: int = 4 * 1024 * 1024
    keyframe_min_interval: float = 2.0
    fsync: bool = True
    # The chunks' AEAD (recorder.crypto.CIPHERS); None: AES-256-GCM where the CPU has AES
    # instructions, ChaCha20-Poly1305 elsewhere.
    cipher: str | None = None


@dataclass(frozen=True, slots=True)
class _Encoded:
    """A JSON event encoded once, by the caller (who learns there if it is too large)."""

    t: float
    parts: tuple[bytes, bytes]


@dataclass
class _Job:
    events: list[Event | _Encoded]
    t_us: int
    final: bool = False
    keyframe: bool = False
    sync: bool = False


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_FADVISE = getattr(os, "posix_fadvise", None)  # Linux and most Unixes


class _Sink:
    """The file side; only ever used by one thread at a time."""

    def __init__(
        self,
        fd: int,
        directory: Path,
        header: RecordingHeader,
        cipher: ChunkCipher,
        signing_key: Ed25519PrivateKey,
        settings: WriterSettings,
    ) -> None:
        self._fd = fd
        self._space = Preallocation(fd)
        self._directory: Path | None = directory
        self._cipher = cipher
        self._signing_key = signing_key
        self._settings = settings
        self._emulator = TerminalEmulator(header.cols, header.rows)
        self._index = 0
        self._unsigned: list[bytes] = []
        self._last_signature = time.monotonic()
        self._dirty = False
        self._broken = False
        self._cached_from = 0  # the file's bytes before this offset are on disk and out of the cache
        header_frame = encode_frame(FrameType.HEADER, header.encode())
        self._version = header.version
        self._header_hash = frame_hasher(header.version)(header_frame).digest()
        self._chain = chain_next(chain_start(header.version), self._header_hash, header.version)
        # Written at once so a bad directory fails the constructor; the fsync waits for the
        # first tick, in the worker thread, to keep the event loop free.
        self._write([preamble(header.version), header_frame, self._signature(final=False)])

    def _write(self, parts: list[bytes]) -> None:
        views = [memoryview(p) for p in parts if p]
        self._space.reserve(sum(len(v) for v in views))
        while views:
            written = os.writev(self._fd, views)
            self._space.wrote(written)
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if views and written:
                views[0] = views[0][written:]
        self._dirty = True

    def _sync(self) -> None:
        if self._settings.fsync and self._dirty:
            os.fsync(self._fd)
            self._drop_from_cache()
            if self._directory is not None:
                # Once, so that the new file's directory entry survives a power loss too.
                dir_fd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
                self._directory = None
        self._dirty = False

    def _drop_from_cache(self) -> None:
        """Once on disk, the bytes just synced leave the page cache: a recording is written once
        and read rarely, and writing into a page cache full of earlier recordings costs the
        writing thread about twice the CPU (2 GiB in 1 MiB writes here: 0.8 s per GiB, 0.42
        with pages dropped after each sync)."""
        end = self._space.size - self._space.size % _PAGE
        if end > self._cached_from and _FADVISE is not None:
            with contextlib.suppress(OSError):  # advice only
                _FADVISE(self._fd, self._cached_from, end - self._cached_from,
                         os.POSIX_FADV_DONTNEED)
            self._cached_from = end

    def _signature(self, final: bool) -> bytes:
        body = SignatureBody(self._index, final, tuple(self._unsigned), self._chain, b"")
        signed = SignatureBody(
            body.covered, final, body.chunk_hashes, body.chain, self._signing_key.sign(body.message())
        )
        self._unsigned = []
        self._last_signature = time.monotonic()
        return encode_frame(FrameType.SIGNATURE, signed.pack())

    def process(self, job: _Job) -> None:
        """Write one chunk (if it has content or is final), and a signature frame when due."""
        if self._broken:
            raise RecordingFailed("an earlier write of this recording failed")
        try:
            self._process(job)
        except BaseException:
            # Nothing more goes after a failed write: the file would have a hole in it.
            self._broken = True
            raise

    def _process(self, job: _Job) -> None:
        out: list[bytes] = []
        if job.events or job.final or job.keyframe:
            out = self._chunk(job)
        due = (
            job.final
            or len(self._unsigned) >= self._settings.signature_every_chunks
            or time.monotonic() - self._last_signature >= self._settings.signature_interval
        )
        if (self._unsigned and due) or job.final:
            out.append(self._signature(job.final))
        if out:
            self._write(out)
        if job.sync or job.final:
            self._sync()

    def _chunk(self, job: _Job) -> list[bytes]:
        """The chunk frame as pieces (header, prefix, sealed body): written and hashed without
        joining them, since recording bulk output is bound by copying bytes."""
        parts: list[bytes] = []
        if job.keyframe:
            snapshot = self._emulator.snapshot(job.t_us / 1_000_000)
            parts.append(encode_event(KeyframeEvent(snapshot.t, snapshot.to_json())))
        for event in job.events:
            parts.extend(event.parts if isinstance(event, _Encoded) else encode_event_parts(event))
            if isinstance(event, OutputEvent):
                self._emulator.feed(event.data)
            elif isinstance(event, ResizeEvent):
                self._emulator.resize(event.cols, event.rows)
        flags = (FLAG_FINAL if job.final else 0) | (FLAG_KEYFRAME if job.keyframe else 0)
        prefix = ChunkPrefix(self._index, flags, job.t_us).pack()
        sealed = self._cipher.seal_chunk(
            self._index, job.final, b"".join(parts), chunk_aad(self._header_hash, prefix)
        )
        head = frame_head(FrameType.CHUNK, len(prefix) + len(sealed))
        digest = frame_hasher(self._version)(head)
        digest.update(prefix)
        digest.update(sealed)
        frame_hash = digest.digest()
        self._chain = chain_next(self._chain, frame_hash, self._version)
        self._unsigned.append(frame_hash)
        self._index += 1
        return [head, prefix, sealed]

    def close(self) -> None:
        """Release the blocks reserved past the end, and close the file descriptor."""
        try:
            self._space.release()
        finally:
            os.close(self._fd)


_DATA_EVENTS: Final = frozenset((OutputEvent, InputEvent, FileDataEvent))
_KEYFRAME_CLOCK: Final = frozenset((OutputEvent, ResizeEvent))  # what counts toward keyframes


def _event_size(event: Event | _Encoded) -> int:
    # Exact types (the event classes are final in practice): isinstance with a union of three
    # classes cost a microsecond a call, and every relayed SQL statement makes two events.
    kind = type(event)
    if kind is _Encoded:
        return len(event.parts[1]) + 13  # type: ignore[union-attr]
    if kind in _DATA_EVENTS:
        return len(event.data) + 13  # type: ignore[union-attr]
    return 64


class RecordingWriter:
    """Writes one session's recording; create it, feed it events, close it."""

    def __init__(
        self,
        directory: str | Path,
        *,
        session_id: str,
        user: str,
        target: str,
        kind: SessionKind | str,
        recipients: Iterable[X25519PublicKey],
        signing_key: Ed25519PrivateKey,
        cols: int = 80,
        rows: int = 24,
        metadata: Mapping[str, Any] | None = None,
        start: datetime | None = None,
        settings: WriterSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[RecordingFailed], None] | None = None,
    ) -> None:
        """Create the file and write its header; raise RecordingFailed if it cannot be created."""
        keys = {raw_public(k): k for k in recipients}
        if not keys:
            raise NoRecipients("refusing to record without an auditor public key to encrypt to")
        if not valid_session_id(session_id):
            raise ValueError(f"session id {session_id!r} cannot name a recording file")
        if not (1 <= cols <= 0xFFFF and 1 <= rows <= 0xFFFF):
            raise ValueError(f"bad terminal size {cols}x{rows}")
        if start is not None and start.tzinfo is None:
            raise ValueError("the start time must be timezone-aware")
        self._settings = settings or WriterSettings()
        self._clock = clock
        self._t0 = clock()
        self._last_t = 0.0
        self._on_failure = on_failure
        self.path = Path(directory) / f"{session_id}{RECORDING_SUFFIX}"
        file_key, file_id = new_file_key(), os.urandom(FILE_ID_SIZE)
        cipher_name = self._settings.cipher or preferred_cipher()
        cipher = ChunkCipher(file_key, file_id, cipher_name)
        meta = json.dumps(dict(metadata or {}), separators=(",", ":"), ensure_ascii=False)
        self.header = RecordingHeader(
            session_id=session_id,
            user=user,
            target=target,
            kind=SessionKind(kind),
            start=start or datetime.now(UTC),
            cols=cols,
            rows=rows,
            file_id=file_id,
            signer=raw_public(signing_key.public_key()),
            recipients=tuple(wrap_file_key(file_key, k, file_id) for k in keys.values()),
            metadata=dict(metadata or {}),
            sealed_metadata=cipher.seal_metadata(meta.encode()),
            version=FORMAT_VERSION,
            cipher=cipher_name,
        )
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise RecordingFailed(f"cannot create recording {self.path}: {exc.strerror}") from exc
        try:
            self._sink = _Sink(fd, self.path.parent, self.header, cipher, signing_key, self._settings)
        except OSError as exc:
            os.close(fd)
            raise RecordingFailed(f"cannot write recording {self.path}: {exc.strerror}") from exc
        self._executor: Strand | None = Strand()  # this recording's file work, in order
        self._pending: list[Event | _Encoded] = []
        self._pending_bytes = 0
        self._in_flight: deque[asyncio.Future[None]] = deque()
        self._released: asyncio.Future[None] | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._unsynced = False  # chunks handed to the strand since the last fsync
        self._keyframe_next = True  # chunk 0 starts with the (blank) initial screen
        self._keyframe_t = 0.0
        self._last_keyframe_t = 0.0
        self._output_since_keyframe = 0
        self._failure: RecordingFailed | None = None
        self._closing = False
        self._closed = False

    # -- state ----------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        """Whether writing failed (the session must end)."""
        return self._failure is not None

    @property
    def failure(self) -> RecordingFailed | None:
        """The error that stopped the recording, if any."""
        return self._failure

    @property
    def closed(self) -> bool:
        """Whether `close()` completed."""
        return self._closed

    def now(self) -> float:
        """Return the session time offset of an event happening now."""
        return max(self._last_t, self._clock() - self._t0)

    # -- events ---------------------------------------------------------------------------

    async def output(self, data: bytes) -> None:
        """Record bytes sent to the user's terminal."""
        if not data:
            return
        t = self.now()
        for i in range(0, max(len(data), 1), MAX_DATA_EVENT):
            await self._put(OutputEvent(t, bytes(data[i : i + MAX_DATA_EVENT])))

    async def input(self, data: bytes) -> None:
        """Record bytes the user typed."""
        if not data:
            return
        t = self.now()
        for i in range(0, max(len(data), 1), MAX_DATA_EVENT):
            await self._put(InputEvent(t, bytes(data[i : i + MAX_DATA_EVENT])))

    async def resize(self, cols: int, rows: int) -> None:
        """Record a terminal size change."""
        if not (1 <= cols <= 0xFFFF and 1 <= rows <= 0xFFFF):
            raise ValueError(f"bad terminal size {cols}x{rows}")
        await self._put(ResizeEvent(self.now(), cols, rows))

    async def exit(self, status: int | None = None, signal: str | None = None) -> None:
        """Record how the remote program ended."""
        await self.write(ExitEvent(self.now(), status, signal))

    async def marker(self, label: str) -> None:
        """Put a label on the timeline."""
        await self._put(MarkerEvent(self.now(), label))

    async def sql_statement(self, payload: Mapping[str, Any]) -> None:
        """Record a SQL statement (a JSON object chosen by the proxy)."""
        await self._put_json(EventType.SQL_STATEMENT, payload)

    async def file_data(self, upload: bool, data: bytes, file: int = 0, offset: int = 0) -> None:
        """Record bytes of a transferred file (upload: from the user) at `offset` of the file
        the session opened as number `file`."""
        await self.write(FileDataEvent(self.now(), upload, data, file, offset))

    async def sql_result(self, payload: Mapping[str, Any]) -> None:
        """Record the outcome of a SQL statement (a JSON object)."""
        await self._put_json(EventType.SQL_RESULT, payload)

    async def _put_json(self, kind: EventType, payload: Mapping[str, Any]) -> None:
        """Encode a JSON event now (a payload over the limit raises to the caller) and queue it;
        no event object on the way (a relayed statement records two)."""
        t = self.now()
        body = payload if type(payload) is dict else dict(payload)  # an object, as the reader wants
        await self._put(_Encoded(t, json_event_parts(kind, t, body)))

    async def write(self, event: Event) -> None:
        """Record an event with its own time offset (kept non-decreasing)."""
        if isinstance(event, KeyframeEvent):
            raise ValueError("keyframes are made by the writer itself")
        if event.t < self._last_t:
            event = dataclasses.replace(event, t=self._last_t)
        if isinstance(event, ExitEvent | SqlStatementEvent | SqlResultEvent):
            # Encoded here (as sql_statement and sql_result do), so that a payload over the
            # limit raises to the caller: in the worker thread it would end the session.
            await self._put(_Encoded(event.t, encode_event_parts(event)))
            return
        if isinstance(event, OutputEvent | InputEvent | FileDataEvent):
            for i in range(0, len(event.data), MAX_DATA_EVENT):
                piece = event.data[i : i + MAX_DATA_EVENT]
                if isinstance(event, FileDataEvent):
                    await self._put(dataclasses.replace(event, data=piece, offset=event.offset + i))
                else:
                    await self._put(dataclasses.replace(event, data=piece))
            return
        await self._put(event)

    async def flush(self) -> None:
        """Write everything recorded so far to disk (fsync'ed) and return."""
        await self._request(close=False)

    async def close(self) -> None:
        """Write the final chunk and signature and close the file; idempotent."""
        if self._closed:
            if self._failure is not None:
                raise self._failure
            return
        if self._closing:
            raise RecordingClosed(f"recording {self.path} is already being closed")
        try:
            await self._request(close=True)
        finally:
            self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the pending chunk, on the caller's loop -------------------------------------------

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing or self._closed:
            raise RecordingClosed(f"recording {self.path} is closed")

    async def _put(self, event: Event | _Encoded) -> None:
        """Add an event to the pending chunk; hand the chunk to the strand when it is full, and
        wait while the strand is behind (a slow disk slows the session, nothing is dropped)."""
        self._check()
        self._last_t = event.t
        if type(event) in _KEYFRAME_CLOCK:
            since = event.t - self._last_keyframe_t
            # Snapshots cost pyte time: bulk output gets one per keyframe_bytes, but never more
            # often than keyframe_min_interval of session time.
            if (
                self._output_since_keyframe >= self._settings.keyframe_bytes
                and since >= self._settings.keyframe_min_interval
            ) or (self._output_since_keyframe > 0 and since >= self._settings.keyframe_interval):
                self._submit()
                self._keyframe_next, self._keyframe_t = True, event.t
                self._last_keyframe_t, self._output_since_keyframe = event.t, 0
            self._output_since_keyframe += len(event.data) if isinstance(event, OutputEvent) else 1
        self._pending.append(event)
        self._pending_bytes += _event_size(event)
        if self._pending_bytes >= self._settings.max_chunk_bytes:
            self._submit()
        elif self._tick is None:
            self._schedule_tick()
        self._prune()
        while len(self._in_flight) > MAX_IN_FLIGHT and self._failure is None:
            # Shielded: a cancelled caller must not cancel a chunk that is queued to be written.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._in_flight[0])
            self._prune()

    def _submit(self, final: bool = False, sync: bool = False) -> None:
        """Hand the pending chunk (and a sync or the end, if asked) to the strand."""
        if self._failure is not None or self._executor is None:
            return
        if not (self._pending or final or sync):
            return
        pending = self._pending
        first_t = pending[0].t if pending else self.now()
        t_us = to_us(self._keyframe_t if self._keyframe_next else first_t)
        job = _Job(pending, t_us, final, self._keyframe_next and (bool(pending) or final), sync)
        if job.keyframe:
            self._keyframe_next = False
        self._pending, self._pending_bytes = [], 0
        self._unsynced = not (sync or final)
        future = self._executor.run(self._sink.process, job)
        self._in_flight.append(future)
        future.add_done_callback(self._settled)
        if self._unsynced and self._tick is None:
            self._schedule_tick()

    def _schedule_tick(self) -> None:
        self._tick = asyncio.get_running_loop().call_later(self._settings.flush_interval, self._on_tick)

    def _on_tick(self) -> None:
        """Once a second while there is unsynced work: write and fsync it (≤ 1 s lost on a
        crash). Idle recordings schedule no tick, so a thousand idle sessions cost nothing."""
        self._tick = None
        if self._pending or self._unsynced:
            self._submit(sync=True)

    def _prune(self) -> None:
        """Forget the chunks written; a chunk's done-callback may not have run yet, so a failed
        one is also noticed here."""
        while self._in_flight and self._in_flight[0].done():
            self._settled(self._in_flight.popleft())

    def _settled(self, future: asyncio.Future[None]) -> None:
        """Fail the recording if this chunk's write failed (runs once or twice per chunk)."""
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self._fail(exc)
            # Release the file promptly; the caller learns of the failure on its next call.
            self._release()

    def _release(self) -> None:
        executor, self._executor = self._executor, None
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if executor is not None:
            self._released = executor.run(self._sink.close)

    async def _drain(self) -> None:
        while self._in_flight:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._in_flight[-1])
            self._prune()

    async def _request(self, close: bool) -> None:
        self._check()
        if close:
            self._closing = True
        try:
            self._submit(final=close, sync=True)
            await self._drain()
        finally:
            if close:
                self._release()
                if self._released is not None:
                    with contextlib.suppress(OSError):
                        await asyncio.shield(self._released)
        if self._failure is not None:
            raise self._failure

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None:
            return
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
        self._failure = RecordingFailed(f"writing recording {self.path} failed: {reason}")
        self._failure.__cause__ = exc
        if self._on_failure is not None:
            # Scheduled, not called: an error in the callback must not stop the caller.
            asyncio.get_running_loop().call_soon(self._on_failure, self._failure)
