"""The recording writer: an async front end on the session's loop, file work in one thread.

Callers `await writer.output(...)` etc.; events go through a bounded asyncio.Queue to a writer
task that groups them into chunks (flushed about once a second, when large, and at close) and
hands each chunk to a single worker thread that snapshots the screen, encrypts, signs and writes.
A full queue slows the session down instead of dropping events: nothing is ever skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from recorder.crypto import ChunkCipher, new_file_key, raw_public, wrap_file_key
from recorder.errors import NoRecipients, RecordingClosed, RecordingFailed
from recorder.events import (
    MAX_DATA_EVENT,
    Event,
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
    to_us,
)
from recorder.format import (
    FILE_ID_SIZE,
    FLAG_FINAL,
    FLAG_KEYFRAME,
    PREAMBLE,
    ChunkPrefix,
    FrameType,
    RecordingHeader,
    SessionKind,
    SignatureBody,
    chain_next,
    chain_start,
    chunk_aad,
    encode_frame,
    frame_head,
    valid_session_id,
)
from recorder.keyframes import TerminalEmulator
from recorder.threads import Strand

__all__ = ["RECORDING_SUFFIX", "RecordingWriter", "WriterSettings"]

RECORDING_SUFFIX: Final = ".rec"
# Jobs allowed in the worker thread at once: one being written while the next one is built.
MAX_IN_FLIGHT: Final = 2


@dataclass(frozen=True)
class WriterSettings:
    """Tuning knobs; the defaults follow the product design."""

    flush_interval: float = 1.0
    max_chunk_bytes: int = 256 * 1024
    signature_every_chunks: int = 8
    signature_interval: float = 10.0
    keyframe_interval: float = 30.0
    keyframe_bytes: int = 4 * 1024 * 1024
    keyframe_min_interval: float = 2.0
    queue_size: int = 256
    fsync: bool = True


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


@dataclass
class _Request:
    """A flush or close request travelling through the queue behind the events before it."""

    close: bool
    done: asyncio.Future[None] = field(repr=False)


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
        self._directory: Path | None = directory
        self._cipher = cipher
        self._signing_key = signing_key
        self._settings = settings
        self._emulator = TerminalEmulator(header.cols, header.rows)
        self._index = 0
        self._unsigned: list[bytes] = []
        self._last_signature = time.monotonic()
        self._dirty = False
        header_frame = encode_frame(FrameType.HEADER, header.encode())
        self._header_hash = hashlib.sha256(header_frame).digest()
        self._chain = chain_next(chain_start(), self._header_hash)
        # Written at once so a bad directory fails the constructor; the fsync waits for the
        # first tick, in the worker thread, to keep the event loop free.
        self._write([PREAMBLE, header_frame, self._signature(final=False)])

    def _write(self, parts: list[bytes]) -> None:
        views = [memoryview(p) for p in parts if p]
        while views:
            written = os.writev(self._fd, views)
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if views and written:
                views[0] = views[0][written:]
        self._dirty = True

    def _sync(self) -> None:
        if self._settings.fsync and self._dirty:
            os.fsync(self._fd)
            if self._directory is not None:
                # Once, so that the new file's directory entry survives a power loss too.
                dir_fd = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
                self._directory = None
        self._dirty = False

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
        digest = hashlib.sha256(head)
        digest.update(prefix)
        digest.update(sealed)
        frame_hash = digest.digest()
        self._chain = chain_next(self._chain, frame_hash)
        self._unsigned.append(frame_hash)
        self._index += 1
        return [head, prefix, sealed]

    def close(self) -> None:
        """Close the file descriptor."""
        os.close(self._fd)


def _event_size(event: Event | _Encoded) -> int:
    if isinstance(event, OutputEvent | InputEvent | FileDataEvent):
        return len(event.data) + 13
    if isinstance(event, _Encoded):
        return len(event.parts[1]) + 13
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
        cipher = ChunkCipher(file_key, file_id)
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
        self._queue: asyncio.Queue[Event | _Encoded | _Request] = asyncio.Queue(self._settings.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._executor: Strand | None = None  # this recording's file work, in order
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
        await self.write(SqlStatementEvent(self.now(), dict(payload)))

    async def file_data(self, upload: bool, data: bytes, file: int = 0, offset: int = 0) -> None:
        """Record bytes of a transferred file (upload: from the user) at `offset` of the file
        the session opened as number `file`."""
        await self.write(FileDataEvent(self.now(), upload, data, file, offset))

    async def sql_result(self, payload: Mapping[str, Any]) -> None:
        """Record the outcome of a SQL statement (a JSON object)."""
        await self.write(SqlResultEvent(self.now(), dict(payload)))

    async def write(self, event: Event) -> None:
        """Record an event with its own time offset (kept non-decreasing)."""
        if isinstance(event, KeyframeEvent):
            raise ValueError("keyframes are made by the writer itself")
        if event.t < self._last_t:
            event = dataclasses.replace(event, t=self._last_t)
        if isinstance(event, ExitEvent | SqlStatementEvent | SqlResultEvent):
            # Encoded here, so that a payload over the limit raises to the caller (in the worker
            # thread it would end the session), and only here.
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

    # -- caller side ----------------------------------------------------------------------

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing or self._closed:
            raise RecordingClosed(f"recording {self.path} is closed")

    def _start(self) -> None:
        if self._task is None:
            self._executor = Strand()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"recorder {self.header.session_id}"
            )

    async def _put(self, event: Event | _Encoded) -> None:
        self._check()
        self._start()
        self._last_t = event.t
        await self._queue.put(event)

    async def _request(self, close: bool) -> None:
        self._check()
        self._start()
        if close:
            self._closing = True
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(close, done))
        await done

    # -- writer task ----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._batch()
        except Exception as exc:  # a bug here must end the session, not leave callers waiting
            self._fail(exc)
            await self._shutdown()
            while True:
                item = await self._queue.get()
                if isinstance(item, _Request):
                    self._answer(item)
                    if item.close:
                        return

    def _answer(self, request: _Request) -> None:
        if request.done.done():  # the caller was cancelled while waiting
            return
        if self._failure is not None:
            request.done.set_exception(self._failure)
        else:
            request.done.set_result(None)

    async def _batch(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self._settings
        pending: list[Event | _Encoded] = []
        pending_bytes = 0
        in_flight: deque[asyncio.Future[None]] = deque()
        keyframe_next = True  # chunk 0 starts with the (blank) initial screen
        keyframe_t = 0.0
        last_keyframe_t = 0.0
        output_since_keyframe = 0
        deadline = loop.time() + settings.flush_interval
        unsynced = False  # chunks written since the last fsync

        async def submit(final: bool = False, sync: bool = False) -> None:
            nonlocal pending, pending_bytes, keyframe_next, unsynced
            if self._failure is not None:
                return
            if pending or final or sync:
                unsynced = not (sync or final)
                t_us = to_us(keyframe_t if keyframe_next else pending[0].t if pending else self.now())
                job = _Job(pending, t_us, final, keyframe_next and (bool(pending) or final), sync)
                if job.keyframe:
                    keyframe_next = False
                pending, pending_bytes = [], 0
                assert self._executor is not None
                in_flight.append(self._executor.run(self._sink.process, job))
            while in_flight and (in_flight[0].done() or len(in_flight) > MAX_IN_FLIGHT):
                await settle(in_flight.popleft())

        async def settle(future: asyncio.Future[None]) -> None:
            try:
                await future
            except OSError as exc:
                self._fail(exc)
            except Exception as exc:  # a bug must still end the session, not hang it
                self._fail(exc)

        async def drain() -> None:
            while in_flight:
                await settle(in_flight.popleft())

        while True:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                if not pending and not unsynced and not in_flight:
                    # Idle and on disk: sleep until the next event (no wake-up every second for
                    # each of a thousand idle sessions).
                    item = await self._queue.get()
                    deadline = max(deadline, loop.time() + settings.flush_interval)
                else:
                    timeout = deadline - loop.time()
                    try:
                        item = await asyncio.wait_for(self._queue.get(), max(timeout, 0.0))
                    except TimeoutError:
                        item = None
            if isinstance(item, _Request):
                await submit(final=item.close, sync=True)
                await drain()
                if item.close:
                    await self._shutdown()
                self._answer(item)
                if item.close:
                    return
                deadline = loop.time() + settings.flush_interval
                continue
            if item is not None and self._failure is None:
                if isinstance(item, OutputEvent | ResizeEvent):
                    size = len(item.data) if isinstance(item, OutputEvent) else 0
                    since = item.t - last_keyframe_t
                    # Snapshots cost pyte time: bulk output gets one per keyframe_bytes, but
                    # never more often than keyframe_min_interval of session time.
                    due = (
                        output_since_keyframe >= settings.keyframe_bytes
                        and since >= settings.keyframe_min_interval
                    ) or (output_since_keyframe > 0 and since >= settings.keyframe_interval)
                    if due:
                        await submit()
                        keyframe_next, keyframe_t, last_keyframe_t = True, item.t, item.t
                        output_since_keyframe = 0
                    output_since_keyframe += max(size, 1)
                pending.append(item)
                pending_bytes += _event_size(item)
                if pending_bytes >= settings.max_chunk_bytes:
                    await submit()
            if loop.time() >= deadline:
                if pending or unsynced:
                    await submit(sync=True)
                    unsynced = False
                elif in_flight:
                    await drain()  # a write that failed is noticed without a further call
                deadline = loop.time() + settings.flush_interval
            if self._failure is not None and self._executor is not None:
                # Release the file promptly; the caller learns of the failure on its next call.
                await drain()
                await self._shutdown()

    async def _shutdown(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            with contextlib.suppress(OSError):
                await executor.run(self._sink.close)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None:
            return
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
        self._failure = RecordingFailed(f"writing recording {self.path} failed: {reason}")
        self._failure.__cause__ = exc
        if self._on_failure is not None:
            # Scheduled, not called: an error in the callback must not stop the writer task.
            asyncio.get_running_loop().call_soon(self._on_failure, self._failure)
