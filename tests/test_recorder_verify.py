"""Integrity checks without a key: intact, cut off and tampered files, each located precisely.

The frames are located with a small independent parser written from FORMAT.md.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from recorder import (
    CorruptRecording,
    OutputEvent,
    RecordingReader,
    RecordingWriter,
    VerifyResult,
    VerifyStatus,
    WriterSettings,
    export_jsonl,
    generate_auditor_key,
    generate_signing_key,
    load_auditor_private_key,
    load_signing_public_key,
    verify_recording,
)

CHUNKS = 20  # signatures after the header, after chunks 7 and 15, and after the final chunk 19


@dataclass(frozen=True)
class Frame:
    kind: str  # "H", "C" or "S"
    start: int
    end: int
    body_start: int


def parse_frames(data: bytes) -> list[Frame]:
    assert data[:7] == b"\x89BSTREC" and data[7] in (1, 2)
    frames, pos = [], 8
    while pos < len(data):
        ftype, length, _crc = struct.unpack_from(">BII", data, pos)
        frames.append(Frame(chr(ftype), pos, pos + 9 + length, pos + 9))
        pos += 9 + length
    return frames


def chunks_of(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.kind == "C"]


@dataclass
class Recording:
    path: Path
    data: bytes
    frames: list[Frame]
    auditor: X25519PrivateKey
    signer: Ed25519PrivateKey

    def write(self, data: bytes) -> Path:
        out = self.path.with_name("tampered.rec")
        out.write_bytes(data)
        return out

    def flip(self, offset: int) -> Path:
        data = bytearray(self.data)
        data[offset] ^= 0x01
        return self.write(bytes(data))

    def verify(self, path: Path) -> VerifyResult:
        return verify_recording(path, self.signer.public_key())


async def make_recording(directory: Path, session_id: str = "verify-me") -> Recording:
    auditor, signer = generate_auditor_key(), generate_signing_key()
    writer = RecordingWriter(
        directory,
        session_id=session_id,
        user="bob",
        target="db-1",
        kind="ssh",
        recipients=[auditor.public_key()],
        signing_key=signer,
        settings=WriterSettings(fsync=False),
    )
    async with writer:
        for i in range(CHUNKS - 1):
            await writer.output(f"chunk {i} output\r\n".encode())
            await writer.flush()
        await writer.output(b"last words\r\n")
    data = writer.path.read_bytes()
    return Recording(writer.path, data, parse_frames(data), auditor, signer)


@pytest.fixture
async def rec(tmp_path: Path) -> Recording:
    return await make_recording(tmp_path)


def test_layout_is_as_documented(rec: Recording) -> None:
    kinds = "".join(f.kind for f in rec.frames)
    assert kinds == "HS" + "C" * 8 + "S" + "C" * 8 + "S" + "C" * 4 + "S"


def test_intact(rec: Recording) -> None:
    result = rec.verify(rec.path)
    assert result.status is VerifyStatus.INTACT and result.ok
    assert (result.chunks, result.signed_chunks) == (CHUNKS, CHUNKS)
    without_key = verify_recording(rec.path)
    assert without_key.status is VerifyStatus.INTACT
    assert "expected key" in without_key.message


def test_flipped_byte_in_header(rec: Recording) -> None:
    header = rec.frames[0]
    user_at = rec.data.index(b'"user":"bob"', header.body_start) + len('"user":"b')
    result = rec.verify(rec.flip(user_at))
    assert result.status is VerifyStatus.TAMPERED
    assert (result.where, result.chunk, result.signed_chunks) == ("header", None, 0)
    # A flip in the frame header (its type/length/checksum) is caught too.
    result = rec.verify(rec.flip(header.start + 2))
    assert (result.status, result.where) == (VerifyStatus.TAMPERED, "header")
    # Authenticated encryption also binds chunks to the header: the reader refuses them.
    with RecordingReader(rec.flip(user_at), rec.auditor) as reader, pytest.raises(CorruptRecording):
        list(reader)


@pytest.mark.parametrize("chunk", [0, 5, 12, 19])
def test_flipped_byte_in_a_chunk(rec: Recording, chunk: int) -> None:
    frame = chunks_of(rec.frames)[chunk]
    result = rec.verify(rec.flip(frame.end - 3))  # inside the ciphertext
    assert result.status is VerifyStatus.TAMPERED
    assert (result.chunk, result.where) == (chunk, f"chunk {chunk}")
    assert result.signed_chunks == chunk // 8 * 8
    assert f"chunk {chunk}" in result.message


def test_flipped_byte_in_a_chunk_prefix_and_frame_header(rec: Recording) -> None:
    frame = chunks_of(rec.frames)[9]
    result = rec.verify(rec.flip(frame.body_start + 7))  # the low byte of the chunk index
    assert (result.status, result.chunk) == (VerifyStatus.TAMPERED, 9)
    result = rec.verify(rec.flip(frame.start + 3))  # the frame length
    assert (result.status, result.chunk) == (VerifyStatus.TAMPERED, 9)


def test_reader_stops_at_the_tampered_chunk(rec: Recording) -> None:
    path = rec.flip(chunks_of(rec.frames)[5].end - 1)
    seen: list[bytes] = []
    with RecordingReader(path, rec.auditor) as reader, pytest.raises(CorruptRecording) as info:
        seen.extend(e.data for e in reader if isinstance(e, OutputEvent))
    assert info.value.chunk == 5
    assert seen == [f"chunk {i} output\r\n".encode() for i in range(5)]


def test_flipped_byte_in_a_signature(rec: Recording) -> None:
    signatures = [f for f in rec.frames if f.kind == "S"]
    result = rec.verify(rec.flip(signatures[2].end - 10))  # the signature after chunk 15
    assert result.status is VerifyStatus.TAMPERED
    assert result.where == "signature after chunk 15"
    assert (result.chunk, result.signed_chunks) == (8, 8)
    result = rec.verify(rec.flip(signatures[0].end - 1))  # the header's own signature
    assert (result.status, result.where, result.chunk) == (VerifyStatus.TAMPERED, "header", None)


def test_dropped_chunk(rec: Recording) -> None:
    frame = chunks_of(rec.frames)[5]
    result = rec.verify(rec.write(rec.data[: frame.start] + rec.data[frame.end :]))
    assert (result.status, result.chunk) == (VerifyStatus.TAMPERED, 5)
    assert "missing or out of order" in result.message


def test_dropped_last_chunk_before_a_signature(rec: Recording) -> None:
    frame = chunks_of(rec.frames)[7]
    result = rec.verify(rec.write(rec.data[: frame.start] + rec.data[frame.end :]))
    assert (result.status, result.chunk) == (VerifyStatus.TAMPERED, 7)


def test_swapped_chunks(rec: Recording) -> None:
    a, b = chunks_of(rec.frames)[3:5]
    data = rec.data[: a.start] + rec.data[b.start : b.end] + rec.data[a.start : a.end]
    result = rec.verify(rec.write(data + rec.data[b.end :]))
    assert (result.status, result.chunk) == (VerifyStatus.TAMPERED, 3)


def test_dropped_signature_frame(rec: Recording) -> None:
    sig = [f for f in rec.frames if f.kind == "S"][1]
    result = rec.verify(rec.write(rec.data[: sig.start] + rec.data[sig.end :]))
    assert result.status is VerifyStatus.TAMPERED
    assert result.where == "signature after chunk 15"


def test_cut_off_mid_chunk(rec: Recording) -> None:
    frame = chunks_of(rec.frames)[10]
    path = rec.write(rec.data[: frame.start + 20])
    result = rec.verify(path)
    assert result.status is VerifyStatus.CUT_OFF
    assert (result.chunk, result.chunks, result.signed_chunks) == (9, 10, 8)
    assert "cut off after chunk 9" in result.message
    with RecordingReader(path, rec.auditor) as reader:
        events = list(reader)
        assert reader.cut_off and reader.last_chunk == 9
    assert [e.data for e in events if isinstance(e, OutputEvent)] == [
        f"chunk {i} output\r\n".encode() for i in range(10)
    ]


def test_cut_off_at_a_frame_boundary(rec: Recording) -> None:
    frame = chunks_of(rec.frames)[12]
    result = rec.verify(rec.write(rec.data[: frame.end]))
    assert (result.status, result.chunk, result.signed_chunks) == (VerifyStatus.CUT_OFF, 12, 8)
    # Just before the final signature: every chunk is there, but the file was not closed.
    result = rec.verify(rec.write(rec.data[: rec.frames[-1].start]))
    assert (result.status, result.chunk, result.signed_chunks) == (VerifyStatus.CUT_OFF, 19, 16)
    # Inside the header: nothing to vouch for.
    result = rec.verify(rec.write(rec.data[:30]))
    assert (result.status, result.chunk, result.chunks) == (VerifyStatus.CUT_OFF, None, 0)


async def test_signed_by_another_key(rec: Recording, tmp_path: Path) -> None:
    other = await make_recording(tmp_path, "another-bastion")
    # A whole recording made by another bastion key.
    result = rec.verify(other.path)
    assert (result.status, result.where, result.chunk) == (VerifyStatus.TAMPERED, "header", None)
    assert "not by the expected bastion key" in result.message
    assert verify_recording(other.path).status is VerifyStatus.INTACT  # it is self-consistent
    # One signature frame replaced by a validly formed one from another key.
    sig = [f for f in rec.frames if f.kind == "S"][2]
    body = rec.data[sig.body_start : sig.end - 64]
    forged = other.signer.sign(b"bastion-recording signature v1\x00" + body)
    result = rec.verify(rec.write(rec.data[: sig.end - 64] + forged + rec.data[sig.end :]))
    assert (result.status, result.where) == (VerifyStatus.TAMPERED, "signature after chunk 15")


def test_appended_junk(rec: Recording) -> None:
    result = rec.verify(rec.write(rec.data + b"\x00junk"))
    assert (result.status, result.where, result.chunk) == (VerifyStatus.TAMPERED, "end of file", None)
    assert result.signed_chunks == CHUNKS


def test_not_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_bytes(b"hello, this is not a recording")
    result = verify_recording(path)
    assert (result.status, result.where) == (VerifyStatus.TAMPERED, "header")


def _chain(data: bytes, frames: list[Frame], digest: Callable[[bytes], bytes]) -> bytes:
    chain = digest(b"bastion-recording chain v1\x00" + data[:8])
    for frame in frames:
        if frame.kind in "HC":
            chain = digest(chain + digest(data[frame.start : frame.end]))
    return chain


def test_chain_hash_matches_the_signature(rec: Recording) -> None:
    """Recompute the final chain value as FORMAT.md describes (version 2: BLAKE3) and find it in
    the last signature; SHA-256 gives another value."""
    assert rec.data[7] == 2
    last = rec.frames[-1]
    signed_chain = rec.data[last.end - 64 - 32 : last.end - 64]
    assert signed_chain == _chain(rec.data, rec.frames, lambda b: blake3.blake3(b).digest())
    assert signed_chain != _chain(rec.data, rec.frames, lambda b: hashlib.sha256(b).digest())


V1 = Path(__file__).parent / "data" / "recording-v1"


def test_a_version_1_recording_still_verifies_and_reads(tmp_path: Path) -> None:
    """A recording written by format version 1 (SHA-256 chain, ChaCha20-Poly1305; the file in
    tests/data was made by the version 1 writer) verifies, and reads back to the same events."""
    data = (V1 / "v1-fixture.rec").read_bytes()
    frames = parse_frames(data)
    assert data[7] == 1 and b'"cipher":"chacha20-poly1305"' in data
    last = frames[-1]
    assert data[last.end - 64 - 32 : last.end - 64] == _chain(
        data, frames, lambda b: hashlib.sha256(b).digest())
    signer = load_signing_public_key(V1 / "signer.pub")
    result = verify_recording(V1 / "v1-fixture.rec", signer)
    assert result.status is VerifyStatus.INTACT and result.chunks == 4
    key = tmp_path / "auditor.key"
    key.write_bytes((V1 / "auditor.key").read_bytes())
    key.chmod(0o600)
    with RecordingReader(V1 / "v1-fixture.rec", load_auditor_private_key(key)) as reader:
        assert reader.header.version == 1
        export_jsonl(reader, tmp_path / "now.jsonl", keyframes=True)
    assert (tmp_path / "now.jsonl").read_text() == (V1 / "v1-fixture.jsonl").read_text()
    # Flipped bytes in it are still found.
    flipped = bytearray(data)
    flipped[frames[2].body_start + 20] ^= 1
    (tmp_path / "flipped.rec").write_bytes(bytes(flipped))
    assert verify_recording(tmp_path / "flipped.rec", signer).status is VerifyStatus.TAMPERED


def test_the_version_byte_cannot_be_changed(rec: Recording, tmp_path: Path) -> None:
    """The format version is bound into the chain and the header: a version 2 file relabelled
    version 1 (or a version 1 file relabelled 2) is tampered, not read with the other hash."""
    relabelled = bytearray(rec.data)
    relabelled[7] = 1
    result = rec.verify(rec.write(bytes(relabelled)))
    assert (result.status, result.where) == (VerifyStatus.TAMPERED, "header")
    assert "format version" in result.message
    old = bytearray((V1 / "v1-fixture.rec").read_bytes())
    old[7] = 2
    (tmp_path / "v1-as-v2.rec").write_bytes(bytes(old))
    result = verify_recording(tmp_path / "v1-as-v2.rec")
    assert (result.status, result.where) == (VerifyStatus.TAMPERED, "header")
    with pytest.raises(CorruptRecording, match="format version"):
        RecordingReader(tmp_path / "v1-as-v2.rec", rec.auditor)
