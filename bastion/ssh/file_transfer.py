"""Audited file transfer: the bastion terminates the user's SFTP and relays each request to the
target's own SFTP server, as the session's upstream login.

Every request the bastion does not relay on purpose is refused: asyncssh's `SFTPServer` serves
the local file system by default, so each of its methods is overridden here. A file's bytes go
to the recording as they pass, and its SHA-256 (when it was read or written from start to end
in order) to the audit trail when it is closed; limits per file and per session are counted on
the bytes that pass, in each direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh import SFTPAttrs, SFTPName

from bastion import policy
from bastion.config import Target
from bastion.models import SessionStatus
from bastion.recording import RecordingUnavailable
from bastion.sessions import ENDED_BY_BASTION, LiveSession, close_recording, watch_window
from bastion.ssh.upstream import UpstreamError, connect_upstream
from bastion.text import terminal_safe
from recorder import RecordingError, RecordingWriter

if TYPE_CHECKING:
    from bastion.server import Bastion

__all__ = ["TransferLimits", "TransferServer", "open_directions", "refusing_server",
           "start_transfer"]

log = logging.getLogger(__name__)

Audit = Callable[..., Awaitable[object]]


def open_directions(pflags: int) -> frozenset[str]:
    """What opening a file with these SFTP flags does: read it (download), change it (upload)."""
    directions = set()
    if pflags & asyncssh.FXF_READ:
        directions.add("download")
    if pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT
                 | asyncssh.FXF_TRUNC):
        directions.add("upload")
    return frozenset(directions)


def size_text(count: int) -> str:
    """Bytes as people say them (1 KiB = 1024 bytes)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count:,} bytes"


@dataclass(frozen=True)
class TransferLimits:
    """Bytes one file, and all files of one session, may carry (each direction counted)."""

    per_file: int
    per_session: int


@dataclass
class _File:
    """One open file: what passed, and its hash while it passed in order from the start."""

    path: str
    upload: bool
    remote: asyncssh.SFTPClientFile
    bytes: int = 0
    next_offset: int = 0  # where the bytes passed so far end, when they were in order
    in_order: bool = True
    at_end: bool = False  # a download read up to the end of the file
    digest: Any = field(default_factory=hashlib.sha256)


class TransferServer(asyncssh.SFTPServer):
    """The user's SFTP session, relayed to the target's SFTP server under the bastion's rules."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], upstream: asyncssh.SFTPClient | None,
                 refusal: Callable[[str], str | None], limits: TransferLimits,
                 recording: RecordingWriter | None, audit: Audit, touch: Callable[[], None],
                 stop: Callable[[str], None], on_exit: Callable[[], Awaitable[None]]) -> None:
        super().__init__(chan)
        self._up = upstream
        self._refusal = refusal  # why a direction is refused, or None
        self._limits = limits
        self._recording = recording
        self._audit = audit
        self._touch = touch
        self._stop = stop  # ends the session (the recording failed)
        self._on_exit = on_exit
        self.transferred = 0

    # what the user may do --------------------------------------------------------------

    async def _allow(self, directions: frozenset[str], what: str, path: str) -> None:
        self._touch()
        for direction in sorted(directions):
            refusal = self._refusal(direction)
            if refusal is not None:
                await self._audit("transfer.refused", operation=what, path=path, reason=refusal)
                await self._marker(f"refused {what} {path}: {refusal}")
                raise self._told(asyncssh.SFTPPermissionDenied(f"bastion: {refusal}"))

    async def _marker(self, text: str) -> None:
        if self._recording is not None:
            await self._recorded(self._recording.marker(f"sftp: {text}"))

    async def _recorded(self, write: Awaitable[None]) -> None:
        """Record, or end the session: no recording, no transfer."""
        try:
            await write
        except RecordingError as exc:
            self._stop(f"the recording failed ({exc}); no recording, no session")
            raise asyncssh.SFTPFailure("bastion: the recording failed; the session ends") from None

    def _told(self, error: asyncssh.SFTPError) -> asyncssh.SFTPError:
        """An error the user must understand: OpenSSH's sftp and scp print only the status
        code's name ("Failure"), so the reason also goes to the channel's stderr, which they show."""
        with contextlib.suppress(OSError, asyncssh.Error):
            self.channel.write_stderr(f"{error.reason}\r\n".encode())
        return error

    def _upstream(self) -> asyncssh.SFTPClient:
        if self._up is None:
            raise asyncssh.SFTPPermissionDenied(f"bastion: {self._refusal('download')}")
        return self._up

    async def _changed(self, what: str, **details: Any) -> None:
        """Audit a change the target made (rename, remove, mkdir...)."""
        await self._audit(f"transfer.{what}", **details)
        await self._marker(f"{what} " + " -> ".join(str(v) for v in details.values()))

    # files ---------------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> _File:  # type: ignore[override]
        name = _text(path)
        directions = open_directions(pflags)
        await self._allow(directions, "open", name)
        try:
            remote = await self._upstream().open(path, pflags, attrs, encoding=None)
        except asyncssh.SFTPError as exc:
            raise _again(exc) from None
        upload = "upload" in directions
        await self._audit("transfer.open", path=name, mode="write" if upload else "read")
        await self._marker(f"open {name} for {'writing' if upload else 'reading'}")
        return _File(name, upload, remote)

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:  # type: ignore[override]
        handle = _handle(file_obj)
        self._touch()
        if handle.upload and self._refusal("download") is not None:
            raise asyncssh.SFTPPermissionDenied("bastion: this file was opened for writing only")
        room = self._room(handle, size)
        if room <= 0 < size:
            # A file exactly as large as the limit still ends: only bytes past it are refused.
            if await self._up_call(handle.remote.read(1, offset)):
                raise self._told(asyncssh.SFTPFailure(self._over(handle, "download")))
            room = 0
        data: bytes = await self._up_call(handle.remote.read(room, offset)) if room else b""
        if not data:
            handle.at_end = handle.in_order and offset == handle.next_offset
            return b""
        await self._passed(handle, offset, data, upload=False)
        return data

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:  # type: ignore[override]
        handle = _handle(file_obj)
        self._touch()
        if not handle.upload:
            raise asyncssh.SFTPPermissionDenied("bastion: this file was opened for reading only")
        if self._room(handle, len(data)) < len(data):
            raise self._told(asyncssh.SFTPFailure(self._over(handle, "upload")))
        await self._passed(handle, offset, data, upload=True)  # recorded before it reaches the target
        await self._up_call(handle.remote.write(data, offset))
        return len(data)

    def _room(self, handle: _File, wanted: int) -> int:
        """How many of `wanted` bytes may still pass (requests are handled one at a time)."""
        return max(0, min(self._limits.per_file - handle.bytes,
                          self._limits.per_session - self.transferred, wanted))

    def _over(self, handle: _File, direction: str) -> str:
        if handle.bytes >= self._limits.per_file or \
                self._limits.per_file - handle.bytes <= self._limits.per_session - self.transferred:
            return (f"bastion: {handle.path}: the {direction} limit per file "
                    f"({size_text(self._limits.per_file)}, max_file_size) was reached")
        return (f"bastion: the limit per session ({size_text(self._limits.per_session)}, "
                "max_transfer_size) was reached")

    async def _passed(self, handle: _File, offset: int, data: bytes, *, upload: bool) -> None:
        if handle.in_order and offset == handle.next_offset:
            handle.digest.update(data)
            handle.next_offset += len(data)
        else:
            handle.in_order = False
        handle.bytes += len(data)
        self.transferred += len(data)
        if self._recording is not None:
            await self._recorded(self._recording.file_data(upload, data))

    async def close(self, file_obj: object) -> None:  # type: ignore[override]
        handle = _handle(file_obj)
        try:
            await handle.remote.close()
        finally:
            whole = handle.in_order and (handle.upload or handle.at_end)
            sha256 = handle.digest.hexdigest() if whole else None
            what = "upload" if handle.upload else "download"
            await self._audit(f"transfer.{what}", path=handle.path, bytes=handle.bytes,
                              sha256=sha256, whole=whole)
            await self._marker(f"{what} {handle.path}: {handle.bytes:,} bytes, "
                               + (f"sha256 {sha256}" if sha256 else "not whole or not in order"))

    async def fsync(self, file_obj: object) -> None:  # type: ignore[override]
        await self._up_call(_handle(file_obj).remote.fsync())

    async def fstat(self, file_obj: object) -> SFTPAttrs:  # type: ignore[override]
        attrs: SFTPAttrs = await self._up_call(_handle(file_obj).remote.stat())
        return attrs

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:  # type: ignore[override]
        handle = _handle(file_obj)
        await self._allow(frozenset({"upload"}), "setstat", handle.path)
        await self._up_call(handle.remote.setstat(attrs))

    # names ---------------------------------------------------------------------------

    async def stat(self, path: bytes) -> SFTPAttrs:  # type: ignore[override]
        self._touch()
        attrs: SFTPAttrs = await self._up_call(self._upstream().stat(path))
        return attrs

    async def lstat(self, path: bytes) -> SFTPAttrs:  # type: ignore[override]
        self._touch()
        attrs: SFTPAttrs = await self._up_call(self._upstream().lstat(path))
        return attrs

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:  # type: ignore[override]
        await self._allow(frozenset({"upload"}), "setstat", _text(path))
        await self._up_call(self._upstream().setstat(path, attrs))

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:  # type: ignore[override]
        await self._allow(frozenset({"upload"}), "setstat", _text(path))
        await self._up_call(self._upstream().setstat(path, attrs, follow_symlinks=False))

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:  # type: ignore[override]
        self._touch()
        try:
            async for name in self._upstream().scandir(path):
                yield name
        except asyncssh.SFTPError as exc:
            raise _again(exc) from None

    async def realpath(self, path: bytes) -> bytes:  # type: ignore[override]
        found = await self._up_call(self._upstream().realpath(path))
        return found if isinstance(found, bytes) else str(found).encode()

    async def readlink(self, path: bytes) -> bytes:  # type: ignore[override]
        found = await self._up_call(self._upstream().readlink(path))
        return found if isinstance(found, bytes) else str(found).encode()

    async def remove(self, path: bytes) -> None:  # type: ignore[override]
        await self._allow(frozenset({"upload"}), "remove", _text(path))
        await self._up_call(self._upstream().remove(path))
        await self._changed("remove", path=_text(path))

    async def rmdir(self, path: bytes) -> None:  # type: ignore[override]
        await self._allow(frozenset({"upload"}), "rmdir", _text(path))
        await self._up_call(self._upstream().rmdir(path))
        await self._changed("rmdir", path=_text(path))

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:  # type: ignore[override]
        await self._allow(frozenset({"upload"}), "mkdir", _text(path))
        await self._up_call(self._upstream().mkdir(path, attrs))
        await self._changed("mkdir", path=_text(path))

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:  # type: ignore[override]
        await self._allow(frozenset({"upload"}), "rename", _text(oldpath))
        await self._up_call(self._upstream().rename(oldpath, newpath))
        await self._changed("rename", path=_text(oldpath), to=_text(newpath))

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:  # type: ignore[override]
        await self._allow(frozenset({"upload"}), "rename", _text(oldpath))
        await self._up_call(self._upstream().posix_rename(oldpath, newpath))
        await self._changed("rename", path=_text(oldpath), to=_text(newpath))

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:  # type: ignore[override]
        await self._allow(frozenset({"upload"}), "symlink", _text(newpath))
        await self._up_call(self._upstream().symlink(oldpath, newpath))
        await self._changed("symlink", path=_text(newpath), to=_text(oldpath))

    async def link(self, oldpath: bytes, newpath: bytes) -> None:  # type: ignore[override]
        await self._allow(frozenset({"upload"}), "link", _text(newpath))
        await self._up_call(self._upstream().link(oldpath, newpath))
        await self._changed("link", path=_text(newpath), to=_text(oldpath))

    # what is not relayed -------------------------------------------------------------

    def open56(self, *_: object) -> Any:
        raise asyncssh.SFTPOpUnsupported("bastion: SFTP versions 5 and 6 are not relayed")

    def lock(self, *_: object) -> Any:
        raise asyncssh.SFTPOpUnsupported("bastion: byte-range locks are not relayed")

    def unlock(self, *_: object) -> Any:
        raise asyncssh.SFTPOpUnsupported("bastion: byte-range locks are not relayed")

    def statvfs(self, *_: object) -> Any:
        raise asyncssh.SFTPOpUnsupported("bastion: statvfs is not relayed")

    def fstatvfs(self, *_: object) -> Any:
        raise asyncssh.SFTPOpUnsupported("bastion: statvfs is not relayed")

    def map_path(self, path: bytes) -> bytes:
        raise asyncssh.SFTPOpUnsupported("bastion: no local paths")

    async def exit(self) -> None:  # type: ignore[override]
        await self._on_exit()

    async def _up_call(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except asyncssh.SFTPError as exc:
            raise _again(exc) from None


def _handle(file_obj: object) -> _File:
    if not isinstance(file_obj, _File):
        raise asyncssh.SFTPInvalidHandle("bastion: not a file this session opened")
    return file_obj


def _text(path: bytes) -> str:
    """A path as the audit trail and markers show it (escaped where it holds control bytes)."""
    return terminal_safe(path.decode("utf-8", "replace"))


def _again(exc: asyncssh.SFTPError) -> asyncssh.SFTPError:
    """The target's error, passed on to the user as the target said it (a new exception: the
    one raised by the client side carries its own connection's state)."""
    return asyncssh.SFTPError(exc.code, exc.reason, exc.lang)



def refusing_server(chan: asyncssh.SSHServerChannel[bytes], reason: str) -> TransferServer:
    """For a refused session: a server that relays nothing (the channel is already closing)."""
    return TransferServer(chan, None, lambda _: reason, TransferLimits(0, 0), None,
                          _no_audit, _nothing, _ignore, _no_exit)


async def _no_audit(*_: object, **__: object) -> None:
    return None


def _nothing() -> None:
    return None


def _ignore(_: str) -> None:
    return None


async def _no_exit() -> None:
    return None


async def start_transfer(bastion: Bastion, chan: asyncssh.SSHServerChannel[bytes],
                         live: LiveSession, target: Target,
                         end: Callable[[SessionStatus, str], Awaitable[None]]) -> TransferServer:
    """Open the SFTP session on the target for a session that `end` closes; a refusal (policy,
    recording, target) is said on the channel's stderr, audited, and ends the session."""
    record = live.record

    def refusal(direction: str) -> str | None:
        return policy.transfer_refusal(bastion.config, record.user, target, direction)

    def say(text: str) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            chan.write_stderr(f"bastion: {text}\r\n".encode())

    audit = functools.partial(bastion.audit.record, actor=record.user, target=record.target,
                              session_id=record.id)

    async def refused(event: str, reason: str, **details: Any) -> TransferServer:
        say(reason)
        chan.exit(1)
        await audit(event, reason=reason, **details)
        await end(SessionStatus.ENDED, f"refused: {reason}")
        return refusing_server(chan, reason)

    refused_session = policy.transfer_session_refusal(bastion.config, record.user, target)
    if refused_session is not None:
        return await refused("transfer.refused", refused_session, subsystem="sftp")
    try:
        recording = bastion.recordings.open(record, 80, 24, "", command="sftp")
    except RecordingUnavailable as exc:
        return await refused("recording.failed", f"session refused: {exc} (no recording, "
                             "no session)")
    try:
        upstream = await connect_upstream(bastion.upstream_ca, target, record.user, record.id,
                                          live.window_end)
    except UpstreamError as exc:
        await close_recording(recording)
        return await refused("transfer.failed", f"cannot open {target.name}: {exc}")
    try:
        client = await upstream.start_sftp_client(path_encoding=None)
    except (asyncssh.Error, OSError) as exc:
        upstream.close()
        await close_recording(recording)
        return await refused("transfer.failed", f"{target.name} offers no SFTP: {exc}")
    await recording.marker(f"sftp: session on {target.name}; allowed: "
                           + ", ".join(d for d in ("download", "upload") if refusal(d) is None))
    watcher = asyncio.create_task(
        watch_window(live, bastion.config.server.idle_timeout, say))
    stopper = asyncio.create_task(_close_when_ended(live, chan, say))
    finished = False

    async def on_exit() -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        watcher.cancel()
        stopper.cancel()
        client.exit()
        upstream.close()
        reason = "the client ended the sftp session"
        with contextlib.suppress(OSError, asyncssh.Error):
            chan.exit(0 if live.end_reason is None else ENDED_BY_BASTION)  # scp checks it
        if live.end_reason is not None:
            reason = live.end_reason
            with contextlib.suppress(RecordingError):
                await recording.marker(f"ended by the bastion: {live.end_reason}")
        closed = await close_recording(recording)
        await end(SessionStatus.ENDED if closed else SessionStatus.ENDED_ABNORMALLY, reason)

    limits = TransferLimits(target.max_file_size, target.max_transfer_size)
    return TransferServer(chan, client, refusal, limits, recording, audit, live.touch, live.end,
                          on_exit)


async def _close_when_ended(live: LiveSession, chan: asyncssh.SSHServerChannel[bytes],
                            say: Callable[[str], None]) -> None:
    """Revoke, kill, window end, user removal, idle: tell the client and close its channel."""
    await live.stop.wait()
    say(f"session ended: {live.end_reason}")
    chan.exit(ENDED_BY_BASTION)
