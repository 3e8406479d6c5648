"""The threads that write recordings: a bounded set shared by every recording, each recording's
file work still done in order, by one thread at a time (a strand).

One thread per recording made a thousand sessions a thousand threads. The file work of one
recording (encrypt, hash, write, fsync) must stay in order and never run on two threads at once,
so each recording submits to its own strand; a strand runs its queued jobs one after the other,
one job per turn on whichever shared thread is free, so that busy recordings take turns with
the others.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["RECORDER_THREADS", "Strand"]

T = TypeVar("T")

# Enough that slow disks (fsync) of some sessions do not hold up the others; bounded whatever
# the number of sessions.
RECORDER_THREADS = min(16, 4 * (os.cpu_count() or 2))

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(RECORDER_THREADS, thread_name_prefix="recorder")
        return _pool


class Strand:
    """Runs one recording's jobs in the order they were submitted, one at a time, on the shared
    recorder threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: deque[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] = deque()
        self._running = False

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue `fn(*args)` behind this strand's earlier jobs; an awaitable of its result."""
        future: Future[T] = Future()
        with self._lock:
            self._jobs.append((fn, args, future))
            start = not self._running
            self._running = True
        if start:
            _shared_pool().submit(self._drain)
        return asyncio.wrap_future(future)

    def _drain(self) -> None:
        """Run this strand's next job, then queue the strand again behind the other recordings'
        work if it has more: a busy recording never keeps a shared thread to itself."""
        with self._lock:
            if not self._jobs:
                self._running = False
                return
            fn, args, future = self._jobs.popleft()
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the awaiting caller, as an executor does
                future.set_exception(exc)
        with self._lock:
            if not self._jobs:
                self._running = False
                return
        _shared_pool().submit(self._drain)
