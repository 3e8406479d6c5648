"""The byte layout of a recording file: preamble, frames, header, chunk and signature bodies.

A file is the 8-byte preamble followed by frames; every frame is
`u8 type | u32 length | u32 crc32(type||length) | body`. FORMAT.md is the normative description.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import IO, Any, Final, Protocol

import blake3

from recorder.crypto import CIPHERS, V1_CIPHER, Stanza, key_fingerprint
from recorder.errors import CorruptRecording, NotARecording

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "PREAMBLE",
    "READABLE_VERSIONS",
    "ChunkPrefix",
    "FrameType",
    "RecordingHeader",
    "SessionKind",
    "SignatureBody",
    "encode_frame",
    "frame_hasher",
    "parse_header",
]

MAGIC: Final = b"\x89BSTREC"
FORMAT_VERSION: Final = 2  # what the writer writes
READABLE_VERSIONS: Final = (1, 2)  # 1: SHA-256 and ChaCha20-Poly1305 only
FRAME_HEAD: Final = struct.Struct(">BII")
TYPE_LEN: Final = struct.Struct(">BI")
CHUNK_PREFIX: Final = struct.Struct(">QBQ")
SIG_FIXED: Final = struct.Struct(">QBI")
MAX_FRAME: Final = 64 * 1024 * 1024
MAX_HEADER: Final = 1024 * 1024
CHAIN_CONTEXT: Final = b"bastion-recording chain v1\x00"
SIGNATURE_CONTEXT: Final = b"bastion-recording signature v1\x00"
CHUNK_AAD_CONTEXT: Final = b"bastion-recording chunk v1\x00"
FLAG_FINAL: Final = 0x01
FLAG_KEYFRAME: Final = 0x02
FILE_ID_SIZE: Final = 16
HASH_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def preamble(version: int) -> bytes:
    """The 8 bytes a file of this format version starts with."""
    return MAGIC + bytes([version])


PREAMBLE: Final = preamble(FORMAT_VERSION)


class Hasher(Protocol):
    """What hashlib's and blake3's hash objects have in common here."""

    def update(self, data: bytes, /) -> Any: ...
    def digest(self) -> bytes: ...


def frame_hasher(version: int) -> Callable[[bytes], Hasher]:
    """The hash of frames and of the chain: SHA-256 in version 1, BLAKE3 (32 bytes) from
    version 2 (0.10 against 0.50 CPU s per GiB here, on the recorder threads' every byte)."""
    return hashlib.sha256 if version == 1 else blake3.blake3


class FrameType(IntEnum):
    """The type byte of a frame."""

    HEADER = 0x48  # "H"
    CHUNK = 0x43  # "C"
    SIGNATURE = 0x53  # "S"


class SessionKind(StrEnum):
    """What kind of session a recording holds."""

    SSH = "ssh"
    POSTGRES = "postgres"
    MYSQL = "mysql"
    SFTP = "sftp"  # a file transfer session (bastion/ssh/file_transfer.py)


def frame_head(ftype: int, length: int) -> bytes:
    """Return the 9-byte frame header for a body of `length` bytes."""
    if length > MAX_FRAME:
        raise ValueError(f"frame body of {length} bytes exceeds {MAX_FRAME}")
    type_len = TYPE_LEN.pack(ftype, length)
    return type_len + struct.pack(">I", zlib.crc32(type_len))


def encode_frame(ftype: FrameType, body: bytes) -> bytes:
    """Return a whole frame."""
    return frame_head(ftype, len(body)) + body


def parse_frame_head(head: bytes) -> tuple[int, int] | None:
    """Return (type, length) of a 9-byte frame header, or None if its checksum is wrong."""
    ftype, length, crc = FRAME_HEAD.unpack(head)
    if zlib.crc32(head[:5]) != crc or ftype not in FrameType._value2member_map_:
        return None
    if length > MAX_FRAME:
        return None
    return ftype, length


def chain_start(version: int) -> bytes:
    """Return the hash chain value before the header frame."""
    return frame_hasher(version)(CHAIN_CONTEXT + preamble(version)).digest()


def chain_next(chain: bytes, frame_hash: bytes, version: int) -> bytes:
    """Extend the hash chain by one frame (given the hash of the whole frame)."""
    return frame_hasher(version)(chain + frame_hash).digest()


def chunk_aad(header_hash: bytes, prefix: bytes) -> bytes:
    """Return the associated data of a chunk: context, header frame hash, plaintext prefix."""
    return CHUNK_AAD_CONTEXT + header_hash + prefix


@dataclass(frozen=True)
class ChunkPrefix:
    """The authenticated plaintext start of a chunk body."""

    index: int
    flags: int
    t_us: int

    @property
    def final(self) -> bool:
        """Whether this is the last chunk of the recording."""
        return bool(self.flags & FLAG_FINAL)

    @property
    def keyframe(self) -> bool:
        """Whether the chunk starts with a keyframe event."""
        return bool(self.flags & FLAG_KEYFRAME)

    def pack(self) -> bytes:
        """Return the 17-byte encoding."""
        return CHUNK_PREFIX.pack(self.index, self.flags, self.t_us)

    @classmethod
    def unpack(cls, body: bytes) -> ChunkPrefix | None:
        """Parse the prefix of a chunk body, or None if it is malformed."""
        if len(body) < CHUNK_PREFIX.size + 16:
            return None
        index, flags, t_us = CHUNK_PREFIX.unpack_from(body)
        if flags & ~(FLAG_FINAL | FLAG_KEYFRAME):
            return None
        return cls(index, flags, t_us)


@dataclass(frozen=True)
class SignatureBody:
    """A signature frame: covers the header and the first `covered` chunks."""

    covered: int
    final: bool
    chunk_hashes: tuple[bytes, ...]
    chain: bytes
    signature: bytes

    def signed_part(self) -> bytes:
        """Return the body without the signature (what is signed, after the context)."""
        return (
            SIG_FIXED.pack(self.covered, 1 if self.final else 0, len(self.chunk_hashes))
            + b"".join(self.chunk_hashes)
            + self.chain
        )

    def message(self) -> bytes:
        """Return the exact bytes the Ed25519 signature is over."""
        return SIGNATURE_CONTEXT + self.signed_part()

    def pack(self) -> bytes:
        """Return the frame body."""
        return self.signed_part() + self.signature

    @classmethod
    def unpack(cls, body: bytes) -> SignatureBody | None:
        """Parse a signature frame body, or None if it is malformed."""
        if len(body) < SIG_FIXED.size + HASH_SIZE + SIGNATURE_SIZE:
            return None
        covered, final, count = SIG_FIXED.unpack_from(body)
        if final not in (0, 1):
            return None
        if len(body) != SIG_FIXED.size + HASH_SIZE * (count + 1) + SIGNATURE_SIZE:
            return None
        pos = SIG_FIXED.size
        hashes = tuple(body[pos + i * HASH_SIZE : pos + (i + 1) * HASH_SIZE] for i in range(count))
        pos += HASH_SIZE * count
        return cls(
            covered,
            bool(final),
            hashes,
            body[pos : pos + HASH_SIZE],
            body[pos + HASH_SIZE :],
        )


@dataclass(frozen=True)
class RecordingHeader:
    """What a recording says about its session; `metadata` is None until decrypted."""

    session_id: str
    user: str
    target: str
    kind: SessionKind
    start: datetime
    cols: int
    rows: int
    file_id: bytes
    signer: bytes
    recipients: tuple[Stanza, ...]
    metadata: Mapping[str, Any] | None = None
    sealed_metadata: bytes = field(default=b"", repr=False)
    version: int = FORMAT_VERSION
    cipher: str = V1_CIPHER  # the AEAD of the chunks and the metadata (crypto.CIPHERS)

    @property
    def signer_fingerprint(self) -> str:
        """Fingerprint of the bastion signing key named in the header."""
        return key_fingerprint(self.signer)

    @property
    def recipient_fingerprints(self) -> tuple[str, ...]:
        """Fingerprints of the auditor keys that can decrypt the recording."""
        return tuple(s.fingerprint for s in self.recipients)

    def to_json(self) -> dict[str, Any]:
        """Return the header body as written in the file."""
        return {
            "format": "bastion-recording",
            "version": self.version,
            "session_id": self.session_id,
            "user": self.user,
            "target": self.target,
            "kind": self.kind.value,
            "start": format_time(self.start),
            "cols": self.cols,
            "rows": self.rows,
            "file_id": _b64(self.file_id),
            "cipher": self.cipher,
            "signer": {"type": "ed25519", "key": _b64(self.signer)},
            "recipients": [
                {
                    "type": "X25519",
                    "fingerprint": s.fingerprint,
                    "ephemeral": _b64(s.ephemeral),
                    "wrapped_key": _b64(s.wrapped),
                }
                for s in self.recipients
            ],
            "metadata": _b64(self.sealed_metadata),
        }

    def encode(self) -> bytes:
        """Return the header frame body (compact JSON)."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def valid_session_id(session_id: str) -> bool:
    """Whether a session id can name a file (letters, digits, dot, dash, underscore)."""
    return bool(_SAFE_ID.match(session_id)) and session_id not in (".", "..")


def format_time(value: datetime) -> str:
    """Return an RFC 3339 UTC timestamp with microseconds."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise CorruptRecording(f"header: {what} is not a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CorruptRecording(f"header: {what} is not valid base64") from None
    if size is not None and len(raw) != size:
        raise CorruptRecording(f"header: {what} must be {size} bytes, not {len(raw)}")
    return raw


def _field(obj: Mapping[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CorruptRecording(f"header: field {name!r} is missing or not a {kind.__name__}")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a key appears twice")
    return obj


def _size(obj: Mapping[str, Any], name: str) -> int:
    value: int = _field(obj, name, int)
    if not 1 <= value <= 0xFFFF:  # as the writer takes them
        raise CorruptRecording(f"header: {name} {value} is not between 1 and 65535")
    return value


def parse_header(body: bytes) -> RecordingHeader:
    """Parse a header frame body or raise CorruptRecording: UTF-8 JSON (not another encoding
    json.loads would guess), no key twice (readers that keep the first would see another header),
    and no number or nesting that makes the parser itself fail."""
    try:
        obj = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise CorruptRecording(f"header is not JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict) or obj.get("format") != "bastion-recording":
        raise CorruptRecording("header is not a bastion-recording header")
    version = obj.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise NotARecording(f"unsupported recording version {version!r}")
    cipher = obj.get("cipher")
    if not isinstance(cipher, str) or cipher not in (CIPHERS if version >= 2 else (V1_CIPHER,)):
        raise CorruptRecording(f"unsupported cipher {cipher!r} for format version {version}")
    try:
        kind = SessionKind(_field(obj, "kind", str))
        start = datetime.strptime(_field(obj, "start", str), "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError as exc:
        raise CorruptRecording(f"header: {exc}") from None
    signer = _field(obj, "signer", dict)
    if signer.get("type") != "ed25519":
        raise CorruptRecording("header: the signer is not an ed25519 key")
    stanzas = []
    for item in _field(obj, "recipients", list):
        if not isinstance(item, dict) or item.get("type") != "X25519":
            raise CorruptRecording("header: a recipient is not an X25519 stanza")
        stanzas.append(
            Stanza(
                _field(item, "fingerprint", str),
                _unb64(item.get("ephemeral"), "recipient ephemeral key", 32),
                _unb64(item.get("wrapped_key"), "recipient wrapped key", 48),
            )
        )
    if not stanzas:
        raise CorruptRecording("header: no recipients")
    return RecordingHeader(
        session_id=_field(obj, "session_id", str),
        user=_field(obj, "user", str),
        target=_field(obj, "target", str),
        kind=kind,
        start=start.replace(tzinfo=UTC),
        cols=_size(obj, "cols"),
        rows=_size(obj, "rows"),
        file_id=_unb64(obj.get("file_id"), "file_id", FILE_ID_SIZE),
        signer=_unb64(signer.get("key"), "signer key", 32),
        recipients=tuple(stanzas),
        sealed_metadata=_unb64(obj.get("metadata"), "metadata"),
        version=version,
        cipher=cipher,
    )


def read_preamble(f: IO[bytes]) -> int:
    """Check the preamble at the current position and return its format version, or raise
    NotARecording."""
    pre = f.read(len(PREAMBLE))
    if len(pre) < len(PREAMBLE) or pre[: len(MAGIC)] != MAGIC:
        raise NotARecording("not a session recording (bad magic)")
    if pre[len(MAGIC)] not in READABLE_VERSIONS:
        raise NotARecording(f"unsupported recording format version {pre[len(MAGIC)]}")
    return pre[len(MAGIC)]


def read_header_frame(f: IO[bytes]) -> tuple[RecordingHeader, bytes]:
    """Read the preamble and header frame; return the header and the whole frame's bytes."""
    version = read_preamble(f)
    head = f.read(FRAME_HEAD.size)
    if len(head) < FRAME_HEAD.size:
        raise CorruptRecording("the file ends inside the header (cut off before it was complete)")
    parsed = parse_frame_head(head)
    if parsed is None or parsed[0] != FrameType.HEADER or parsed[1] > MAX_HEADER:
        raise CorruptRecording("the header frame is damaged")
    body = f.read(parsed[1])
    if len(body) < parsed[1]:
        raise CorruptRecording("the file ends inside the header (cut off before it was complete)")
    header = parse_header(body)
    if header.version != version:
        raise CorruptRecording(f"the header says format version {header.version}, the preamble "
                               f"{version}")
    return header, head + body
