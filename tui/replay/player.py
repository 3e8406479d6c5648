"""Playing a recording: the screen at any time, moving forward cheaply and seeking by keyframe.

The player keeps a position (the next event to apply) and a TerminalScreen. Going forward it
applies events in order; seeking backward, or far forward, starts again from the nearest
keyframe at or before the target: from the player's own snapshot of that moment when it already
played through it (exact, with colours and the alternate screen), else from the recorded
keyframe (text only), then applies the events up to the target. Like the recorder's emulator,
only the last few screenfuls of a large burst of output are emulated (pyte manages well under
1 MB/s), which bounds the cost of every step whatever the recording holds.
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict, deque
from typing import Final

import pyte

from recorder import (
    CorruptRecording,
    Event,
    KeyframeEvent,
    OutputEvent,
    RecordingReader,
    ResizeEvent,
)
from recorder.keyframes import default_tail_limit
from tui.replay.emulator import ScreenState, TerminalScreen

__all__ = ["Player"]

# Going forward by more than this much recording (bytes) jumps to a keyframe instead.
FORWARD_LIMIT: Final = 8 * 1024 * 1024
CACHED_CHUNKS: Final = 8


class Player:
    """The screen of one recording at time `t`; not thread-safe (one thread drives it)."""

    def __init__(self, reader: RecordingReader) -> None:
        """Prepare playback at time 0 (reads at most the last chunks, to find the end)."""
        self.reader = reader
        header = reader.header
        self.screen = TerminalScreen(header.cols, header.rows)
        self._stream = pyte.ByteStream(self.screen)
        self.generation = 0  # bumped whenever `screen` is replaced by another object
        self.t = 0.0
        self.damage: CorruptRecording | None = reader.problem
        self._chunk = 0
        self._event = 0
        self._cache: OrderedDict[int, list[Event]] = OrderedDict()
        self._checkpoints: dict[int, ScreenState] = {}
        index = reader.keyframe_index()
        self._keyframe_chunks = [chunk for chunk, _ in index]
        self._keyframe_times = [t for _, t in index]
        self._chunk_times = [c.t for c in reader.chunks]
        self._offsets = list(itertools.accumulate((c.length for c in reader.chunks), initial=0))
        self.duration = self._find_end()

    # -- reading ----------------------------------------------------------------------------

    def _events(self, chunk: int) -> list[Event] | None:
        """Return a chunk's events, or None when it cannot be read (damage is remembered)."""
        cached = self._cache.get(chunk)
        if cached is not None:
            self._cache.move_to_end(chunk)
            return cached
        try:
            events = self.reader.read_chunk(chunk)
        except CorruptRecording as exc:
            known = self.damage.chunk if self.damage is not None else None
            if known is None or (exc.chunk is not None and exc.chunk < known):
                self.damage = exc
            return None
        self._cache[chunk] = events
        if len(self._cache) > CACHED_CHUNKS:
            self._cache.popitem(last=False)
        return events

    def _find_end(self) -> float:
        chunks = self.reader.chunks
        end = chunks[-1].t if chunks else 0.0
        for info in reversed(chunks[-2:]):
            events = self._events(info.index)
            if events:
                end = max(end, events[-1].t)
                break
        return end

    @property
    def last_readable_chunk(self) -> int:
        """Index past the last chunk playback may read (stops at damage)."""
        count = len(self.reader.chunks)
        if self.damage is not None and self.damage.chunk is not None:
            return min(count, self.damage.chunk)
        return count

    # -- playing ----------------------------------------------------------------------------

    def next_event_time(self) -> float | None:
        """Return the time of the next event to apply (None at the end)."""
        chunk, event = self._chunk, self._event
        while chunk < self.last_readable_chunk:
            events = self._events(chunk)
            if events is None:
                return None
            while event < len(events):
                if not isinstance(events[event], KeyframeEvent):
                    return events[event].t
                event += 1
            chunk, event = chunk + 1, 0
        return None

    @property
    def at_end(self) -> bool:
        """Whether every readable event has been applied."""
        return self.next_event_time() is None

    def advance(self, t: float) -> None:
        """Apply the events up to time `t` (inclusive) from the current position."""
        pending: deque[bytes | tuple[int, int]] = deque()
        size = [0]
        while self._chunk < self.last_readable_chunk:
            events = self._events(self._chunk)
            if events is None:
                break
            if self._event == 0 and self._is_keyframe(self._chunk) and self._chunk not in self._checkpoints:
                self._flush(pending, size)
                self._checkpoints[self._chunk] = self.screen.snapshot()
            stopped = False
            while self._event < len(events):
                event = events[self._event]
                if event.t > t:
                    stopped = True
                    break
                if isinstance(event, OutputEvent):
                    pending.append(event.data)
                    size[0] += len(event.data)
                    if size[0] > 2 * self._tail_limit():
                        self._trim(pending, size)
                elif isinstance(event, ResizeEvent):
                    pending.append((event.cols, event.rows))
                self._event += 1
            if stopped:
                break
            self._chunk, self._event = self._chunk + 1, 0
        self._flush(pending, size)
        self.t = min(max(t, 0.0), self.duration)

    def seek(self, t: float) -> None:
        """Show the screen at time `t`: forward in place when near, else from a keyframe."""
        t = max(0.0, t)
        if not self._keyframe_chunks:
            self._reset(TerminalScreen(self.reader.header.cols, self.reader.header.rows), 0)
            self.advance(t)
            return
        pos = max(bisect.bisect_right(self._keyframe_times, t) - 1, 0)
        keyframe = self._keyframe_chunks[pos]
        if t >= self.t:
            target = max(bisect.bisect_right(self._chunk_times, t) - 1, 0)
            near = self._offsets[target] - self._offsets[min(self._chunk, target)] <= FORWARD_LIMIT
            if keyframe <= self._chunk or near:
                self.advance(t)
                return
        state = self._checkpoints.get(keyframe)
        if state is not None:
            self._reset(TerminalScreen.restore(state), keyframe)
        else:
            try:
                recorded = self.reader.keyframe(keyframe)
            except CorruptRecording as exc:
                self.damage = self.damage or exc
                return
            screen = TerminalScreen(recorded.cols, recorded.rows)
            pyte.ByteStream(screen).feed(recorded.to_ansi())
            if recorded.title:
                screen.title = recorded.title
            self._reset(screen, keyframe)
        self.advance(t)

    def _reset(self, screen: TerminalScreen, chunk: int) -> None:
        self.screen = screen
        self._stream = pyte.ByteStream(screen)
        self.generation += 1
        self._chunk, self._event = chunk, 0
        self.t = self._chunk_times[chunk] if self._chunk_times else 0.0

    def _is_keyframe(self, chunk: int) -> bool:
        pos = bisect.bisect_left(self._keyframe_chunks, chunk)
        return pos < len(self._keyframe_chunks) and self._keyframe_chunks[pos] == chunk

    def _tail_limit(self) -> int:
        return default_tail_limit(self.screen.columns, self.screen.lines)

    def _trim(self, pending: deque[bytes | tuple[int, int]], size: list[int]) -> None:
        """Drop the oldest output beyond the tail limit; size changes are applied, not dropped."""
        limit = self._tail_limit()
        while size[0] > limit and pending:
            item = pending[0]
            if isinstance(item, tuple):
                pending.popleft()
                self.screen.resize(lines=max(item[1], 1), columns=max(item[0], 1))
                continue
            excess = size[0] - limit
            if len(item) <= excess:
                pending.popleft()
                size[0] -= len(item)
            else:
                pending[0] = item[excess:]
                size[0] -= excess

    def _flush(self, pending: deque[bytes | tuple[int, int]], size: list[int]) -> None:
        self._trim(pending, size)
        while pending:
            item = pending.popleft()
            if isinstance(item, tuple):
                self.screen.resize(lines=max(item[1], 1), columns=max(item[0], 1))
            else:
                self._stream.feed(item)
        size[0] = 0
