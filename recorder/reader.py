"""Reading recordings with an auditor key: header, events, keyframes and seeking.

Opening a recording reads the header, unwraps the file key and scans the frame headers (a few
bytes per frame, nothing decrypted) to build the chunk index. Chunks are decrypted on demand, so
`seek(t)` decrypts only from the nearest keyframe before `t`. A file that ends early (the
bastion crashed) yields every complete chunk and reports `cut_off`; a damaged or tampered chunk
raises CorruptRecording when iteration reaches it.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from recorder.crypto import ChunkCipher, unwrap_file_key
from recorder.errors import CorruptRecording
from recorder.events import Event, KeyframeEvent, OutputEvent, ResizeEvent, decode_events
from recorder.format import (
    CHUNK_PREFIX,
    FRAME_HEAD,
    ChunkPrefix,
    FrameType,
    RecordingHeader,
    chunk_aad,
    frame_hasher,
    parse_frame_head,
    read_header_frame,
)
from recorder.keyframes import Keyframe, TerminalEmulator, emulated_size

__all__ = ["ChunkInfo", "RecordingReader", "SeekResult", "read_header_unencrypted"]


@dataclass(frozen=True)
class ChunkInfo:
    """Where one chunk is and what its authenticated plaintext prefix says."""

    index: int
    offset: int
    length: int
    prefix: ChunkPrefix

    @property
    def t(self) -> float:
        """Time offset of the chunk's first event (or of its keyframe)."""
        return self.prefix.t_us / 1_000_000


@dataclass(frozen=True)
class SeekResult:
    """The nearest keyframe at or before `t` and the events after it up to `t`.

    `chunk` is the chunk the keyframe starts (None for a file cut off before its first chunk).
    """

    t: float
    keyframe: Keyframe
    chunk: int | None
    events: tuple[Event, ...]

    def screen(self) -> Keyframe:
        """Return the screen at `t`: the keyframe with the events after it applied."""
        emulator = TerminalEmulator.from_keyframe(self.keyframe)
        for event in self.events:
            if isinstance(event, OutputEvent):
                emulator.feed(event.data)
            elif isinstance(event, ResizeEvent):
                emulator.resize(event.cols, event.rows)
        return emulator.snapshot(self.t)


def read_header_unencrypted(path: str | Path) -> RecordingHeader:
    """Return the plaintext header (no key needed; metadata stays None; not authenticated)."""
    with open(path, "rb") as f:
        header, _ = read_header_frame(f)
    return header


class RecordingReader:
    """An open recording, readable with one auditor private key."""

    def __init__(self, path: str | Path, identity: X25519PrivateKey) -> None:
        """Open the file, unwrap the file key and index its chunks."""
        self.path = Path(path)
        self._file = open(self.path, "rb")
        try:
            header, header_frame = read_header_frame(self._file)
            file_key = unwrap_file_key(list(header.recipients), identity, header.file_id)
            self._cipher = ChunkCipher(file_key, header.file_id, header.cipher)
            try:
                metadata = json.loads(self._cipher.open_metadata(header.sealed_metadata))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise CorruptRecording("the header metadata is not JSON") from None
            self.header: RecordingHeader = replace(header, metadata=metadata)
            self._header_hash = frame_hasher(header.version)(header_frame).digest()
            self._scan()
        except BaseException:
            self._file.close()
            raise
        self._keyframes = [c for c in self.chunks if c.prefix.keyframe]
        self._keyframe_times = [c.t for c in self._keyframes]

    def _scan(self) -> None:
        f = self._file
        size = os.fstat(f.fileno()).st_size
        chunks: list[ChunkInfo] = []
        self.problem: CorruptRecording | None = None
        self.complete = False
        while True:
            offset = f.tell()
            head = f.read(FRAME_HEAD.size)
            if len(head) < FRAME_HEAD.size:
                break  # end of file, or cut off inside a frame header
            parsed = parse_frame_head(head)
            n = len(chunks)
            if parsed is None or parsed[0] == FrameType.HEADER:
                self.problem = CorruptRecording(f"damaged frame where chunk {n} should be", n)
                break
            ftype, length = parsed
            if offset + FRAME_HEAD.size + length > size:
                break  # cut off inside the frame
            if ftype == FrameType.CHUNK:
                prefix = ChunkPrefix.unpack(f.read(CHUNK_PREFIX.size + 16))
                if prefix is None or prefix.index != n:
                    found = "a malformed chunk" if prefix is None else f"chunk {prefix.index}"
                    self.problem = CorruptRecording(
                        f"chunk {n} is missing or out of order ({found} in its place)", n
                    )
                    break
                chunks.append(ChunkInfo(n, offset, length, prefix))
                if prefix.final:
                    self.complete = True
                    break
            f.seek(offset + FRAME_HEAD.size + length)
        self.chunks: tuple[ChunkInfo, ...] = tuple(chunks)

    # -- state ----------------------------------------------------------------------------

    @property
    def cut_off(self) -> bool:
        """Whether the file ends before its final chunk (the writer stopped without closing)."""
        return not self.complete and self.problem is None

    @property
    def last_chunk(self) -> int | None:
        """Index of the last complete chunk (the one a cut-off file ends after)."""
        return self.chunks[-1].index if self.chunks else None

    @property
    def duration(self) -> float:
        """Time offset of the last chunk's start (a lower bound of the session length)."""
        return self.chunks[-1].t if self.chunks else 0.0

    # -- events ---------------------------------------------------------------------------

    def read_chunk(self, index: int) -> list[Event]:
        """Decrypt one chunk and return its events (keyframe events included)."""
        info = self.chunks[index]
        self._file.seek(info.offset + FRAME_HEAD.size)
        body = self._file.read(info.length)
        if len(body) != info.length:
            raise CorruptRecording(f"chunk {index} changed while reading", index)
        split = CHUNK_PREFIX.size
        plaintext = self._cipher.open_chunk(
            index, info.prefix.final, body[split:], chunk_aad(self._header_hash, body[:split])
        )
        return list(decode_events(plaintext, index))

    def events(self, *, start_chunk: int = 0, keyframes: bool = False) -> Iterator[Event]:
        """Yield the events in order; raise CorruptRecording at a damaged chunk."""
        for info in self.chunks[start_chunk:]:
            for event in self.read_chunk(info.index):
                if keyframes or not isinstance(event, KeyframeEvent):
                    yield event
        if self.problem is not None:
            raise self.problem

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    # -- keyframes and seeking ------------------------------------------------------------

    def keyframe_index(self) -> list[tuple[int, float]]:
        """Return (chunk index, time offset) of every keyframe, from the scan (no decryption)."""
        return [(c.index, c.t) for c in self._keyframes]

    def keyframe(self, chunk: int) -> Keyframe:
        """Decrypt the keyframe that starts `chunk`."""
        events = self.read_chunk(chunk)
        if not events or not isinstance(events[0], KeyframeEvent):
            raise CorruptRecording(f"chunk {chunk} is marked as a keyframe but has none", chunk)
        return Keyframe.from_json(events[0].t, events[0].payload)

    def seek(self, t: float) -> SeekResult:
        """Return the nearest keyframe at or before `t` and the events after it up to `t`."""
        if self.chunks and not self.chunks[0].prefix.keyframe:
            # The writer marks chunk 0 (its initial screen) as a keyframe. The flag is in the
            # plaintext prefix, which only decryption authenticates, and the keyframe index is
            # built without decrypting: cleared flags would show a blank or a later screen.
            raise CorruptRecording("chunk 0 is not marked as a keyframe (damaged or tampered "
                                   "with)", 0)
        if not self._keyframes:
            # Cut off before the first chunk: the screen is the blank initial one.
            cols, rows = emulated_size(self.header.cols, self.header.rows)
            blank = Keyframe(0.0, cols, rows, ("",) * rows, 0, 0)
            return SeekResult(t, blank, None, ())
        pos = max(bisect.bisect_right(self._keyframe_times, t) - 1, 0)
        start = self._keyframes[pos].index
        keyframe: Keyframe | None = None
        events: list[Event] = []
        for info in self.chunks[start:]:
            if info.index > start and info.t > t:
                break
            for event in self.read_chunk(info.index):
                if keyframe is None and isinstance(event, KeyframeEvent):
                    keyframe = Keyframe.from_json(event.t, event.payload)
                elif event.t > t:
                    break
                elif not isinstance(event, KeyframeEvent):
                    events.append(event)
            else:
                continue
            break
        if keyframe is None:
            raise CorruptRecording(f"chunk {start} is marked as a keyframe but has none", start)
        return SeekResult(t, keyframe, start, tuple(events))

    def screen_at(self, t: float) -> Keyframe:
        """Return the screen at time `t` (approximate after very large output bursts)."""
        return self.seek(t).screen()

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
