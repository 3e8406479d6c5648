"""Checking a recording's integrity without any decryption key.

The verifier walks the frames, recomputes the hash chain and checks every signature frame: its
Ed25519 signature (by the signer named in the header, or the expected signer if given), the
per-chunk hashes it lists, the chunk count and the chain value. The outcome is intact, cut off
(a valid prefix whose final signature is missing: the writer stopped) or tampered (with where).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recorder.crypto import key_fingerprint, raw_public
from recorder.errors import CorruptRecording
from recorder.format import (
    FRAME_HEAD,
    MAGIC,
    MAX_HEADER,
    PREAMBLE,
    READABLE_VERSIONS,
    ChunkPrefix,
    FrameType,
    SignatureBody,
    chain_next,
    chain_start,
    frame_hasher,
    parse_frame_head,
    parse_header,
    read_header_frame,
)

__all__ = ["SessionFacts", "VerifyResult", "VerifyStatus", "verify_for_session", "verify_recording"]


class VerifyStatus(StrEnum):
    """The verdict on a recording file."""

    INTACT = "intact"
    CUT_OFF = "cut_off"
    TAMPERED = "tampered"


@dataclass(frozen=True)
class VerifyResult:
    """What `verify_recording` found.

    `chunks` is the number of complete chunks seen, `signed_chunks` how many of them (from
    chunk 0) a valid signature proves. `chunk` is, when cut off, the last complete chunk and,
    when tampered, the first chunk found damaged, missing or out of place (None when the
    problem is not in a chunk: the header, or bytes after the end). `where` names the place.
    """

    status: VerifyStatus
    message: str
    chunks: int
    signed_chunks: int
    chunk: int | None = None
    where: str = ""
    signer: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the file is intact."""
        return self.status is VerifyStatus.INTACT

    def __str__(self) -> str:
        return self.message


def _chunk_range(first: int, last: int) -> str:
    return f"chunk {first}" if first == last else f"chunks {first}-{last}"


class _Walk:
    """State of one verification pass."""

    def __init__(self, expected: Ed25519PublicKey | None) -> None:
        self.expected = expected
        self.signer: Ed25519PublicKey | None = None
        self.signer_fp: str | None = None
        self.version = 0  # the preamble's, once read
        self.header_signed = False  # the signature frame the writer puts right after the header
        self.chain = b""
        self.chunks = 0
        self.signed = 0
        self.unsigned: list[bytes] = []
        self.final_chunk = False
        self.final_signature = False

    def tampered(self, message: str, chunk: int | None, where: str) -> VerifyResult:
        return VerifyResult(
            VerifyStatus.TAMPERED,
            f"tampered at {where}: {message}",
            self.chunks,
            self.signed,
            chunk,
            where,
            self.signer_fp,
        )

    def cut_off(self, detail: str) -> VerifyResult:
        last = self.chunks - 1
        if self.signer is None:
            message = f"cut off {detail}: the header is incomplete"
            return VerifyResult(VerifyStatus.CUT_OFF, message, 0, 0, None, "header")
        if self.chunks == 0:
            message = f"cut off after the header ({detail}); no complete chunk"
            return VerifyResult(VerifyStatus.CUT_OFF, message, 0, 0, None, "header", self.signer_fp)
        parts = []
        if self.signed:
            parts.append(f"{_chunk_range(0, self.signed - 1)} signed")
        if self.signed < self.chunks:
            parts.append(f"{_chunk_range(self.signed, last)} complete but not yet signed")
        message = (
            f"cut off after chunk {last} ({detail}): {', '.join(parts)}; "
            "the final signature is missing (the writer stopped before closing)"
        )
        return VerifyResult(
            VerifyStatus.CUT_OFF,
            message,
            self.chunks,
            self.signed,
            last,
            f"chunk {last}",
            self.signer_fp,
        )

    def where_frame(self) -> str:
        return "frame after the header" if self.chunks == 0 else f"frame after chunk {self.chunks - 1}"

    def where_signature(self) -> str:
        return (
            "signature after the header" if self.chunks == 0 else (f"signature after chunk {self.chunks - 1}")
        )

    def header(self, frame: bytes, body: bytes) -> VerifyResult | None:
        try:
            header = parse_header(body)
            self.signer = Ed25519PublicKey.from_public_bytes(header.signer)
        except (CorruptRecording, ValueError) as exc:
            return self.tampered(f"the header is invalid: {exc}", None, "header")
        self.signer_fp = key_fingerprint(header.signer)
        if self.expected is not None and raw_public(self.expected) != header.signer:
            return self.tampered(
                f"the recording is signed by {self.signer_fp}, not by the expected bastion key "
                f"{key_fingerprint(self.expected)}",
                None,
                "header",
            )
        if header.version != self.version:
            return self.tampered(f"the header says format version {header.version}, the "
                                 f"preamble {self.version}", None, "header")
        self.chain = chain_next(self.chain, frame_hasher(self.version)(frame).digest(), self.version)
        return None

    def chunk(self, frame: bytes, body: bytes) -> VerifyResult | None:
        n = self.chunks
        if not self.header_signed:
            # The writer signs the header in the same write as the header itself: without that
            # frame, the header of a file cut off before its first chunk signature (edited user,
            # target, cipher or version) would be vouched for by nothing.
            return self.tampered("the header's signature frame is missing", None, "header")
        if self.final_chunk:
            return self.tampered("a chunk follows the final chunk", n, f"chunk {n}")
        prefix = ChunkPrefix.unpack(body)
        if prefix is None:
            return self.tampered("the chunk is malformed", n, f"chunk {n}")
        if prefix.index != n:
            return self.tampered(
                f"chunk {n} is missing or out of order (chunk {prefix.index} is in its place)",
                n,
                f"chunk {n}",
            )
        frame_hash = frame_hasher(self.version)(frame).digest()
        self.chain = chain_next(self.chain, frame_hash, self.version)
        self.unsigned.append(frame_hash)
        self.chunks += 1
        self.final_chunk = prefix.final
        return None

    def signature(self, body: bytes) -> VerifyResult | None:
        where = self.where_signature()
        sig = SignatureBody.unpack(body)
        if sig is None:
            return self.tampered("the signature frame is malformed", self.signed, where)
        assert self.signer is not None
        try:
            self.signer.verify(sig.signature, sig.message())
        except InvalidSignature:
            if self.chunks == 0:
                # This signature covers only the header, so one of the two was altered.
                return self.tampered(
                    f"the header's signature is not valid for the signer {self.signer_fp}",
                    None,
                    "header",
                )
            return self.tampered(
                f"the signature is not valid for the signer {self.signer_fp}", self.signed, where
            )
        # The signature is genuine: now compare what it vouches for with what the file holds.
        if self.chunks == 0 and self.header_signed:
            return self.tampered("a second signature frame over the header alone", None, "header")
        if sig.covered != self.signed + len(sig.chunk_hashes):
            return self.tampered("a signature frame is missing or out of place", self.signed, where)
        for i, listed in enumerate(sig.chunk_hashes):
            n = self.signed + i
            if i >= len(self.unsigned):
                return self.tampered(f"signed chunk {n} is missing", n, f"chunk {n}")
            if self.unsigned[i] != listed:
                return self.tampered("the chunk's contents differ from what was signed", n, f"chunk {n}")
        if len(self.unsigned) > len(sig.chunk_hashes):
            n = sig.covered
            return self.tampered(f"chunk {n} was not signed where it stands", n, f"chunk {n}")
        if sig.chain != self.chain:
            # Every chunk matched its own signed hash, so what differs is the header.
            return self.tampered("the header differs from what was signed", None, "header")
        if sig.final != self.final_chunk:
            return self.tampered("the final signature and the final chunk do not match", self.signed, where)
        self.signed = sig.covered
        self.unsigned = []
        self.final_signature = sig.final
        self.header_signed = True
        return None


def verify_recording(path: str | Path, signer_public_key: Ed25519PublicKey | None = None) -> VerifyResult:
    """Check a recording's signatures and structure; no decryption key is needed.

    The verdict is returned, never raised; OSError is raised only if the file cannot be read.
    """
    walk = _Walk(signer_public_key)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pre = f.read(len(PREAMBLE))
        if len(pre) < len(PREAMBLE) and PREAMBLE.startswith(pre):
            return walk.cut_off("inside the preamble")
        if pre[: len(MAGIC)] != MAGIC:
            return walk.tampered("not a session recording (bad magic)", None, "header")
        if pre[len(MAGIC)] not in READABLE_VERSIONS:
            return walk.tampered(f"unknown format version {pre[len(MAGIC)]} (this verifier reads "
                                 f"versions {', '.join(map(str, READABLE_VERSIONS))}; a newer "
                                 "bastion's file needs a newer verifier)", None, "header")
        walk.version = pre[len(MAGIC)]
        walk.chain = chain_start(walk.version)
        first = True
        while True:
            offset = f.tell()
            head = f.read(FRAME_HEAD.size)
            if not head:
                break
            if walk.final_signature:
                return walk.tampered(f"{size - offset} bytes follow the final signature", None, "end of file")
            if len(head) < FRAME_HEAD.size:
                return walk.cut_off("inside a frame header")
            parsed = parse_frame_head(head)
            if parsed is None:
                where = "header" if first else walk.where_frame()
                return walk.tampered(
                    f"damaged frame header at byte {offset}", None if first else walk.chunks, where
                )
            ftype, length = parsed
            if offset + FRAME_HEAD.size + length > size:
                if first and length > MAX_HEADER:
                    return walk.tampered("the header frame is too large", None, "header")
                return walk.cut_off("inside a frame")
            body = f.read(length)
            result: VerifyResult | None
            if first:
                if ftype != FrameType.HEADER:
                    return walk.tampered("the file does not start with a header", None, "header")
                result = walk.header(head + body, body)
                first = False
            elif ftype == FrameType.CHUNK:
                result = walk.chunk(head + body, body)
            elif ftype == FrameType.SIGNATURE:
                result = walk.signature(body)
            else:
                result = walk.tampered("a second header frame", walk.chunks, f"chunk {walk.chunks}")
            if result is not None:
                return result
    if first:
        return walk.cut_off("before the header")
    if not walk.final_signature:
        return walk.cut_off("at a frame boundary")
    return VerifyResult(
        VerifyStatus.INTACT,
        f"intact: header and {walk.chunks} chunks signed by {walk.signer_fp}"
        + (
            "" if signer_public_key else " (key named in the file; give the expected key to check who signed)"
        ),
        walk.chunks,
        walk.signed,
        None,
        "",
        walk.signer_fp,
    )


@dataclass(frozen=True)
class SessionFacts:
    """What the bastion's store says of the session a recording file should hold."""

    session_id: str
    user: str
    target: str
    status: str  # "live", "ended", "ended_abnormally"
    started_at: datetime | None = None
    end_reason: str | None = None


# The header's start and the store's start are taken a few milliseconds apart.
START_TOLERANCE = timedelta(seconds=5)


def verify_for_session(path: str | Path, signer_public_key: Ed25519PublicKey | None,
                       session: SessionFacts) -> VerifyResult:
    """`verify_recording`, then the file compared with the session it stands for.

    A recording copied over another session's file is signed and whole, yet it is not that
    session's: the header's session id, user, target and start must be the store's. And a file
    cut off while the store says the session ended normally was cut after the fact, not by a
    crash: that is tampering, not "cut off".
    """
    result = verify_recording(path, signer_public_key)
    if result.status is VerifyStatus.TAMPERED:
        return result
    try:
        with open(path, "rb") as f:
            header, _ = read_header_frame(f)
    except (CorruptRecording, OSError) as exc:
        return replace(result, status=VerifyStatus.TAMPERED, message=f"unreadable header: {exc}",
                       where="header")
    found = {"session": header.session_id, "user": header.user, "target": header.target}
    wanted = {"session": session.session_id, "user": session.user, "target": session.target}
    wrong = [f"{k} {found[k]!r} instead of {wanted[k]!r}" for k in found if found[k] != wanted[k]]
    if session.started_at is not None and abs(header.start - session.started_at) > START_TOLERANCE:
        wrong.append(f"start {header.start:%Y-%m-%d %H:%M:%S} instead of "
                     f"{session.started_at:%Y-%m-%d %H:%M:%S}")
    if wrong:
        return replace(result, status=VerifyStatus.TAMPERED, where="header", message=(
            "this recording belongs to another session (its header says " + "; ".join(wrong) +
            "): a file was copied or renamed"))
    if result.status is VerifyStatus.CUT_OFF:
        if session.status == "live":
            return replace(result, message=f"{result.message} (the session is live: still being "
                                            "written)")
        crashed = session.status == "ended_abnormally" or "recording failed" in (
            session.end_reason or "")
        if crashed:
            return replace(result, message=f"{result.message} (the bastion stopped or the recording "
                                            "failed while the session was live)")
        return replace(result, status=VerifyStatus.TAMPERED, where="end of file", message=(
            f"the session ended normally, but its recording lacks its end ({result.message}): "
            "it was cut after the fact"))
    return result
