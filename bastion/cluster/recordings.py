"""The recordings store the nodes share, and landing finished recordings in it.

A node writes each recording to its own disk as before (crash-safe, no network in the way), then,
once the session is over, lands it in the shared store and points the session at it there, so
every node (and `recording`, the TUI, `bastion recordings`) finds it. A shared directory is the
first store; an object store implements the same two methods.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from pathlib import Path

from bastion.errors import BastionError
from bastion.store import Store
from recorder import RECORDING_SUFFIX

__all__ = ["RecordingLander", "RecordingsStore", "SharedDirectory"]

log = logging.getLogger("bastion.cluster")


class RecordingsStore(ABC):
    """Where finished recordings are kept for every node to read."""

    @abstractmethod
    async def land(self, local: Path, session_id: str) -> str:
        """Keep a copy of a finished recording; return where it is kept now."""

    @abstractmethod
    def location(self, session_id: str) -> str:
        """Where a session's recording is kept once landed."""


class SharedDirectory(RecordingsStore):
    """A directory every node mounts (NFS, CephFS, …), one file per session as on a node's disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def location(self, session_id: str) -> str:
        """The landed file's path."""
        return str(self.path / f"{session_id}{RECORDING_SUFFIX}")

    async def land(self, local: Path, session_id: str) -> str:
        """Copy under a temporary name, flush, then rename: readers never see half a file."""
        return await asyncio.to_thread(self._land, local, session_id)

    def _land(self, local: Path, session_id: str) -> str:
        final = Path(self.location(session_id))
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self.path / f".{session_id}.{uuid.uuid4().hex[:8]}.landing"
        try:
            with local.open("rb") as src, partial.open("xb") as dst:
                os.chmod(partial, 0o600)
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        directory = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a crash of this node
        finally:
            os.close(directory)
        return str(final)


class RecordingLander:
    """Moves this node's finished recordings from its own disk to the shared store."""

    def __init__(self, store: Store, shared: RecordingsStore, local_dir: Callable[[], Path],
                 live_here: Callable[[], Collection[str]]) -> None:
        self._store = store
        self._shared = shared
        self._local_dir = local_dir
        self._live_here = live_here
        self._landing = asyncio.Lock()

    async def land_finished(self) -> int:
        """Land every local recording whose session no longer runs here; return how many."""
        async with self._landing:
            directory = self._local_dir()
            files = await asyncio.to_thread(_recordings_in, directory)
            # Read after listing: a file listed is either live here now or finished for good.
            live = set(self._live_here())
            landed = 0
            for path in files:
                session_id = path.name.removesuffix(RECORDING_SUFFIX)
                if session_id in live:
                    continue
                try:
                    location = await self._shared.land(path, session_id)
                    if await self._store.get_session(session_id) is not None:
                        await self._store.set_session_recording(session_id, location)
                    await asyncio.to_thread(path.unlink)
                except (OSError, BastionError) as exc:
                    log.error("cluster: recording %s not landed (will retry): %s", path, exc)
                    continue
                landed += 1
            return landed


def _recordings_in(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir()
                      if p.name.endswith(RECORDING_SUFFIX) and p.is_file())
    except FileNotFoundError:
        return []
