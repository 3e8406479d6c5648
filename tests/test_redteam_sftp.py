"""Red team of the audited file transfer (bastion/ssh/file_transfer.py), as a user with an
approved grant who speaks SFTP packet by packet.

Each test asserts the SAFE behaviour: a failing test is a hole. The target is this machine's
sshd (internal-sftp, as root), so "the bastion's own disk" is told from the target's by what only
the bastion process has: its working directory (the repository, the target's is /root) and
/proc/self (a python process, the target's is sshd).

Targets: `files` (both directions, 1 MiB per file, 3 MiB per session), `bigfiles` (both,
default limits), `prod` (no file transfer), `pgdb` (a PostgreSQL target, never contacted).
Users: alice (both), dave (download only), ulla (upload only), erin (no file transfer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pwd
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from harness import (
    BastionProcess,
    World,
    control,
    control_json,
    ended_session,
    free_port,
    start_target,
    wait_for,
)

from recorder import FileDataEvent, MarkerEvent, RecordingReader, load_auditor_private_key

pytestmark = pytest.mark.sshd

USERS = {"alice": ["mover"], "dave": ["reader"], "ulla": ["uploader"], "erin": ["developer"],
         "bob": ["approver", "files-approver"], "frank": ["approver"], "carol": ["auditor"]}
KIB, MIB = 1024, 1024 * 1024

# SFTP packet types, status codes and open flags (draft-ietf-secsh-filexfer-02 and -13)
INIT, VERSION, OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 1, 2, 3, 4, 5, 6, 7, 8, \
    9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME, READLINK, SYMLINK, LINK = range(11, 22)
BLOCK, UNBLOCK = 22, 23
STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED, EXTENDED_REPLY = 101, 102, 103, 104, 105, 200, 201
FX_OK, FX_EOF = 0, 1
F_READ, F_WRITE, F_APPEND, F_CREAT, F_TRUNC, F_EXCL = 1, 2, 4, 8, 16, 32
ATTR_SIZE, ATTR_PERMISSIONS = 0x1, 0x4


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def _s(value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _u32(len(data)) + data


def _extra(port: int, host_key: str) -> str:
    return f"""
[[roles]]
name = "mover"
request = ["files", "bigfiles", "prod", "pgdb"]
file_transfer = "both"

[[roles]]
name = "reader"
request = ["files"]
file_transfer = "download"

[[roles]]
name = "uploader"
request = ["files"]
file_transfer = "upload"

[[roles]]
name = "files-approver"
approve = ["files", "bigfiles", "pgdb"]

[[targets]]
name = "files"
kind = "ssh"
address = "127.0.0.1:{port}"
login = "root"
host_key = "{host_key}"
approvals_required = 1
file_transfer = "both"
max_file_size = "1 MiB"
max_transfer_size = "3 MiB"

[[targets]]
name = "bigfiles"
kind = "ssh"
address = "127.0.0.1:{port}"
login = "root"
host_key = "{host_key}"
approvals_required = 1
file_transfer = "both"

[[targets]]
name = "pgdb"
kind = "postgres"
address = "127.0.0.1:1"
database = "nothing"
login = "postgres"
approvals_required = 1
"""


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    world = World(root=tmp_path_factory.mktemp("redteam-sftp"), port=free_port(),
                  users=dict(USERS))
    target = start_target(world)
    world.extra = _extra(target.port, target.host_key_line)
    world.write_config()
    proc = BastionProcess(world)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        target.stop()


_CERTS: dict[tuple[str, str], Path] = {}


def _new_cert(bastion: BastionProcess, user: str, target: str) -> tuple[Path, int]:
    req = control_json(bastion, user, "request", target, "--reason", "INC-66: red team")
    control_json(bastion, "bob", "approve", str(req["id"]))
    path = bastion.world.root / f"{user}-{target}-{req['id']}-cert.pub"
    path.write_text(control(bastion, user, "cert", str(req["id"])).stdout)
    return path, int(req["id"])


def _cert(bastion: BastionProcess, user: str, target: str) -> Path:
    if (user, target) not in _CERTS:
        _CERTS[user, target] = _new_cert(bastion, user, target)[0]
    return _CERTS[user, target]


async def _connect(bastion: BastionProcess, user: str, login: str,
                   cert: Path | None = None) -> asyncssh.SSHClientConnection:
    key = asyncssh.read_private_key(str(bastion.world.key(user)))
    keys: list[object] = [(key, asyncssh.read_certificate(str(cert)))] if cert else [key]
    return await asyncssh.connect("127.0.0.1", bastion.world.port, username=login,
                                  client_keys=keys, known_hosts=str(bastion.known_hosts()),
                                  agent_path=None, config=None)


def _events(bastion: BastionProcess, kind: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = control_json(bastion, "carol", "audit", "--kind", kind,
                                                  "--limit", "2000")
    return found


def _details_for(bastion: BastionProcess, kind: str, path: str) -> list[dict[str, object]]:
    return [e["details"] for e in _events(bastion, kind)  # type: ignore[misc]
            if isinstance(e["details"], dict) and e["details"].get("path") == path]


def _recording(bastion: BastionProcess, session_id: str) -> list[object]:
    session = ended_session(bastion, session_id)
    identity = load_auditor_private_key(bastion.world.root / "keys" / "auditor")
    with RecordingReader(session["recording"], identity) as reader:
        return list(reader)


def _session_of(bastion: BastionProcess, path: str) -> str:
    opened = wait_for(lambda: [e for e in _events(bastion, "transfer.open")
                               if e["details"]["path"] == path])  # type: ignore[index]
    assert opened, f"no transfer.open for {path}"
    return str(opened[0]["session_id"])


@dataclass
class Reply:
    kind: int
    body: bytes

    @property
    def code(self) -> int | None:
        return struct.unpack(">I", self.body[:4])[0] if self.kind == STATUS else None

    @property
    def ok(self) -> bool:
        return self.code == FX_OK

    @property
    def message(self) -> str:
        if self.kind != STATUS:
            return ""
        (n,) = struct.unpack(">I", self.body[4:8])
        return self.body[8:8 + n].decode("utf-8", "replace")

    @property
    def handle(self) -> bytes:
        assert self.kind == HANDLE, (self.kind, self.code, self.message)
        (n,) = struct.unpack(">I", self.body[:4])
        return self.body[4:4 + n]

    @property
    def data(self) -> bytes:
        if self.kind != DATA:
            return b""
        (n,) = struct.unpack(">I", self.body[:4])
        return self.body[4:4 + n]

    @property
    def first_name(self) -> bytes:
        assert self.kind == NAME, (self.kind, self.code, self.message)
        (n,) = struct.unpack(">I", self.body[4:8])
        return self.body[8:8 + n]


class Raw:
    """An SFTP client that sends the packets it is told to (pipelined when asked)."""

    def __init__(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self.proc = proc
        self.version = 0
        self.extensions: dict[bytes, bytes] = {}
        self.next_id = 0

    @classmethod
    async def start(cls, conn: asyncssh.SSHClientConnection, version: int = 3) -> Raw:
        proc = await conn.create_process(subsystem="sftp", encoding=None)
        raw = cls(proc)
        raw.write(bytes([INIT]) + _u32(version))
        kind, body = await raw.read()
        assert kind == VERSION, kind
        (raw.version,) = struct.unpack(">I", body[:4])
        rest = body[4:]
        while rest:
            (n,) = struct.unpack(">I", rest[:4])
            name = rest[4:4 + n]
            rest = rest[4 + n:]
            (m,) = struct.unpack(">I", rest[:4])
            raw.extensions[name] = rest[4:4 + m]
            rest = rest[4 + m:]
        return raw

    def write(self, payload: bytes) -> None:
        self.proc.stdin.write(_u32(len(payload)) + payload)

    async def read(self) -> tuple[int, bytes]:
        (n,) = struct.unpack(">I", await self.proc.stdout.readexactly(4))
        packet = await self.proc.stdout.readexactly(n)
        return packet[0], packet[1:]

    def send(self, kind: int, *parts: bytes) -> int:
        self.next_id += 1
        self.write(bytes([kind]) + _u32(self.next_id) + b"".join(parts))
        return self.next_id

    def send_ext(self, name: str, *parts: bytes) -> int:
        return self.send(EXTENDED, _s(name), *parts)

    async def reply(self) -> tuple[int, Reply]:
        kind, body = await self.read()
        (rid,) = struct.unpack(">I", body[:4])
        return rid, Reply(kind, body[4:])

    async def call(self, kind: int, *parts: bytes) -> Reply:
        rid = self.send(kind, *parts)
        got, reply = await asyncio.wait_for(self.reply(), 20)
        assert got == rid
        return reply

    async def ext(self, name: str, *parts: bytes) -> Reply:
        return await self.call(EXTENDED, _s(name), *parts)

    def attrs(self, *, mode: int | None = None, size: int | None = None) -> bytes:
        flags, fields = 0, b""
        if size is not None:
            flags |= ATTR_SIZE
            fields += _u64(size)
        if mode is not None:
            flags |= ATTR_PERMISSIONS
            fields += _u32(mode)
        if self.version >= 4:
            return _u32(flags) + bytes([5]) + fields  # type: unknown
        return _u32(flags) + fields

    async def open(self, path: bytes | str, pflags: int) -> Reply:
        return await self.call(OPEN, _s(path), _u32(pflags), self.attrs())

    async def handle(self, path: bytes | str, pflags: int) -> bytes:
        return (await self.open(path, pflags)).handle

    async def read_at(self, handle: bytes, offset: int, length: int) -> Reply:
        return await self.call(READ, _s(handle), _u64(offset), _u32(length))

    async def write_at(self, handle: bytes, offset: int, data: bytes) -> Reply:
        return await self.call(WRITE, _s(handle), _u64(offset), _s(data))

    async def close(self, handle: bytes) -> Reply:
        return await self.call(CLOSE, _s(handle))

    async def read_all(self, handle: bytes, block: int = 32 * KIB) -> bytes:
        data, offset = b"", 0
        while True:
            got = await self.read_at(handle, offset, block)
            if got.kind != DATA:
                return data
            data += got.data
            offset += len(got.data)

    async def finish(self) -> None:
        self.proc.stdin.write_eof()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait_closed(), 10)


async def _raw(bastion: BastionProcess, user: str, target: str,
               version: int = 3) -> tuple[asyncssh.SSHClientConnection, Raw]:
    conn = await _connect(bastion, user, target, _cert(bastion, user, target))
    return conn, await Raw.start(conn, version)


async def _end(conn: asyncssh.SSHClientConnection, raw: Raw | None = None) -> None:
    if raw is not None:
        await raw.finish()
    conn.close()
    await conn.wait_closed()


@pytest.fixture()
def remote(tmp_path: Path) -> Path:
    """A directory on the target (the target is this machine's sshd)."""
    place = tmp_path / "on-target"
    place.mkdir()
    return place


# 1. The bastion's own disk -------------------------------------------------------------------

async def test_paths_resolve_on_the_target_not_on_the_bastion(bastion: BastionProcess) -> None:
    """realpath, relative paths, /proc/self, directory listings: all the target's."""
    home = pwd.getpwnam("root").pw_dir.encode()
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        assert (await raw.call(REALPATH, _s("."))).first_name == home
        assert not (await raw.call(STAT, _s("pyproject.toml"))).kind == ATTRS or \
            Path(home.decode(), "pyproject.toml").exists()
        exe = await raw.call(READLINK, _s("/proc/self/exe"))
        assert b"python" not in exe.body, exe.body
        handle = await raw.handle("/proc/self/cmdline", F_READ)
        cmdline = (await raw.read_at(handle, 0, 4096)).data
        await raw.close(handle)
        assert b"bastion" not in cmdline and b"python" not in cmdline, cmdline
        listing = await raw.call(OPENDIR, _s("."))
        names = await raw.call(READDIR, _s(listing.handle))
        assert b"pyproject.toml" not in names.body or (Path(home.decode()) / "pyproject.toml").exists()
    finally:
        await _end(conn, raw)


async def test_extensions_that_would_touch_the_local_disk_are_refused(
        bastion: BastionProcess, remote: Path) -> None:
    (remote / "f").write_bytes(b"x" * 100)
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        assert not (await raw.ext("statvfs@openssh.com", _s("/"))).kind == EXTENDED_REPLY
        handle = await raw.handle(f"{remote}/f", F_READ)
        assert not (await raw.ext("fstatvfs@openssh.com", _s(handle))).kind == EXTENDED_REPLY
        ranges = await raw.ext("ranges@asyncssh.com", _s(handle), _u64(0), _u64(100))
        assert ranges.kind == STATUS and not ranges.ok
        for name, args in [("expand-path@openssh.com", _s("~")), ("home-directory", _s("root")),
                           ("users-groups-by-id@openssh.com", _s(_u32(0)) + _s(_u32(0))),
                           ("check-file-name", _s("/etc/passwd") + _s("md5") + _u64(0) + _u64(0)
                            + _u32(0)),
                           ("space-available", _s("/"))]:
            got = await raw.ext(name, args)
            assert got.kind == STATUS and not got.ok, name
        # the session still works after an uncaught error in an extension
        assert (await raw.read_at(handle, 0, 10)).data == b"x" * 10
        await raw.close(handle)
    finally:
        await _end(conn, raw)


async def test_sftp_v4_to_v6_cannot_be_negotiated_and_their_packets_follow_the_rules(
        bastion: BastionProcess, remote: Path) -> None:
    """A client asking for SFTP v6 gets v3 (asyncssh's default), or, if it ever got v5/6, its
    opens are refused; the v6 LINK packet (handled by asyncssh in any version) and BLOCK go
    through the same gates as symlink/hardlink/locks."""
    (remote / "keep").write_text("keep\n")
    conn, raw = await _raw(bastion, "alice", "bigfiles", version=6)
    try:
        if raw.version >= 5:
            opened = await raw.call(OPEN, _s(f"{remote}/new"), _u32(0x2 | 0x4), _u32(1),
                                    raw.attrs())
            assert opened.kind == STATUS and not opened.ok
        else:
            assert raw.version == 3, raw.version
        handle = await raw.handle(f"{remote}/keep", F_READ)
        lock = await raw.call(BLOCK, _s(handle), _u64(0), _u64(1), _u32(0))
        assert lock.kind == STATUS and not lock.ok
        await raw.close(handle)
    finally:
        await _end(conn, raw)
    assert not (remote / "new").exists()
    conn, raw = await _raw(bastion, "dave", "files", version=6)
    try:
        for parts in [(_s(f"{remote}/sym"), _s(f"{remote}/keep"), b"\x01"),
                      (_s(f"{remote}/hard"), _s(f"{remote}/keep"), b"\x00")]:
            got = await raw.call(LINK, *parts)
            assert got.kind == STATUS and not got.ok, got.message
        if raw.version >= 5:
            moved = await raw.call(RENAME, _s(f"{remote}/keep"), _s(f"{remote}/moved"), _u32(1))
            assert moved.kind == STATUS and not moved.ok
    finally:
        await _end(conn, raw)
    assert sorted(p.name for p in remote.iterdir()) == ["keep"]


# 2. The download-only and upload-only rules ------------------------------------------------

DOWNLOAD_ONLY_ATTEMPTS = ["read+creat", "read+trunc", "read+append", "read+write",
                          "write-on-read-handle", "fsetstat-on-read-handle",
                          "fsetstat-size-on-read-handle", "setstat", "lsetstat", "hardlink",
                          "symlink", "posix-rename", "rename", "remove", "mkdir", "rmdir",
                          "copy-data-into-read-handle", "excl-only-open"]


@pytest.mark.parametrize("attempt", DOWNLOAD_ONLY_ATTEMPTS)
async def test_a_download_only_user_changes_nothing_by_protocol(
        bastion: BastionProcess, remote: Path, attempt: str) -> None:
    secret = remote / "config.yml"
    secret.write_text("replicas: 3\n")
    secret.chmod(0o640)
    (remote / "dir").mkdir()
    before = {p.name: (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
              for p in remote.iterdir()}
    path, new = f"{remote}/config.yml", f"{remote}/new"
    conn, raw = await _raw(bastion, "dave", "files")
    try:
        replies: list[Reply] = []
        if attempt.startswith("read+"):
            extra = {"creat": F_CREAT, "trunc": F_TRUNC, "append": F_APPEND,
                     "write": F_WRITE}[attempt[5:]]
            replies.append(await raw.open(path, F_READ | extra))
            replies.append(await raw.open(new, F_READ | extra))
        elif attempt == "excl-only-open":
            replies.append(await raw.open(new, F_EXCL | F_CREAT))
        elif attempt in ("write-on-read-handle", "fsetstat-on-read-handle",
                         "fsetstat-size-on-read-handle", "copy-data-into-read-handle"):
            handle = await raw.handle(path, F_READ)
            if attempt == "write-on-read-handle":
                replies.append(await raw.write_at(handle, 0, b"replicas: 0\n"))
            elif attempt == "fsetstat-on-read-handle":
                replies.append(await raw.call(FSETSTAT, _s(handle), raw.attrs(mode=0o777)))
            elif attempt == "fsetstat-size-on-read-handle":
                replies.append(await raw.call(FSETSTAT, _s(handle), raw.attrs(size=0)))
            else:
                other = await raw.handle(path, F_READ)
                replies.append(await raw.ext("copy-data", _s(handle), _u64(0), _u64(0),
                                             _s(other), _u64(3)))
            await raw.close(handle)
        elif attempt == "setstat":
            replies.append(await raw.call(SETSTAT, _s(path), raw.attrs(mode=0o777)))
            replies.append(await raw.call(SETSTAT, _s(path), raw.attrs(size=0)))
        elif attempt == "lsetstat":
            replies.append(await raw.ext("lsetstat@openssh.com", _s(path), raw.attrs(mode=0o777)))
        elif attempt == "hardlink":
            replies.append(await raw.ext("hardlink@openssh.com", _s(path), _s(new)))
        elif attempt == "symlink":
            replies.append(await raw.call(SYMLINK, _s(new), _s(path)))
        elif attempt == "posix-rename":
            replies.append(await raw.ext("posix-rename@openssh.com", _s(path), _s(new)))
        elif attempt == "rename":
            replies.append(await raw.call(RENAME, _s(path), _s(new)))
        elif attempt == "remove":
            replies.append(await raw.call(REMOVE, _s(path)))
        elif attempt == "mkdir":
            replies.append(await raw.call(MKDIR, _s(new), raw.attrs()))
        elif attempt == "rmdir":
            replies.append(await raw.call(RMDIR, _s(f"{remote}/dir")))
        assert replies and all(r.kind == STATUS and not r.ok for r in replies), \
            [(r.kind, r.code, r.message) for r in replies]
    finally:
        await _end(conn, raw)
    after = {p.name: (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
             for p in remote.iterdir()}
    assert after == before


async def test_an_upload_only_user_cannot_read_through_an_open_without_access_flags(
        bastion: BastionProcess, remote: Path) -> None:
    """OpenSSH's sftp-server opens O_RDONLY when neither READ nor WRITE is set: pflags 0 (or
    EXCL alone, or TEXT) is a read open, so it needs "download"."""
    (remote / "secret").write_bytes(b"TOP-SECRET-DATA")
    conn, raw = await _raw(bastion, "ulla", "files")
    try:
        plain = await raw.open(f"{remote}/secret", F_READ)
        assert plain.kind == STATUS and not plain.ok, "an upload-only user opened for reading"
        leaked = []
        for pflags in (0, F_EXCL, 0x40):
            got = await raw.open(f"{remote}/secret", pflags)
            if got.kind == HANDLE:
                leaked.append((pflags, (await raw.read_at(got.handle, 0, 100)).data))
                await raw.close(got.handle)
        assert not [d for _, d in leaked if d], f"upload-only user read the file: {leaked}"
    finally:
        await _end(conn, raw)


async def test_an_upload_only_user_cannot_read_back_through_a_write_handle_or_copy_data(
        bastion: BastionProcess, remote: Path) -> None:
    (remote / "secret").write_bytes(b"TOP-SECRET-DATA")
    conn, raw = await _raw(bastion, "ulla", "files")
    try:
        rw = await raw.open(f"{remote}/secret", F_READ | F_WRITE)
        assert rw.kind == STATUS and not rw.ok
        handle = await raw.handle(f"{remote}/secret", F_WRITE)
        assert (await raw.read_at(handle, 0, 100)).kind == STATUS
        out = await raw.handle(f"{remote}/copy", F_WRITE | F_CREAT)
        copied = await raw.ext("copy-data", _s(handle), _u64(0), _u64(0), _s(out), _u64(0))
        assert not copied.ok
        await raw.close(handle)
        await raw.close(out)
    finally:
        await _end(conn, raw)
    assert (remote / "copy").read_bytes() == b""


# 3. Limits -----------------------------------------------------------------------------------

async def test_per_session_limit_holds_with_pipelined_reads_on_many_handles(
        bastion: BastionProcess, remote: Path) -> None:
    for n in range(4):
        (remote / f"part{n}").write_bytes(os.urandom(MIB))
    conn, raw = await _raw(bastion, "alice", "files")
    try:
        handles = [await raw.handle(f"{remote}/part{n}", F_READ) for n in range(4)]
        ids = [raw.send(READ, _s(h), _u64(i * 64 * KIB), _u32(64 * KIB))
               for i in range(16) for h in handles]
        got = 0
        for _ in ids:
            _, reply = await asyncio.wait_for(raw.reply(), 20)
            got += len(reply.data)
        assert got <= 3 * MIB, got
        # lengths past the limits in one request
        more = await raw.read_at(handles[0], 0, 0xFFFFFFFF)
        assert len(more.data) == 0
        for h in handles:
            await raw.close(h)
    finally:
        await _end(conn, raw)


async def test_per_file_limit_holds_across_several_handles_on_one_file(
        bastion: BastionProcess, remote: Path) -> None:
    """max_file_size (1 MiB) "bounds a file": a 2 MiB file must not come out whole by reading
    its first half through one handle and its second half through another."""
    big = os.urandom(2 * MIB)
    (remote / "big.bin").write_bytes(big)
    conn, raw = await _raw(bastion, "alice", "files")
    try:
        got = b""
        for half in (0, 1):
            handle = await raw.handle(f"{remote}/big.bin", F_READ)
            offset = half * MIB
            while offset < (half + 1) * MIB:
                part = await raw.read_at(handle, offset, 64 * KIB)
                if part.kind != DATA:
                    break
                got += part.data
                offset += len(part.data)
            await raw.close(handle)
    finally:
        await _end(conn, raw)
    assert len(got) <= MIB, f"{len(got):,} bytes of one file passed a 1 MiB max_file_size"


async def test_per_file_limit_holds_for_uploads_across_several_handles(
        bastion: BastionProcess, remote: Path) -> None:
    conn, raw = await _raw(bastion, "alice", "files")
    try:
        for half in (0, 1):
            handle = await raw.handle(f"{remote}/up.bin", F_WRITE | F_CREAT)
            for i in range(16):
                await raw.write_at(handle, half * MIB + i * 64 * KIB, b"u" * 64 * KIB)
            await raw.close(handle)
    finally:
        await _end(conn, raw)
    size = (remote / "up.bin").stat().st_size
    assert size <= MIB, f"a {size:,}-byte file was uploaded past a 1 MiB max_file_size"


async def test_a_write_far_past_the_end_does_not_make_a_file_past_the_limit(
        bastion: BastionProcess, remote: Path) -> None:
    conn, raw = await _raw(bastion, "alice", "files")
    try:
        handle = await raw.handle(f"{remote}/sparse", F_WRITE | F_CREAT)
        await raw.write_at(handle, 1 << 36, b"!")
        await raw.close(handle)
    finally:
        await _end(conn, raw)
    size = (remote / "sparse").stat().st_size
    assert size <= MIB, f"one byte made a {size:,}-byte file on the target (max_file_size 1 MiB)"


async def test_one_read_request_is_bounded_by_the_advertised_read_length(
        bastion: BastionProcess, remote: Path) -> None:
    """The bastion advertises limits@openssh.com (4 MiB reads); a single READ of 16 MiB must not
    make it buffer (and send) 16 MiB at once: with default limits (1 GiB per file) one 29-byte
    request would hold 1 GiB in the bastion's memory."""
    with (remote / "huge").open("wb") as f:
        f.truncate(16 * MIB)
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        limits = await raw.ext("limits@openssh.com")
        assert limits.kind == EXTENDED_REPLY
        _, max_read = struct.unpack(">QQ", limits.body[8:24])
        handle = await raw.handle(f"{remote}/huge", F_READ)
        got = await raw.read_at(handle, 0, 16 * MIB)
        await raw.close(handle)
    finally:
        await _end(conn, raw)
    assert len(got.data) <= max_read, \
        f"one READ returned {len(got.data):,} bytes; the bastion advertises {max_read:,}"


async def test_copy_data_counts_against_the_limits(bastion: BastionProcess, remote: Path) -> None:
    (remote / "src").write_bytes(os.urandom(2 * MIB))
    conn, raw = await _raw(bastion, "alice", "files")
    try:
        src = await raw.handle(f"{remote}/src", F_READ)
        dst = await raw.handle(f"{remote}/dst", F_WRITE | F_CREAT)
        copied = await raw.ext("copy-data", _s(src), _u64(0), _u64(0), _s(dst), _u64(0))
        assert not copied.ok
        await raw.close(src)
        await raw.close(dst)
    finally:
        await _end(conn, raw)
    assert (remote / "dst").stat().st_size <= MIB


# 4. Audit hashes ------------------------------------------------------------------------------

async def test_a_zero_length_read_does_not_make_a_partial_download_whole(
        bastion: BastionProcess, remote: Path) -> None:
    """Read the first 100 bytes of a 200 KiB file, then ask for 0 bytes at offset 100: the audit
    must not say the file was downloaded whole (with the hash of its first 100 bytes)."""
    content = os.urandom(200 * KIB)
    (remote / "partial.bin").write_bytes(content)
    path = f"{remote}/partial.bin"
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        handle = await raw.handle(path, F_READ)
        assert (await raw.read_at(handle, 0, 100)).data == content[:100]
        await raw.read_at(handle, 100, 0)
        await raw.close(handle)
    finally:
        await _end(conn, raw)
    (event,) = wait_for(lambda: _details_for(bastion, "transfer.download", path))
    assert not event["whole"], f"audited as whole: {event}"


async def test_an_upload_without_truncate_is_not_whole_when_old_bytes_remain(
        bastion: BastionProcess, remote: Path) -> None:
    (remote / "crontab").write_bytes(b"SAFE-LINE\n* * * * * root /tmp/evil\n")
    path = f"{remote}/crontab"
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        handle = await raw.handle(path, F_WRITE)
        await raw.write_at(handle, 0, b"SAFE-LINE\n")
        await raw.close(handle)
    finally:
        await _end(conn, raw)
    final = (remote / "crontab").read_bytes()
    (event,) = wait_for(lambda: _details_for(bastion, "transfer.upload", path))
    assert not event["whole"] or event["sha256"] == hashlib.sha256(final).hexdigest(), \
        f"audit says whole with sha256 of {event['bytes']} bytes; the file is {final!r}"


async def test_an_append_upload_is_not_called_whole(bastion: BastionProcess, remote: Path) -> None:
    (remote / "authorized_keys").write_bytes(b"ssh-ed25519 AAAA-legit\n")
    path = f"{remote}/authorized_keys"
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        handle = await raw.handle(path, F_WRITE | F_APPEND)
        await raw.write_at(handle, 0, b"ssh-ed25519 AAAA-attacker\n")
        await raw.close(handle)
    finally:
        await _end(conn, raw)
    final = (remote / "authorized_keys").read_bytes()
    assert final == b"ssh-ed25519 AAAA-legit\nssh-ed25519 AAAA-attacker\n"
    (event,) = wait_for(lambda: _details_for(bastion, "transfer.upload", path))
    assert not event["whole"] or event["sha256"] == hashlib.sha256(final).hexdigest(), event


async def test_out_of_order_or_overlapping_writes_are_not_whole(
        bastion: BastionProcess, remote: Path) -> None:
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        for name, writes in [("ooo", [(4, b"BBBB"), (0, b"AAAA")]),
                             ("overlap", [(0, b"AAAAAAAA"), (4, b"XXXXYYYY")]),
                             ("rewind", [(0, b"AAAA"), (4, b"BBBB"), (0, b"CCCC")])]:
            handle = await raw.handle(f"{remote}/{name}", F_WRITE | F_CREAT | F_TRUNC)
            for offset, data in writes:
                await raw.write_at(handle, offset, data)
            await raw.close(handle)
    finally:
        await _end(conn, raw)
    for name in ("ooo", "overlap", "rewind"):
        final = (remote / name).read_bytes()
        (event,) = wait_for(lambda n=name: _details_for(bastion, "transfer.upload", f"{remote}/{n}"))
        assert not event["whole"] or event["sha256"] == hashlib.sha256(final).hexdigest(), \
            (name, event)


async def test_bytes_read_through_a_read_write_handle_are_audited_as_a_download(
        bastion: BastionProcess, remote: Path) -> None:
    content = b"DB_PASSWORD=hunter2\n"
    (remote / ".env").write_bytes(content)
    path = f"{remote}/.env"
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        handle = await raw.handle(path, F_READ | F_WRITE)
        assert await raw.read_all(handle) == content
        await raw.close(handle)
    finally:
        await _end(conn, raw)
    downloads = wait_for(lambda: _details_for(bastion, "transfer.download", path), timeout=3)
    uploads = _details_for(bastion, "transfer.upload", path)
    assert downloads and downloads[0]["bytes"] == len(content), \
        f"a {len(content)}-byte download is audited only as {uploads}"


# 5. The recording holds every byte ----------------------------------------------------------

async def test_every_byte_that_passes_is_in_the_recording(
        bastion: BastionProcess, remote: Path) -> None:
    a = os.urandom(300 * KIB)
    (remote / "a.bin").write_bytes(a)
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    received, sent = b"", b""
    try:
        handle = await raw.handle(f"{remote}/a.bin", F_READ)
        ids = [raw.send(READ, _s(handle), _u64(off), _u32(ln))
               for off, ln in [(200 * KIB, 50 * KIB), (0, 64 * KIB), (10, 100), (299 * KIB, 4096),
                               (0, 300 * KIB), (300 * KIB, 10)]]
        for _ in ids:
            _, reply = await raw.reply()
            received += reply.data
        out = await raw.handle(f"{remote}/b.bin", F_WRITE | F_CREAT | F_TRUNC)
        copied = await raw.ext("copy-data", _s(handle), _u64(0), _u64(0), _s(out), _u64(0))
        assert copied.ok, copied.message
        tail = os.urandom(5000)
        await raw.write_at(out, len(a), tail)
        sent += tail
        await raw.close(out)
        await raw.close(handle)
    finally:
        await _end(conn, raw)
    assert (remote / "b.bin").read_bytes() == a + tail
    events = _recording(bastion, _session_of(bastion, f"{remote}/a.bin"))
    down = b"".join(e.data for e in events if isinstance(e, FileDataEvent) and not e.upload)
    up = b"".join(e.data for e in events if isinstance(e, FileDataEvent) and e.upload)
    assert down == received + a
    assert up == a + sent


# 6. Handles -------------------------------------------------------------------------------

async def test_invalid_and_foreign_handles_are_refused(bastion: BastionProcess,
                                                       remote: Path) -> None:
    (remote / "mine").write_bytes(b"SESSION-A-ONLY")
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    other = await Raw.start(conn)
    try:
        handle = await raw.handle(f"{remote}/mine", F_READ)
        for fake in (handle, b"", b"\xff" * 4, b"\x00" * 5000, handle + b"\x00"):
            for got in (await other.read_at(fake, 0, 100), await other.call(FSTAT, _s(fake)),
                        await other.write_at(fake, 0, b"x"), await other.close(fake)):
                assert got.kind == STATUS and not got.ok, (fake, got.kind)
        directory = (await raw.call(OPENDIR, _s(str(remote)))).handle
        assert (await raw.read_at(directory, 0, 100)).kind == STATUS
        assert (await raw.read_at(handle, 0, 100)).data == b"SESSION-A-ONLY"
        await raw.close(handle)
        assert (await raw.read_at(handle, 0, 100)).kind == STATUS  # closed
    finally:
        await other.finish()
        await _end(conn, raw)


async def test_directory_handles_are_bounded_per_session(bastion: BastionProcess) -> None:
    """A directory handle is only memory on the bastion until its first readdir (asyncssh hands
    it out at opendir without asking the target): opendirs, even of paths that do not exist,
    cannot pile up without bound, and a directory that does not exist fails at its readdir."""
    from bastion.ssh.file_transfer import MAX_OPEN_DIRS

    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        ids = [raw.send(OPENDIR, _s(f"/nonexistent-{n}")) for n in range(2000)]
        handles = []
        for _ in ids:
            _, reply = await raw.reply()
            if reply.kind == HANDLE:
                handles.append(reply)
        assert len(handles) == MAX_OPEN_DIRS, f"{len(handles)} directory handles at once"
        raw.send(READDIR, _s(handles[0].handle))
        _, answer = await raw.reply()
        assert answer.kind == STATUS and not answer.ok  # no such directory on the target
    finally:
        await _end(conn, raw)


# 7. Paths in the audit trail and markers ------------------------------------------------------

async def test_control_characters_in_paths_never_reach_audit_or_markers(
        bastion: BastionProcess, remote: Path) -> None:
    evil = f"{remote}/x\x1b]0;owned\x07\x1b[2J\x1b[31mred\r\nfake: line\u202e".encode()
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        assert (await raw.call(MKDIR, _s(evil), raw.attrs())).ok
        handle = await raw.handle(evil + b"/f\x1b[1m", F_WRITE | F_CREAT)
        await raw.write_at(handle, 0, b"data")
        await raw.close(handle)
        assert (await raw.call(RENAME, _s(evil + b"/f\x1b[1m"), _s(evil + b"/g\x9b2J"))).ok
    finally:
        await _end(conn, raw)
    kinds = ("transfer.mkdir", "transfer.open", "transfer.upload", "transfer.rename")
    found = [e for k in kinds for e in _events(bastion, k) if "owned" in str(e["details"])]
    assert len(found) >= 4
    bad = set("\x1b\x07\r\n\x9b\u202e")
    for event in found:
        assert not bad & set(str(event["details"])), event
    session = str(found[0]["session_id"])
    markers = [e.label for e in _recording(bastion, session) if isinstance(e, MarkerEvent)]
    assert any("owned" in m for m in markers)
    for label in markers:
        assert not bad & set(label), label


async def test_audit_paths_tell_apart_names_that_differ_in_non_utf8_bytes(
        bastion: BastionProcess, remote: Path) -> None:
    names = [f"{remote}/n".encode() + b"\xff", f"{remote}/n".encode() + b"\xfe"]
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        for name in names:
            assert (await raw.call(MKDIR, _s(name), raw.attrs())).ok
    finally:
        await _end(conn, raw)
    shown = [str(e["details"]["path"]) for e in _events(bastion, "transfer.mkdir")  # type: ignore[index]
             if str(e["details"]["path"]).startswith(f"{remote}/n")]  # type: ignore[index]
    assert len(shown) == 2 and len(set(shown)) == 2, f"two directories audited as {shown}"


async def test_audit_paths_tell_an_escape_from_a_literal_backslash(
        bastion: BastionProcess, remote: Path) -> None:
    names = [f"{remote}/e\x1b".encode(), f"{remote}/e\\x1b".encode()]
    conn, raw = await _raw(bastion, "alice", "bigfiles")
    try:
        for name in names:
            assert (await raw.call(MKDIR, _s(name), raw.attrs())).ok
    finally:
        await _end(conn, raw)
    shown = [str(e["details"]["path"]) for e in _events(bastion, "transfer.mkdir")  # type: ignore[index]
             if str(e["details"]["path"]).startswith(f"{remote}/e")]  # type: ignore[index]
    assert len(shown) == 2 and len(set(shown)) == 2, f"two directories audited as {shown}"


async def test_a_huge_path_does_not_blow_up_the_audit_trail(bastion: BastionProcess,
                                                            remote: Path) -> None:
    """A refused request is audited with its path, with no budget: each one must stay small."""
    huge = f"{remote}/".encode() + b"\x01" * (512 * KIB)
    conn, raw = await _raw(bastion, "dave", "files")
    try:
        refused = await raw.call(REMOVE, _s(huge))
        assert not refused.ok
    finally:
        await _end(conn, raw)
    sizes = [len(str(e["details"])) for e in _events(bastion, "transfer.refused")
             if e["actor"] == "dave" and str(remote) in str(e["details"])]
    assert sizes and max(sizes) <= 16 * KIB, f"one refused request made a {max(sizes):,}-char audit event"


# 8. Refused sessions, other doors -------------------------------------------------------------

async def _refused_sftp(conn: asyncssh.SSHClientConnection, marker: Path) -> tuple[bytes, bytes]:
    """Open the sftp subsystem and pipeline INIT and requests at once; return (stdout, stderr)."""
    proc = await conn.create_process(subsystem="sftp", encoding=None)
    packets = [bytes([INIT]) + _u32(3),
               bytes([MKDIR]) + _u32(1) + _s(str(marker)) + _u32(0),
               bytes([OPEN]) + _u32(2) + _s("/etc/hostname") + _u32(F_READ) + _u32(0),
               bytes([READ]) + _u32(3) + _s(b"\0\0\0\0") + _u64(0) + _u32(100),
               bytes([REALPATH]) + _u32(4) + _s(".")]
    with contextlib.suppress(Exception):
        proc.stdin.write(b"".join(_u32(len(p)) + p for p in packets))
    out = await asyncio.wait_for(proc.stdout.read(), 10)
    err = await asyncio.wait_for(proc.stderr.read(), 10)
    proc.close()
    return out, err


async def test_a_refused_sftp_session_relays_nothing(bastion: BastionProcess,
                                                     remote: Path) -> None:
    for user, target in [("erin", "prod"), ("alice", "prod")]:
        conn = await _connect(bastion, user, target, _cert(bastion, user, target))
        try:
            out, err = await _refused_sftp(conn, remote / f"made-by-{user}")
        finally:
            await _end(conn)
        assert out == b"", (user, out[:200])
        assert b"not allowed on prod" in err, err
    assert list(remote.iterdir()) == []


async def test_sftp_on_a_sql_target_and_on_access_is_refused(bastion: BastionProcess,
                                                             remote: Path) -> None:
    conn = await _connect(bastion, "alice", "pgdb", _cert(bastion, "alice", "pgdb"))
    try:
        out, err = await _refused_sftp(conn, remote / "made-on-pgdb")
    finally:
        await _end(conn)
    assert out == b"" and b"file transfer applies to ssh targets" in err, (out, err)
    conn = await _connect(bastion, "alice", "access")
    try:
        out, err = await _refused_sftp(conn, remote / "made-on-access")
    finally:
        await _end(conn)
    assert out == b"", out
    assert list(remote.iterdir()) == []


@pytest.mark.parametrize("how", ["exec:/usr/lib/openssh/sftp-server", "exec:internal-sftp",
                                 "subsystem:SFTP", "subsystem:sftp-server"])
async def test_an_sftp_server_by_another_door_is_refused(bastion: BastionProcess, remote: Path,
                                                        how: str) -> None:
    kind, _, name = how.partition(":")
    conn = await _connect(bastion, "alice", "files", _cert(bastion, "alice", "files"))
    try:
        if kind == "exec":
            proc = await conn.create_process(name, encoding=None)
        else:
            proc = await conn.create_process(subsystem=name, encoding=None)
        init = bytes([INIT]) + _u32(3)
        mkdir = bytes([MKDIR]) + _u32(1) + _s(str(remote / "side-door")) + _u32(0)
        with contextlib.suppress(Exception):
            proc.stdin.write(_u32(len(init)) + init + _u32(len(mkdir)) + mkdir)
        out = await asyncio.wait_for(proc.stdout.read(), 10)
        proc.close()
    finally:
        await _end(conn)
    assert bytes([VERSION]) not in out[4:5], out[:50]
    assert not (remote / "side-door").exists()


# 9. Revoke ---------------------------------------------------------------------------------

async def test_revoke_stops_requests_already_sent(bastion: BastionProcess, remote: Path) -> None:
    """Requests the client pipelined before a revoke must not reach the target after it: the
    bastion closes the user's channel, but asyncssh keeps handing the server what it had
    buffered (up to the 2 MiB window) and the upstream SFTP stays open until that is drained."""
    cert, request_id = _new_cert(bastion, "alice", "bigfiles")
    conn = await _connect(bastion, "alice", "bigfiles", cert)
    raw = await Raw.start(conn)
    count, size = 20000, 64
    try:
        handle = await raw.handle(f"{remote}/log", F_WRITE | F_CREAT | F_TRUNC)
        for i in range(count):
            raw.send(WRITE, _s(handle), _u64(i * size), _s(b"w" * size))
        acked = 0

        async def replies() -> None:
            nonlocal acked
            with contextlib.suppress(asyncio.IncompleteReadError, OSError,
                                                   asyncssh.Error):
                while True:
                    _, reply = await raw.reply()
                    acked += reply.ok
        reader = asyncio.create_task(replies())
        deadline = time.monotonic() + 10
        while acked < 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(control_json, bastion, "alice", "revoke", str(request_id))
        await asyncio.wait_for(reader, 20)
    finally:
        conn.close()
        await conn.wait_closed()
    await asyncio.sleep(0.5)
    landed = (remote / "log").stat().st_size // size
    assert landed < count, "every write went through before the revoke: the test proved nothing"
    for _ in range(40):  # let the bastion drain what it had buffered
        before = (remote / "log").stat().st_size
        await asyncio.sleep(0.25)
        if (remote / "log").stat().st_size == before:
            break
    landed = (remote / "log").stat().st_size // size
    recorded = sum(len(e.data) for e in _recording(bastion, _session_of(bastion, f"{remote}/log"))
                   if isinstance(e, FileDataEvent) and e.upload) // size
    assert landed - acked <= 1, \
        (f"{landed - acked} writes reached the target after the session was revoked ({acked} "
         f"acked before it; {recorded} recorded)")


async def test_no_new_sftp_channel_on_the_same_connection_after_revoke(
        bastion: BastionProcess, remote: Path) -> None:
    cert, request_id = _new_cert(bastion, "alice", "files")
    conn = await _connect(bastion, "alice", "files", cert)
    try:
        raw = await Raw.start(conn)
        await asyncio.to_thread(control_json, bastion, "alice", "revoke", str(request_id))
        with contextlib.suppress(asyncio.IncompleteReadError, OSError, asyncssh.Error):
            await asyncio.wait_for(raw.read(), 10)
        try:
            out, err = await _refused_sftp(conn, remote / "after-revoke")
        except (OSError, asyncssh.Error):
            out, err = b"", b"revoked (connection closed)"
    finally:
        conn.close()
        await conn.wait_closed()
    assert out == b"" and b"revoked" in err, (out[:100], err)
    assert not (remote / "after-revoke").exists()


# 10. Config reload ----------------------------------------------------------------------------

async def test_a_reload_that_turns_uploads_off_applies_to_live_sftp_sessions(
        tmp_path: Path) -> None:
    """The target's file_transfer goes from "both" to "download" (SIGHUP): a live session must
    not open new uploads, nor keep writing through a handle it opened before."""
    world = World(root=tmp_path / "world", port=free_port(), users=dict(USERS))
    target = start_target(world)
    world.extra = _extra(target.port, target.host_key_line)
    world.write_config()
    proc = BastionProcess(world)
    remote = tmp_path / "on-target"
    remote.mkdir()
    problems: list[str] = []
    try:
        proc.start()
        cert, _ = _new_cert(proc, "alice", "files")
        conn = await _connect(proc, "alice", "files", cert)
        raw = await Raw.start(conn)
        try:
            writer = await raw.handle(f"{remote}/w", F_WRITE | F_CREAT)
            assert (await raw.write_at(writer, 0, b"before;")).ok
            changed = world.extra.replace('file_transfer = "both"\nmax_file_size',
                                          'file_transfer = "download"\nmax_file_size')
            assert changed != world.extra
            world.extra = changed
            world.write_config()
            await asyncio.to_thread(proc.sighup)
            new = await raw.open(f"{remote}/new", F_WRITE | F_CREAT)
            if new.kind == HANDLE:
                problems.append("a new upload was opened after the target turned uploads off")
            if (await raw.call(MKDIR, _s(f"{remote}/dir"), raw.attrs())).ok:
                problems.append("mkdir passed after the target turned uploads off")
            if (await raw.write_at(writer, 7, b"after")).ok:
                problems.append("a handle opened before the reload kept writing")
        finally:
            await _end(conn, raw)
    finally:
        proc.stop()
        target.stop()
    assert not problems, f"{problems}; the target now holds {sorted(p.name for p in remote.iterdir())}"
