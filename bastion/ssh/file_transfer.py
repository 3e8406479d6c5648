"""Audited file transfer: the bastion terminates the user's SFTP and relays each request to the
target's own SFTP server, as the session's upstream login.

Every request the bastion does not relay on purpose is refused: asyncssh's `SFTPServer` serves
the local file system by default, so each of its methods is overridden here. A file's bytes go
to the recording as they pass, and its SHA-256 (when it was read or written from start to end
in order) to the audit trail when it is closed; limits per file and per session are counted on
the bytes that pass, in each direction.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh
from asyncssh import SFTPAttrs, SFTPName

from bastion.text import terminal_safe
from recorder import RecordingError, RecordingWriter

__all__ = ["TransferLimits", "TransferRules", "TransferServer", "open_directions", "size_text"]

log = logging.getLogger(__name__)

Audit = Callable[..., Awaitable[object]]

MAX_READ = 256 * 1024  # bytes one read request gets at most (OpenSSH's sftp-server's own cap)
MAX_OPEN_FILES = 256  # files one session has open at once
MAX_OPEN_DIRS = 256  # directory handles one session has at once
MAX_AUDITED_REFUSALS = 100  # refused requests audited one by one per session; then counted
MAX_PATH_SHOWN = 1024  # characters of a path in audit events and markers


def open_directions(pflags: int) -> frozenset[str]:
    """What opening a file with these SFTP flags does: change it (upload: write, append, create,
    truncate) and read it (download: the read flag, or no write flag at all, since a server
    opens a file without access flags for reading)."""
    directions = set()
    changes = pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT
                        | asyncssh.FXF_TRUNC)
    if changes:
        directions.add("upload")
    if pflags & asyncssh.FXF_READ or not changes:
        directions.add("download")
    return frozenset(directions)


def size_text(count: int) -> str:
    """Bytes as people say them (1 KiB = 1024 bytes)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count:,} bytes"


@dataclass(frozen=True)
class TransferLimits:
    """Bytes one file (per direction, whatever the handles and offsets), and all files of one
    session, may carry."""

    per_file: int
    per_session: int


@dataclass(frozen=True)
class TransferRules:
    """What the server asks of the session, each time (a reload or a revoke applies at once)."""

    refusal: Callable[[str], str | None]  # why a direction is refused now, or None
    limits: Callable[[], TransferLimits]
    ended: Callable[[], str | None]  # why the session ended, or None while it is live
    touch: Callable[[], None]  # the user is active (idle timeout)
    stop: Callable[[str], None]  # end the session (the recording failed)


@dataclass
class _Flow:
    """The bytes of one direction of one open file, and their hash while they pass in order
    from the start."""

    count: int = 0  # bytes that passed
    next_offset: int = 0
    in_order: bool = True
    at_end: bool = False  # a read of at least one byte found the end right after them
    digest: Any = field(default_factory=hashlib.sha256)

    def passed(self, offset: int, data: bytes) -> None:
        if self.in_order and offset == self.next_offset:
            self.digest.update(data)
            self.next_offset += len(data)
        else:
            self.in_order = False
        self.count += len(data)


@dataclass(eq=False)
class _File:
    """One open file."""

    number: int  # the session's number for it, in markers and file data events
    path: str  # as shown
    key: bytes  # the target's real path for it (the per-file limit holds whatever the spelling)
    readable: bool
    writable: bool
    append: bool
    remote: asyncssh.SFTPClientFile
    down: _Flow = field(default_factory=_Flow)
    up: _Flow = field(default_factory=_Flow)


class TransferServer(asyncssh.SFTPServer):
    """The user's SFTP session, relayed to the target's SFTP server under the bastion's rules."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], upstream: asyncssh.SFTPClient | None,
                 rules: TransferRules, recording: RecordingWriter | None, audit: Audit,
                 on_exit: Callable[[], Awaitable[None]]) -> None:
        super().__init__(chan)
        self._up = upstream
        self._rules = rules
        self._recording = recording
        self._audit = audit
        self._on_exit = on_exit
        self.transferred = 0
        self._per_file: Counter[tuple[bytes, str]] = Counter()
        self._files: set[_File] = set()
        self._opened = 0  # files opened so far (their numbers)
        self._exited = False
        self._open_dirs = 0
        self._refusals = 0  # audited one by one up to MAX_AUDITED_REFUSALS, then counted

    # what the user may do --------------------------------------------------------------

    def _enter(self) -> None:
        """Every request: none after the session ended (revoke, kill, window end...)."""
        reason = self._rules.ended()
        if reason is not None:
            raise asyncssh.SFTPConnectionLost(f"bastion: session ended: {reason}")
        self._rules.touch()

    async def _allow(self, directions: frozenset[str], what: str, path: str) -> None:
        self._enter()
        for direction in sorted(directions):
            refusal = self._rules.refusal(direction)
            if refusal is not None:
                await self._refused(what, path, refusal)
                raise self._told(asyncssh.SFTPPermissionDenied(f"bastion: {refusal}"))

    async def _look(self) -> None:
        """Listing, stat, realpath: either direction will do (a reload may have taken both)."""
        self._enter()
        refusal = self._rules.refusal("download")
        if refusal is not None and self._rules.refusal("upload") is not None:
            raise self._told(asyncssh.SFTPPermissionDenied(f"bastion: {refusal}"))

    async def _refused(self, what: str, path: str, reason: str) -> None:
        """Audit a refusal, within a budget per session (a flood of refused requests cannot
        grow the audit trail without bound; what is past it is counted at the end)."""
        self._refusals += 1
        if self._refusals <= MAX_AUDITED_REFUSALS:
            await self._audit("transfer.refused", operation=what, path=path, reason=reason)
            await self._marker(f"refused {what} {path}: {reason}")

    async def _marker(self, text: str) -> None:
        if self._recording is not None:
            await self._recorded(self._recording.marker(f"sftp: {text}"))

    async def _recorded(self, write: Awaitable[None]) -> None:
        """Record, or end the session: no recording, no transfer."""
        try:
            await write
        except RecordingError as exc:
            self._rules.stop(f"the recording failed ({exc}); no recording, no session")
            raise asyncssh.SFTPFailure("bastion: the recording failed; the session ends") from None

    def _told(self, error: asyncssh.SFTPError) -> asyncssh.SFTPError:
        """An error the user must understand: OpenSSH's sftp and scp print only the status
        code's name ("Failure"), so the reason also goes to the channel's stderr, which they show."""
        with contextlib.suppress(OSError, asyncssh.Error):
            self.channel.write_stderr(f"{error.reason}\r\n".encode())
        return error

    def _upstream(self) -> asyncssh.SFTPClient:
        assert self._up is not None, "a refused session relays nothing (_enter refuses first)"
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
        if len(self._files) >= MAX_OPEN_FILES:
            raise self._told(asyncssh.SFTPFailure(
                f"bastion: at most {MAX_OPEN_FILES} files open at once in one session"))
        if "upload" in directions and attrs.size is not None and \
                attrs.size > self._rules.limits().per_file:
            raise self._told(asyncssh.SFTPFailure(self._size_over(name)))
        remote = await self._up_call(self._upstream().open(path, pflags, attrs, encoding=None))
        key = await self._real(path)
        self._opened += 1
        handle = _File(self._opened, name, key, "download" in directions, "upload" in directions,
                       bool(pflags & asyncssh.FXF_APPEND), remote)
        self._files.add(handle)
        await self._audit("transfer.open", path=name, mode=_mode(handle), file=handle.number)
        await self._marker(f"open #{handle.number} {name} for {_mode(handle)}")
        return handle

    async def _real(self, path: bytes) -> bytes:
        """The target's canonical name for a file it just opened (symlinks and `./` resolved),
        so that other spellings of it share its per-file limit."""
        with contextlib.suppress(asyncssh.Error, OSError):
            return _as_bytes(await self._upstream().realpath(path))
        return path

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:  # type: ignore[override]
        handle = _handle(file_obj)
        await self._may(handle, "download")
        size = min(size, MAX_READ)
        room = self._room(handle, offset, size, "download")
        if size and not room:
            # A file exactly as large as the limit still ends: only bytes past it are refused.
            if await self._up_call(handle.remote.read(1, offset)):
                raise self._told(asyncssh.SFTPFailure(self._over(handle, offset, 1, "download")))
            handle.down.at_end = handle.down.in_order and offset == handle.down.next_offset
            return b""
        data: bytes = await self._up_call(handle.remote.read(room, offset)) if room else b""
        if not data:
            if size:
                handle.down.at_end = handle.down.in_order and offset == handle.down.next_offset
            return b""
        await self._passed(handle, handle.down, offset, data, upload=False)
        return data

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:  # type: ignore[override]
        handle = _handle(file_obj)
        await self._may(handle, "upload")
        # An append lands at the end whatever the offset says: where the end is now.
        at = (await self._up_call(handle.remote.stat())).size or 0 if handle.append else offset
        if self._room(handle, at, len(data), "upload") < len(data):
            raise self._told(asyncssh.SFTPFailure(self._over(handle, at, len(data), "upload")))
        await self._passed(handle, handle.up, at, data, upload=True)  # recorded before the target has it
        await self._up_call(handle.remote.write(data, offset))
        return len(data)

    async def _may(self, handle: _File, direction: str) -> None:
        """Every read and write: its direction allowed now, and the file opened for it."""
        self._enter()
        refusal = self._rules.refusal(direction)
        opened_for = handle.readable if direction == "download" else handle.writable
        if opened_for and refusal is None:
            return
        reason = refusal or ("this file was opened for writing only" if direction == "download"
                             else "this file was opened for reading only")
        await self._refused("read" if direction == "download" else "write", handle.path, reason)
        raise self._told(asyncssh.SFTPPermissionDenied(f"bastion: {reason}"))

    def _room(self, handle: _File, offset: int, wanted: int, direction: str) -> int:
        """How many of `wanted` bytes at `offset` may pass: no byte of a file past max_file_size
        (whatever the handle), no more than max_file_size of one file in one direction, nor
        max_transfer_size in the session. Requests are handled one at a time."""
        limits = self._rules.limits()
        return max(0, min(wanted, limits.per_file - offset,
                          limits.per_file - self._per_file[(handle.key, direction)],
                          limits.per_session - self.transferred))

    def _over(self, handle: _File, offset: int, wanted: int, direction: str) -> str:
        limits = self._rules.limits()
        if self.transferred + wanted > limits.per_session and \
                offset + wanted <= limits.per_file and \
                self._per_file[(handle.key, direction)] + wanted <= limits.per_file:
            return (f"bastion: the limit per session ({size_text(limits.per_session)}, "
                    "max_transfer_size) was reached")
        return (f"bastion: {handle.path}: the {direction} limit per file "
                f"({size_text(limits.per_file)}, max_file_size) was reached")

    async def _passed(self, handle: _File, flow: _Flow, offset: int, data: bytes, *,
                      upload: bool) -> None:
        flow.passed(offset, data)
        self._per_file[(handle.key, "upload" if upload else "download")] += len(data)
        self.transferred += len(data)
        if self._recording is not None:
            await self._recorded(self._recording.file_data(upload, data, handle.number, offset))

    async def close(self, file_obj: object) -> None:  # type: ignore[override]
        handle = _handle(file_obj)
        if handle not in self._files:
            return  # closed already (when the session ended)
        try:
            await self._close(handle)
        except Exception:
            # Closing what is left when the session ends or the client leaves (asyncssh's
            # cleanup, which calls exit() only after the last close) never fails: the session
            # must still be ended.
            if self._rules.ended() is None and not self.channel.is_closing():
                raise
            log.debug("closing %s after the session ended", handle.path, exc_info=True)

    async def _close(self, handle: _File) -> None:
        size: int | None = None
        try:
            # After the session ended the target's connection is closed: nothing to ask it (a
            # request on it would wait for an answer that never comes).
            if self._rules.ended() is None:
                if handle.writable:
                    with contextlib.suppress(asyncssh.Error, OSError):
                        size = (await handle.remote.stat()).size
                await self._up_call(handle.remote.close())
        finally:
            self._files.discard(handle)
            if handle.readable and (handle.down.count or not handle.writable):
                await self._closed(handle, "download", handle.down,
                                   handle.down.in_order and handle.down.at_end)
            if handle.writable:
                # Whole: the file holds exactly the bytes written, in order, from its start.
                await self._closed(handle, "upload", handle.up, handle.up.in_order
                                   and not handle.append and size == handle.up.next_offset)

    async def _closed(self, handle: _File, what: str, flow: _Flow, whole: bool) -> None:
        sha256 = flow.digest.hexdigest() if whole else None
        await self._audit(f"transfer.{what}", path=handle.path, bytes=flow.count, sha256=sha256,
                          whole=whole, file=handle.number)
        await self._marker(f"{what} #{handle.number} {handle.path}: {flow.count:,} bytes, "
                           + (f"sha256 {sha256}" if sha256 else "not whole or not in order"))

    async def fsync(self, file_obj: object) -> None:  # type: ignore[override]
        self._enter()
        await self._up_call(_handle(file_obj).remote.fsync())

    async def fstat(self, file_obj: object) -> SFTPAttrs:  # type: ignore[override]
        self._enter()
        attrs: SFTPAttrs = await self._up_call(_handle(file_obj).remote.stat())
        return attrs

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:  # type: ignore[override]
        handle = _handle(file_obj)
        await self._set(handle.path, attrs, lambda: handle.remote.setstat(attrs))

    # names ---------------------------------------------------------------------------

    async def stat(self, path: bytes) -> SFTPAttrs:  # type: ignore[override]
        await self._look()
        attrs: SFTPAttrs = await self._up_call(self._upstream().stat(path))
        return attrs

    async def lstat(self, path: bytes) -> SFTPAttrs:  # type: ignore[override]
        await self._look()
        attrs: SFTPAttrs = await self._up_call(self._upstream().lstat(path))
        return attrs

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:  # type: ignore[override]
        await self._set(_text(path), attrs, lambda: self._upstream().setstat(path, attrs))

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:  # type: ignore[override]
        await self._set(_text(path), attrs,
                        lambda: self._upstream().setstat(path, attrs, follow_symlinks=False))

    async def _set(self, path: str, attrs: SFTPAttrs, call: Callable[[], Awaitable[None]]
                   ) -> None:
        """Attributes (mode, owner, times, size): an upload right, audited; a size is a change
        of the file, within max_file_size."""
        await self._allow(frozenset({"upload"}), "setstat", path)
        if attrs.size is not None and attrs.size > self._rules.limits().per_file:
            raise self._told(asyncssh.SFTPFailure(self._size_over(path)))
        await self._up_call(call())
        changed = {k: v for k, v in (("size", attrs.size), ("permissions", attrs.permissions),
                                     ("uid", attrs.uid), ("gid", attrs.gid),
                                     ("mtime", attrs.mtime)) if v is not None}
        await self._changed("setstat", path=path, attributes=changed)

    def _size_over(self, path: str) -> str:
        return (f"bastion: {path}: the upload limit per file "
                f"({size_text(self._rules.limits().per_file)}, max_file_size) was reached")

    def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:  # type: ignore[override]
        # asyncssh calls this at opendir without awaiting (the target is first asked at the
        # first readdir), so directory handles are bounded here, while their listings live.
        self._enter()
        if self._open_dirs >= MAX_OPEN_DIRS:
            raise self._told(asyncssh.SFTPFailure(
                f"bastion: at most {MAX_OPEN_DIRS} directories open at once in one session"))
        listing = self._listing(path)
        self._open_dirs += 1
        weakref.finalize(listing, self._dir_closed)
        return listing

    def _dir_closed(self) -> None:
        self._open_dirs -= 1

    async def _listing(self, path: bytes) -> AsyncIterator[SFTPName]:
        await self._look()
        try:
            async for name in self._upstream().scandir(path):
                yield name
        except asyncssh.SFTPError as exc:
            raise _again(exc) from None

    async def realpath(self, path: bytes) -> bytes:  # type: ignore[override]
        await self._look()
        return _as_bytes(await self._up_call(self._upstream().realpath(path)))

    async def readlink(self, path: bytes) -> bytes:  # type: ignore[override]
        await self._look()
        return _as_bytes(await self._up_call(self._upstream().readlink(path)))

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

    async def end(self) -> None:
        """The session ended (revoke, kill, window end...): the files still open are closed as
        they stand (audited), then the session, whatever the client does with its channel."""
        for handle in list(self._files):
            await self.close(handle)
        await self.exit()

    async def exit(self) -> None:  # type: ignore[override]
        if self._exited:
            return
        self._exited = True
        try:
            if self._refusals > MAX_AUDITED_REFUSALS:
                await self._audit("transfer.refused_suppressed",
                                  count=self._refusals - MAX_AUDITED_REFUSALS,
                                  reason="more refused requests than one session audits one by one")
        finally:
            await self._on_exit()

    async def _up_call(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except asyncssh.SFTPError as exc:
            raise _again(exc) from None


def _as_bytes(name: object) -> bytes:
    """A name from the target's SFTP client (bytes: it runs without a path encoding)."""
    return name if isinstance(name, bytes) else str(name).encode()


def _handle(file_obj: object) -> _File:
    if not isinstance(file_obj, _File):
        raise asyncssh.SFTPInvalidHandle("bastion: not a file this session opened")
    return file_obj


def _text(path: bytes) -> str:
    """A path as the audit trail and markers show it: backslashes doubled, bytes that are not
    UTF-8 as \\xNN, control and invisible characters escaped, and a long one cut (with its length
    and hash), so that different paths never look alike and none rewrites a screen."""
    text = path.decode("utf-8", "surrogateescape").replace("\\", "\\\\")
    text = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)
    shown = terminal_safe(text)
    if len(shown) > MAX_PATH_SHOWN:
        digest = hashlib.sha256(path).hexdigest()[:16]
        shown = f"{shown[:MAX_PATH_SHOWN]}… ({len(path):,} bytes, sha256 {digest}…)"
    return shown


def _mode(handle: _File) -> str:
    return {(True, True): "reading and writing", (False, True): "writing"}.get(
        (handle.readable, handle.writable), "reading")


def _again(exc: asyncssh.SFTPError) -> asyncssh.SFTPError:
    """The target's error, passed on to the user as the target said it (a new exception: the
    one raised by the client side carries its own connection's state)."""
    return asyncssh.SFTPError(exc.code, exc.reason, exc.lang)
